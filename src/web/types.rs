//! TypeScript declarations of the shapes the API takes and returns, for
//! the names the `unchecked_*_type`s of `event_store.rs` use in the glue's
//! own `pkg/eventstore_wasm.d.ts`. That file is not shipped: the package's
//! types are the hand-written `js/index.d.ts` (generic over an app's event
//! map, `StoredEvent` instead of `Event`), which must be kept in step with
//! the API by hand and is checked by `tests/types/`.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A subject: dotted (`"user.A.added"`) or as tokens (`["user", "A", "added"]`). */
export type Subject = string | readonly string[];
/** A subject whose tokens may be `*` (one token) or, last, `>` (one or more). */
export type Pattern = string | readonly string[];
/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json | undefined };

/** One command of a push entry. */
export interface Command {
  /** What happened, e.g. `"user.A.added"`. */
  action: Subject;
  /** Schema version of the payload, 0..=65535 (default 1). */
  revision?: number;
  /** Any JSON value; omitted means `null`. */
  payload?: Json;
}

/** Commands for one aggregate. */
export interface PushEntry {
  /** The stream the events belong to, e.g. `"user.A"`. */
  aggregate: Subject;
  /** The aggregate's sequence the caller saw (0: must not exist yet). */
  expectedSequence?: number;
  commands: Command[];
}

/** A stored event. */
export interface Event {
  id: string;
  aggregate: string[];
  action: string[];
  revision: number;
  sequence: number;
  position: number;
  createdAt: number;
  payload: Json;
  forgotten: boolean;
}

/** A half-open range `[from, to)`. */
export interface Range {
  from?: number;
  to?: number;
}

/** Every criterion set must match. */
export interface Query {
  /** Pattern on the action. */
  subjects?: Pattern;
  /** Pattern on the aggregate. */
  aggregate?: Pattern;
  sequence?: Range;
  /** Milliseconds since the epoch. */
  createdAt?: Range;
  /** Range of log positions, e.g. `{ from: saved + 1 }` to resume. */
  position?: Range;
}

/** Queries OR-ed together; empty or absent matches every event. */
export interface Filter {
  queries?: Query[];
  /** Most events to return (not allowed on `forget`). */
  limit?: number;
  /** Newest first; with `limit`, the last events (not allowed on `forget` and `subscribe`). */
  reverse?: boolean;
}

/** Turns payloads of `action` at revision `from` into revision `to`, on every read. */
export interface Upcaster {
  /** Pattern on the action, e.g. `"user.*.added"`. */
  action: Pattern;
  from: number;
  /** Greater than `from`. */
  to: number;
  upcast: (payload: Json, event: Event) => Json;
}

/** Options of `EventStore.open`. */
export interface OpenOptions {
  upcasters?: Upcaster[];
}

/** The `code` of every error the store rejects with. */
export type ErrorCode =
  | "INVALID_SUBJECT" | "INVALID_PAYLOAD" | "INVALID_ARGUMENT" | "SEQUENCE_MISMATCH"
  | "QUOTA_EXCEEDED" | "CLOSED" | "VERSION_MISMATCH" | "DATA_LOST" | "STORAGE";

/** What every method rejects with. */
export interface EventStoreError extends Error {
  code: ErrorCode;
  /** With `SEQUENCE_MISMATCH`. */
  aggregate?: string[];
  expected?: number;
  actual?: number;
  /** With `DATA_LOST`: the last position the store knew of. */
  lastPosition?: number;
  /** With `DATA_LOST`: the last position found now (0: empty). */
  position?: number;
  /** With `DATA_LOST`: how the database differs. */
  reason?: DataLostReason;
}

/** How a database that lost events differs from what the store knew:
 * no events at all, another log (its first event is another), or the same
 * log ending earlier. */
export type DataLostReason = "empty" | "replaced" | "shorter";

/** What `onDataLost` is told. */
export interface DataLostInfo {
  /** The store's name. */
  name: string;
  /** The last position the store knew of before the loss. */
  lastPosition: number;
  /** The last position found now (0: empty); the store opens with these events. */
  position: number;
  reason: DataLostReason;
}

/** Options of `EventStore.open`. */
export interface OpenOptions {
  /** Called when the browser lost events this origin had written (for
   * example it reset the database after a full disk); the store then opens
   * with what is left. Without it, `open` rejects with `DATA_LOST`. May
   * return a promise, which `open` waits for; if it throws, `open` rejects
   * with that and the loss is reported again next time. */
  onDataLost?: (info: DataLostInfo) => void | Promise<void>;
}

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** Deliver events after this position (default 0: from the start); `"end"`: live events only. */
  fromPosition?: number | "end";
  /** Receives already delivered events whose payload was erased since (`payload: null, forgotten: true`). */
  onForget?: (events: Event[]) => void;
  /** Told why a subscription ended early (a storage error, a throwing `onEvent`, the database closing). */
  onError?: (error: EventStoreError | unknown) => void;
}

export interface EventStore {
  /** Events matching `filter`, in position order. */
  filter(filter?: Filter): Promise<Event[]>;
  /** Calls `reducer` once per matching event, in position order. */
  filter(filter: Filter | undefined, reducer: (event: Event) => void): Promise<undefined>;
  /** Catch-up then live delivery; returns the function that ends it. */
  subscribe(filter: Filter | undefined, onEvent: (event: Event) => void, options?: SubscribeOptions): () => void;
  /** The matching events, streamed from IndexedDB. */
  events(filter?: Filter): AsyncIterable<Event>;
  /** How many events match `filter` (at most its `limit`). */
  count(filter?: Filter): Promise<number>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The options argument of `EventStore.open`, typed for the `.d.ts`
    /// (checked by `interop::open_options`, not by its type).
    #[wasm_bindgen(typescript_type = "OpenOptions")]
    pub type OpenOptionsArg;
}
