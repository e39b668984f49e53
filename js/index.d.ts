/// <reference lib="esnext.disposable" />
// Types of the package `eventstore-wasm` (its entry, index.js).
//
// Generic over an app's event map, an object type from action to payload:
//
//   type AppEvents = {
//     [action: `user.${string}.added`]: { name: string };
//     [action: `user.${string}.renamed`]: { name: string };
//   };
//   const store = await EventStore.open<AppEvents>("my-app");
//
// Without a map every action and payload is accepted and payloads are `any`.

// ---------------------------------------------------------------- loading

/** What `init` takes: where the WebAssembly module comes from. */
export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

/**
 * Loads the WebAssembly module, once; later calls return the same promise.
 * Optional: the first `EventStore.open` (or any other static method) calls it.
 * Call it first with a `source` to load the module from elsewhere than next
 * to the package's JavaScript (a URL, bytes, a `WebAssembly.Module`).
 */
export default function init(
  source?: InitInput | Promise<InitInput> | { module_or_path: InitInput | Promise<InitInput> },
): Promise<unknown>;

/** Instantiates the module synchronously from its bytes or a `WebAssembly.Module`. */
export function initSync(module: { module: BufferSource | WebAssembly.Module } | BufferSource | WebAssembly.Module): unknown;

// ---------------------------------------------------------------- subjects

/** A subject: dotted (`"user.A.added"`) or as tokens (`["user", "A", "added"]`). */
export type Subject = string | readonly string[];
/** A subject whose tokens may be `*` (one token) or, last, `>` (one or more). */
export type Pattern = string | readonly string[];

/** Any JSON value, as payloads come back from the store. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

// ---------------------------------------------------------------- event maps

/**
 * The map used when none is given: any action, any payload (`any`, so that
 * `event.payload.name` needs no cast).
 */
export interface AnyEvents {
  [action: string]: any;
}

/** The actions of an event map, as dotted strings (template literals allowed). */
export type ActionOf<M> = keyof M & string;

/** `"user.${string}.added"` as tokens: `["user", string, "added"]`. */
export type Tokens<S extends string> = string extends S
  ? string[]
  : S extends `${infer Head}.${infer Rest}`
    ? [Head, ...Tokens<Rest>]
    : [S];

type IsAny<T> = 0 extends 1 & T ? true : false;

/**
 * What a payload of type `T` reads back as: the store keeps what
 * `JSON.stringify` keeps, so a `Date` comes back as its ISO string and
 * `undefined` properties are dropped.
 */
export type Jsonified<T> =
  IsAny<T> extends true
    ? any
    : T extends { toJSON(...args: any[]): infer R }
      ? Jsonified<R>
      : T extends string | number | boolean | null
        ? T
        : T extends undefined | bigint | symbol | ((...args: any[]) => unknown)
          ? never
          : T extends object
            ? { [K in keyof T]: Jsonified<T[K]> }
            : T;

// ---------------------------------------------------------------- events

/** The fields every stored event has, whatever its action. */
export interface EventFields {
  /** A UUIDv7, unique across stores. */
  id: string;
  /** The stream the event belongs to, as tokens. */
  aggregate: string[];
  /** The payload's schema version, 0..=65535. */
  revision: number;
  /** 1, 2, 3… per aggregate. */
  sequence: number;
  /** Its place in this store's log (global order). */
  position: number;
  /** When its push committed, ms since the epoch. */
  createdAt: number;
  /** Its position on the sync server, the same on every device; `null` while pending (and in stores that never synced). */
  remotePosition: number | null;
}

/** A stored event whose payload is there. */
export interface LiveEvent<A extends string = string, P = any> extends EventFields {
  action: Tokens<A>;
  payload: P;
  forgotten: false;
}

/** A stored event whose payload `forget` erased. */
export interface ForgottenEvent<A extends string = string> extends EventFields {
  action: Tokens<A>;
  payload: null;
  forgotten: true;
}

/** A stored event without a typed payload (`payload: any`). */
export interface AnyEvent<A extends string = string> extends EventFields {
  action: Tokens<A>;
  payload: any;
  forgotten: boolean;
}

/**
 * An event as the store returns it: `{ id, aggregate, action, revision,
 * sequence, position, createdAt, payload, forgotten }`. With an event map,
 * the union of each action's event, whose `action` tokens and (unless
 * `forgotten`) `payload` are typed: check `forgotten` before reading the
 * payload, and compare `action` tokens to tell actions apart.
 */
export type StoredEvent<M = AnyEvents, A extends ActionOf<M> = ActionOf<M>> = A extends unknown
  ? IsAny<M[A]> extends true
    ? AnyEvent<A>
    : LiveEvent<A, Jsonified<M[A]>> | ForgottenEvent<A>
  : never;

// ---------------------------------------------------------------- push

/** One command of a push entry: what happened, with its payload. */
export type Command<M = AnyEvents> = {
  [A in ActionOf<M>]: {
    /** What happened, e.g. `"user.A.added"` or `["user", "A", "added"]`. */
    action: A | Readonly<Tokens<A>>;
    /** Schema version of the payload, 0..=65535 (default 1). */
    revision?: number;
  } & (undefined extends M[A]
    ? { /** Any JSON value (as `JSON.stringify` takes it); omitted means `null`. */ payload?: M[A] }
    : null extends M[A]
      ? { payload?: M[A] }
      : { payload: M[A] });
}[ActionOf<M>];

/** Commands for one aggregate. */
export interface PushEntry<M = AnyEvents> {
  /** The stream the events belong to, e.g. `"user.A"`. */
  aggregate: Subject;
  /** The aggregate's sequence the caller saw (0: must not exist yet). */
  expectedSequence?: number | null;
  commands: readonly Command<M>[];
}

/** The type a pushed subject with a wildcard gets, so that it fails to compile. */
export interface NoWildcardInPushedSubject {
  "a pushed aggregate or action cannot hold the wildcards * or >": never;
}

/** The type a misspelt or unknown property gets, so that it fails to compile. */
export interface UnknownProperty {
  "not a property of this argument (the store refuses unknown properties)": never;
}

type HasWildcard<S> = S extends string
  ? S extends `${string}*${string}` | `${string}>${string}`
    ? true
    : false
  : S extends readonly unknown[]
    ? true extends HasWildcard<S[number]>
      ? true
      : false
    : false;

type HasUnknown<T, Known extends PropertyKey> = [Exclude<keyof T, Known>] extends [never] ? false : true;

type CommandKey = "action" | "revision" | "payload";
type EntryKey = "aggregate" | "expectedSequence" | "commands";

type BadCommand<C> = C extends unknown
  ? HasUnknown<C, CommandKey> extends true
    ? true
    : HasWildcard<C extends { action: infer S } ? S : never>
  : never;
type BadEntry<T> = T extends unknown
  ? HasUnknown<T, EntryKey> extends true
    ? true
    : HasWildcard<T extends { aggregate: infer S } ? S : never> extends true
      ? true
      : T extends { commands: readonly (infer C)[] }
        ? true extends BadCommand<C>
          ? true
          : false
        : false
  : never;

type CheckSubject<S> = HasWildcard<S> extends true ? NoWildcardInPushedSubject : S;
type CheckCommand<C> = {
  [K in keyof C]: K extends "action" ? CheckSubject<C[K]> : K extends CommandKey ? C[K] : UnknownProperty;
};
type CheckCommands<C> = { [J in keyof C]: CheckCommand<C[J]> };
type CheckEntry<T> = {
  [K in keyof T]: K extends "aggregate"
    ? CheckSubject<T[K]>
    : K extends "commands"
      ? CheckCommands<T[K]>
      : K extends EntryKey
        ? T[K]
        : UnknownProperty;
};

/**
 * What types can check of a push beyond its shape: no wildcard in a literal
 * aggregate or action, no unknown property (the store refuses both at run
 * time). `unknown` when all is well, else the entries with each offending
 * type replaced by `NoWildcardInPushedSubject` or `UnknownProperty`.
 */
export type CheckedEntries<E> = true extends BadEntry<E extends readonly (infer T)[] ? T : never>
  ? { [I in keyof E]: CheckEntry<E[I]> }
  : unknown;

// ---------------------------------------------------------------- filters

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
  /** Range of the aggregate's sequence. */
  sequence?: Range;
  /** Range of `createdAt`, ms since the epoch. */
  createdAt?: Range;
  /** Range of the log position, e.g. `{ from: saved + 1 }` to resume. */
  position?: Range;
}

/** Queries OR-ed together; empty or absent matches every event. */
export interface Filter {
  queries?: readonly Query[];
  /** Most events to return. */
  limit?: number;
  /** Newest first (descending position); with `limit`, the last events. */
  reverse?: boolean;
}

/** What `forget` takes: a filter without `limit` (nor `reverse`). */
export interface ForgetFilter {
  queries?: readonly Query[];
  /** Not allowed: `forget` erases every match (`INVALID_ARGUMENT`). */
  limit?: never;
  reverse?: never;
}

type RangeKey = "from" | "to";
type QueryKey = "subjects" | "aggregate" | "sequence" | "createdAt" | "position";
type FilterKey = "queries" | "limit" | "reverse";
type RangeField = "sequence" | "createdAt" | "position";

type BadQuery<Q> = Q extends unknown
  ? HasUnknown<Q, QueryKey> extends true
    ? true
    : true extends { [K in RangeField & keyof Q]: HasUnknown<NonNullable<Q[K]>, RangeKey> }[RangeField & keyof Q]
      ? true
      : false
  : never;
type BadFilter<F> =
  HasUnknown<F, FilterKey> extends true
    ? true
    : F extends { queries: readonly (infer Q)[] }
      ? true extends BadQuery<Q>
        ? true
        : false
      : false;

type CheckRange<R> = { [K in keyof R]: K extends RangeKey ? R[K] : UnknownProperty };
type CheckQuery<Q> = {
  [K in keyof Q]: K extends RangeField ? CheckRange<Q[K]> : K extends QueryKey ? Q[K] : UnknownProperty;
};

type CheckQueries<Q> = { [I in keyof Q]: CheckQuery<Q[I]> };

/** Unknown properties of a literal filter fail to compile (the store refuses them). */
export type CheckedFilter<F> = true extends BadFilter<F>
  ? {
      [K in keyof F]: K extends "queries"
        ? CheckQueries<F[K]>
        : K extends FilterKey
          ? F[K]
          : UnknownProperty;
    }
  : unknown;

/** `"user.*.added"` as a template literal type: `user.${string}.added`. */
export type PatternTemplate<P extends string> = P extends "*" | ">"
  ? string
  : P extends `${infer Head}.${infer Rest}`
    ? `${Head extends "*" ? string : Head}.${PatternTemplate<Rest>}`
    : P;

type Dotted<P> = P extends string
  ? P
  : P extends readonly [infer Head extends string]
    ? Head
    : P extends readonly [infer Head extends string, ...infer Rest]
      ? `${Head}.${Dotted<Rest>}`
      : string;

/** The actions of `M` that a pattern on the action may match. */
type MatchingActions<M, P> = string extends Dotted<P>
  ? ActionOf<M>
  : PatternTemplate<Dotted<P>> extends infer T
    ? { [A in ActionOf<M>]: A extends T ? A : T extends A ? A : never }[ActionOf<M>]
    : never;

type QueryActions<M, Q> = Q extends { subjects: infer P } ? MatchingActions<M, P> : ActionOf<M>;

type FilterActions<M, F> = F extends { queries: readonly [] }
  ? ActionOf<M>
  : F extends { queries: readonly (infer Q)[] }
    ? QueryActions<M, Q>
    : ActionOf<M>;

/**
 * The events a filter can return: where its queries' `subjects` name the
 * actions, only theirs (all of the map's otherwise).
 */
export type Matching<M, F> = [FilterActions<M, F>] extends [never]
  ? StoredEvent<M>
  : StoredEvent<M, Extract<FilterActions<M, F>, ActionOf<M>>>;

/**
 * Whether `event.action` matches `pattern` (`*`: one token, a final `>`: one
 * or more), as a query's `subjects` would. A type guard: with an event map,
 * `if (matches(e, "user.*.added"))` narrows `e` to those events.
 */
export function matches<E extends EventFields & { action: string[] }, const P extends Pattern>(
  event: E,
  pattern: P,
): event is E extends unknown ? (TokensMatch<E["action"], PatternTokens<P>> extends false ? never : E) : never;

type PatternTokens<P> = P extends string ? Tokens<P> : P extends readonly string[] ? [...P] : string[];

/** Whether action tokens `A` may match pattern tokens `P` (`true` when types cannot tell). */
type TokensMatch<A, P> = P extends [">"]
  ? A extends [] ? false : true
  : P extends [infer PH, ...infer PR]
    ? A extends [infer AH, ...infer AR]
      ? PH extends "*" ? TokensMatch<AR, PR> : PH extends AH ? TokensMatch<AR, PR> : AH extends PH ? TokensMatch<AR, PR> : false
      : A extends [] ? false : boolean
    : P extends []
      ? A extends [] ? true : A extends [unknown, ...unknown[]] ? false : boolean
      : boolean;

// ---------------------------------------------------------------- open

/** Turns the payload of an older revision into the next one, on every read. */
export interface Upcaster {
  /** Pattern on the actions it applies to. */
  action: Pattern;
  /** The revision it reads. */
  from: number;
  /** The revision its result has. */
  to: number;
  /**
   * The payload at revision `to`, from the payload at `from` and the event
   * as read. Not `undefined` (return `null` for no payload); a throw fails
   * the read with an `INVALID_PAYLOAD` error naming the event and upcaster.
   */
  upcast: (payload: any, event: AnyEvent) => {} | null;
}

/** What `onDataLost` is told. */
export interface DataLostInfo {
  /** The store's name. */
  name: string;
  /** The last position this origin knew the database to hold. */
  lastPosition: number;
  /** The last position it holds now (events after it are gone). */
  position: number;
  /** `"empty"`, `"replaced"` (another log) or `"shorter"`. */
  reason: "empty" | "replaced" | "shorter";
}

/** Options of `EventStore.open`. */
export interface OpenOptions {
  /**
   * Encrypt payloads at rest (ChaCha20-Poly1305, a key per aggregate in a key
   * vault file in the Origin Private File System; `forget` destroys keys).
   * Set when the store is created and on every open of it after
   * (docs/privacy.md). Needs OPFS sync access handles: `STORAGE` where the
   * browser has none.
   */
  encryption?: boolean;
  /** Upcasters applied on every read (filter, events, subscribe, get). */
  upcasters?: readonly Upcaster[];
  /**
   * Called when the browser reset a database this origin had written (after
   * a full disk, for example); the store then opens what is there. Without
   * it, `open` rejects with `DATA_LOST`.
   */
  onDataLost?: (info: DataLostInfo) => void | Promise<void>;
}

/** What `subscribe` takes: a filter without `limit` or `reverse` (events come as they are committed). */
export interface SubscribeFilter {
  queries?: readonly Query[];
  limit?: never;
  reverse?: never;
}

/** Options of `subscribe`. */
export interface SubscribeOptions<E = AnyEvent> {
  /** Deliver events after this position (default 0: from the start); `"end"`: live events only. */
  fromPosition?: number | "end";
  /** Receives already delivered events whose payload was erased since (`payload: null, forgotten: true`). */
  onForget?: (events: E[]) => void;
  /**
   * Receives already delivered events that sync took back from their
   * positions: a conflict resolved by `"discard"` (gone) or `"rebase"` (they
   * come again through `onEvent` with new sequences and positions).
   */
  onWithdraw?: (events: E[]) => void;
  /** Told why a subscription ended early (a storage error, a throwing `onEvent`, the database closing). */
  onError?: (error: unknown) => void;
}

// ---------------------------------------------------------------- the store

/** An event store on one IndexedDB database. Open it with `EventStore.open(name)`. */
export class EventStore<M extends object = AnyEvents> {
  private constructor();
  /** Types only: the event map this store was opened with. */
  private readonly "~events"?: M;

  /**
   * Opens the event store `name`, creating its IndexedDB database if needed.
   *
   * ```ts
   * const store = await EventStore.open<AppEvents>("my-app");
   * ```
   */
  static open<M extends object = AnyEvents>(name: string, options?: OpenOptions): Promise<EventStore<M>>;

  /** Deletes the event store `name` and all its events. Open connections in other tabs close themselves. */
  static delete(name: string): Promise<void>;

  /**
   * Appends events atomically: all entries in one transaction, or none.
   * Resolves to the stored events in push order.
   */
  push<const E extends readonly PushEntry<M>[]>(entries: E & CheckedEntries<E>): Promise<StoredEvent<M>[]>;

  /** Events matching `filter`, in position order (newest first with `reverse`). */
  filter<const F extends Filter = {}>(filter?: F & CheckedFilter<F>): Promise<Matching<M, F>[]>;
  /** Calls `reducer` once per matching event, in order; resolves to `undefined`. */
  filter<const F extends Filter = {}>(
    filter: (F & CheckedFilter<F>) | undefined,
    reducer: (event: Matching<M, F>) => void): Promise<undefined>;

  /** The event with that id, or `null`. */
  get(id: string): Promise<StoredEvent<M> | null>;

  /** How many events match `filter`, without reading them out. */
  count(filter?: Filter): Promise<number>;

  /** Erases the payload of every matching event, keeping its metadata. Resolves to the number newly erased. */
  forget(filter: ForgetFilter): Promise<number>;

  /**
   * Delivers every stored matching event after `options.fromPosition`, then
   * each new one as it is committed (here, in another tab or a worker):
   * exactly once, in position order. Returns the function that ends it.
   */
  subscribe<const F extends SubscribeFilter = {}>(
    filter: (F & CheckedFilter<F>) | undefined,
    onEvent: (event: Matching<M, F>) => void,
    options?: SubscribeOptions<Matching<M, F>>,
  ): () => void;

  /** The matching events as an async iterable, read from IndexedDB a page at a time. */
  events<const F extends Filter = {}>(filter?: F & CheckedFilter<F>): AsyncIterable<Matching<M, F>>;

  /** Closes the store: ends its subscriptions; later calls reject with `CLOSED`. */
  close(): void;

  /** The name the store was opened with. */
  readonly name: string;

  /**
   * Syncs this store with a sync server (`eventstore-server`; protocol in
   * docs/sync-protocol.md) while the page lives: pushes pending events,
   * pulls everyone else's, live. One tab per store does the network work
   * (a Web Lock); closing the store stops it.
   *
   * ```ts
   * const sync = store.sync({ url: "http://127.0.0.1:8787", onConflict: () => "rebase" });
   * await sync.flush();
   * ```
   */
  sync(options: SyncOptions<M>): Sync;

  /**
   * The events matching `filter` as NDJSON (one event per line, as the store
   * returns them), streamed: the store is read a page at a time as the
   * stream is consumed. For access and portability requests; upcasters apply.
   *
   * ```ts
   * const file = new Response(store.export({ queries: [{ aggregate: "user.A.>" }] }));
   * ```
   */
  export(filter?: Filter): ReadableStream<Uint8Array>;

  /**
   * Imports NDJSON as `export` writes it into the new store `name` and resolves
   * to it, open. Ids, aggregates, sequences, actions, revisions, createdAt,
   * payloads and forgotten flags are kept (positions are the new store's). All
   * or nothing: a bad or truncated line rejects with `INVALID_ARGUMENT` naming
   * the line, and the store is deleted again. Each aggregate's events must run
   * from sequence 1 without gaps (export whole aggregates).
   */
  static import<M extends object = AnyEvents>(
    name: string,
    source: ReadableStream<Uint8Array | string> | AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string> | string | Blob | Response,
    options?: OpenOptions,
  ): Promise<EventStore<M>>;

  /**
   * Rewrites the store's IndexedDB database so that the bytes of erased
   * (forgotten) payloads leave the browser's files where the backend allows
   * it: every record of every object store is copied raw into a holding
   * database, the store's database is deleted, created again with the same
   * object stores and indexes, and filled back. Closes this store (later
   * calls reject with `CLOSED`), and closes the store's connections in
   * other tabs (they reject with `CLOSED` and open it again, waiting until
   * the compaction is done); resolves to the store opened again with the
   * same options. All or nothing: if the page goes away half way, the next
   * `EventStore.open` of the store finishes or undoes it. What it achieves
   * on disk, per browser: docs/privacy.md.
   *
   * ```ts
   * await store.forget({ queries: [{ aggregate: "user.A" }] });
   * store = await store.compact();
   * ```
   */
  compact(): Promise<EventStore<M>>;

  /** Releases the WebAssembly object (`using store = …` calls it). */
  free(): void;
  [Symbol.dispose](): void;
}

// ---------------------------------------------------------------- errors

/** The `code` of every error the store rejects with. */
export type ErrorCode =
  | "INVALID_SUBJECT"
  | "INVALID_PAYLOAD"
  | "INVALID_ARGUMENT"
  | "SEQUENCE_MISMATCH"
  | "QUOTA_EXCEEDED"
  | "CLOSED"
  | "VERSION_MISMATCH"
  | "DATA_LOST"
  | "STORAGE"
  | "SYNC"
  | "CONFLICT";

// ---------------------------------------------------------------- sync

/** What `onConflict` is told: pending events of an aggregate that moved on remotely. */
export interface SyncConflict<E = AnyEvent> {
  /** The aggregate's tokens. */
  aggregate: string[];
  /** This device's pending events of the aggregate (`remotePosition: null`), in sequence order. */
  pending: E[];
  /** The server's events of the aggregate this device had not seen, in sequence order. */
  remote: E[];
}

/** Options of `store.sync`. */
export interface SyncOptions<M extends object = AnyEvents> {
  /** The server's base URL, e.g. `"http://127.0.0.1:8787"`. */
  url: string;
  /** Bearer token, if the server wants one (`--auth`). */
  token?: string;
  /**
   * Decides a conflict: `"rebase"` (the pending events keep ids and
   * payloads and are re-sequenced after the remote ones) or `"discard"`
   * (they leave the log). Without it, or on any other answer, they stay
   * pending and unsent, counted in `status().conflicts`, until a later
   * `sync()` with an `onConflict` decides.
   */
  onConflict?: (conflict: SyncConflict<StoredEvent<M>>) => "rebase" | "discard" | Promise<"rebase" | "discard">;
}

/** What `sync.status()` says. */
export interface SyncStatus {
  /** Events not yet accepted by the server. */
  pending: number;
  /** Pending events held by conflicts without a decision. */
  conflicts: number;
  /** The server position pulled up to; `null` before the first contact. */
  remotePosition: number | null;
  /** Whether the last request reached the server. */
  online: boolean;
  /** `null` while healthy; after a failed request an `Error` with `code` `SYNC` (HTTP status in the message) or `CONFLICT`. */
  error: EventStoreError | null;
}

/** A running sync, from `store.sync(options)`. */
export interface Sync {
  /**
   * Resolves once every event pending now is accepted (or settled by
   * `onConflict`) and everything the server holds now has been pulled. Waits
   * while the server is unreachable (retries back off up to 30 s); rejects
   * with `SYNC` on a refusal (401, 403, another log) and with `CONFLICT`
   * when conflicts are left without a decision.
   */
  flush(): Promise<void>;
  status(): SyncStatus;
  /** Stops syncing; pending events stay pending (and are sent by a later `sync()`). */
  stop(): void;
}

/** The codes as values: `ErrorCode.CLOSED === "CLOSED"`. */
export const ErrorCode: { readonly [C in ErrorCode]: C };

/**
 * What every method rejects with: an `Error` with a `code`.
 * `error instanceof EventStoreError` is true for the store's errors (they are
 * made in WebAssembly as plain `Error`s; the check looks at `code`).
 */
export class EventStoreError extends Error {
  /** Makes one, e.g. for a fake of the store in tests. */
  constructor(code: ErrorCode, message?: string, fields?: { aggregate?: string[]; expected?: number; actual?: number });
  code: ErrorCode;
  /** With `SEQUENCE_MISMATCH`: the aggregate's tokens, the sequence expected and the actual one. */
  aggregate?: string[];
  expected?: number;
  actual?: number;
  /** With `DATA_LOST`: as `onDataLost` would have been told. */
  lastPosition?: number;
  position?: number;
  reason?: DataLostInfo["reason"];
  static [Symbol.hasInstance](value: unknown): value is EventStoreError;
}

/** Whether `value` is an error of the store, with that `code` if one is given. */
export function isEventStoreError<C extends ErrorCode = ErrorCode>(
  value: unknown,
  code?: C,
): value is EventStoreError & { code: C };
