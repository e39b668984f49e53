// The package's entry (copied into pkg/ by scripts/finish-pkg.mjs): the
// wasm-bindgen glue, which loads the WebAssembly module by itself on first
// use, plus the runtime values its types name (EventStoreError, ErrorCode).
//
// `import { EventStore } from "eventstore-wasm"` is ready to use: the first
// call of a static method (`EventStore.open`, `EventStore.delete`, ...)
// awaits the module. `await init()` (the default export) still works, and
// `init(url)` before the first call picks where the .wasm comes from. No
// top-level await, so that bundlers' default targets accept the package.
import initGlue, { EventStore, __setVault as setVault } from "./eventstore_wasm.js";
import { Sync } from "./sync.js";
import { exportEvents, importEvents } from "./portability.js";
import { compact, recover } from "./compact.js";
import { Vault } from "./vault.js";

export * from "./eventstore_wasm.js";

/** The wasm file, next to the glue. */
const WASM = "eventstore_wasm_bg.wasm";

let loading;

/**
 * Loads and instantiates the WebAssembly module, once: later calls return
 * the same promise. `source` is what wasm-bindgen's loader takes (a URL, a
 * `Response`, bytes, a `WebAssembly.Module`, or `{ module_or_path }`);
 * without it the module is fetched next to this file, or read from the
 * package directory under Node. A failed load may be retried.
 */
export default function init(source) {
  loading ??= load(source).catch((e) => {
    loading = undefined;
    throw e;
  });
  return loading;
}

async function load(source) {
  const glue = source !== undefined && Object.getPrototypeOf(source) === Object.prototype
    ? await initGlue(source)
    : await initGlue({ module_or_path: source ?? (await nodeBytes()) });
  // The key vault of encrypted stores (js/vault.js), handed to the wasm side.
  setVault(Vault);
  return glue;
}

/**
 * Under Node (tests with fake-indexeddb), where `fetch` cannot read a
 * `file:` URL: the .wasm bytes, read from this package's directory.
 * Elsewhere `undefined`, so the glue fetches the file itself. The Node
 * built-ins are reached through `process.getBuiltinModule` (Node 20.16+)
 * or an import that bundlers are told to leave alone, so that browser
 * builds never see a `node:` import.
 */
async function nodeBytes() {
  const process = globalThis.process;
  if (!process?.versions?.node || !import.meta.url.startsWith("file:")) return undefined;
  const builtin = (id) =>
    process.getBuiltinModule?.(id) ?? import(/* @vite-ignore */ /* webpackIgnore: true */ id);
  const [fs, url] = await Promise.all([builtin("node:fs/promises"), builtin("node:url")]);
  const here = url.fileURLToPath(import.meta.url);
  return fs.readFile(here.slice(0, here.length - here.replace(/^.*[\\/]/, "").length) + WASM);
}

// Every static method of EventStore (open, delete, ...) first awaits the
// module. wasm-bindgen's own helpers (`__wrap`) are left as they are.
for (const name of Object.getOwnPropertyNames(EventStore)) {
  const method = EventStore[name];
  if (typeof method !== "function" || name.startsWith("__")) continue;
  const ready = {
    async [name](...args) {
      await init();
      return method.apply(this, args);
    },
  }[name];
  Object.defineProperty(EventStore, name, { ...Object.getOwnPropertyDescriptor(EventStore, name), value: ready });
}

// EventStore.open first waits for a compaction of that store running in
// another tab and finishes one a closed tab left half done (compact.js);
// the options a store was opened with are kept for compact() to reopen it.
const opened = new WeakMap();
const openStore = EventStore.open;
Object.defineProperty(EventStore, "open", {
  ...Object.getOwnPropertyDescriptor(EventStore, "open"),
  value: async function open(name, options) {
    if (typeof name === "string") await recover(name);
    const store = await openStore.call(this, name, options);
    opened.set(store, options);
    return store;
  },
});
// store.compact(): see compact.js. Closes this store and resolves to the
// store opened again.
EventStore.prototype.compact = async function compactStore() {
  if (this.__wbg_ptr === 0) throw new EventStoreError("CLOSED", "the store is closed: it was freed (free() or Symbol.dispose)");
  // A closed store cannot be compacted (it may have been deleted since).
  await this.count();
  const options = opened.get(this);
  await compact(this, compactTest.get(this));
  return EventStore.open(this.name, options);
};
/** Test hook (tests/e2e/compact.test.mjs): where compact() stops, as a tab closed there would. */
const compactTest = new WeakMap();
EventStore.prototype.__compactStop = function stopAt(stop) {
  compactTest.set(this, { stop });
};
// store.sync(options): see sync.js. One sync per store at a time; closing
// the store stops it.
const syncs = new WeakMap();
EventStore.prototype.sync = function sync(options) {
  if (syncs.has(this)) {
    throw new EventStoreError("INVALID_ARGUMENT", "sync is already on for this store: stop() it before starting another");
  }
  const handle = new Sync(this, options, () => syncs.delete(this));
  syncs.set(this, handle);
  return handle;
};
// store.export(filter) and EventStore.import(name, source): see portability.js.
EventStore.prototype.export = function exportStore(filter) {
  return exportEvents(this, filter);
};
EventStore.import = function importStore(name, source, options) {
  return importEvents(EventStore, name, source, options);
};

const close = EventStore.prototype.close;
EventStore.prototype.close = function closeStore() {
  syncs.get(this)?.stop();
  delivering.delete(this);
  return close.apply(this, arguments);
};

// A store the app holds no reference to is freed by the garbage collector
// (wasm-bindgen's FinalizationRegistry), which closes its connection. A
// store that still delivers events must not go that way: a subscription's
// callbacks or a running `for await (... of store.events())` are reason
// enough to keep it, however the app holds (or dropped) the store itself.
// Live subscriptions hold their store here until they end (unsubscribed,
// failed, or the store closed); an iterator holds it as a property, so it
// lives exactly as long as the iterator can be used.
const delivering = new Map();
function hold(store) {
  delivering.set(store, (delivering.get(store) ?? 0) + 1);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    const left = (delivering.get(store) ?? 1) - 1;
    if (left > 0) delivering.set(store, left);
    else delivering.delete(store);
  };
}
const subscribe = EventStore.prototype.subscribe;
EventStore.prototype.subscribe = function subscribeStore(filter, onEvent, options) {
  // Options the store rejects go through untouched, to be rejected there.
  const plain = options === undefined || options === null || (typeof options === "object" && !Array.isArray(options));
  const onError = options?.onError;
  if (!plain || (onError !== undefined && typeof onError !== "function")) {
    return subscribe.call(this, filter, onEvent, options);
  }
  const release = hold(this);
  const ended = (error) => {
    release();
    if (onError) onError(error);
    else globalThis.reportError?.(error);
  };
  let stop;
  try {
    stop = subscribe.call(this, filter, onEvent, { ...options, onError: ended });
  } catch (e) {
    release();
    throw e;
  }
  return function unsubscribe() {
    release();
    return stop();
  };
};
const events = EventStore.prototype.events;
EventStore.prototype.events = function eventsOf(filter) {
  const pages = events.call(this, filter);
  const store = this;
  return {
    [Symbol.asyncIterator]() {
      const it = pages[Symbol.asyncIterator]();
      return {
        store,
        next: (value) => it.next(value),
        return: (value) => it.return(value),
        throw: (error) => it.throw(error),
        [Symbol.asyncIterator]() {
          return this;
        },
      };
    },
  };
};

// A store that was freed (`store.free()`, `using store = ...`) has been
// closed (its Rust side closes the connection when dropped); its methods
// then answer like those of a closed store (CLOSED) instead of failing in
// the glue with "null pointer passed to rust".
const ASYNC = new Set(["push", "filter", "forget", "get", "count", "compact"]);
for (const name of Object.getOwnPropertyNames(EventStore.prototype)) {
  // Accessors (`name`) are left alone: reading them here would call them.
  const method = Object.getOwnPropertyDescriptor(EventStore.prototype, name).value;
  if (typeof method !== "function" || name === "constructor" || name === "free") continue;
  const guarded = {
    [name](...args) {
      if (this.__wbg_ptr !== 0) return method.apply(this, args);
      if (name === "close") return undefined;
      const error = new EventStoreError("CLOSED", "the store is closed: it was freed (free() or Symbol.dispose)");
      if (ASYNC.has(name)) return Promise.reject(error);
      throw error;
    },
  }[name];
  Object.defineProperty(EventStore.prototype, name, { ...Object.getOwnPropertyDescriptor(EventStore.prototype, name), value: guarded });
}

/** The `code` of every error the store rejects with (SPEC section 6). */
export const ErrorCode = Object.freeze({
  INVALID_SUBJECT: "INVALID_SUBJECT",
  INVALID_PAYLOAD: "INVALID_PAYLOAD",
  INVALID_ARGUMENT: "INVALID_ARGUMENT",
  SEQUENCE_MISMATCH: "SEQUENCE_MISMATCH",
  QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
  CLOSED: "CLOSED",
  VERSION_MISMATCH: "VERSION_MISMATCH",
  DATA_LOST: "DATA_LOST",
  STORAGE: "STORAGE",
  SYNC: "SYNC",
  CONFLICT: "CONFLICT",
});

const CODES = new Set(Object.values(ErrorCode));

/**
 * The errors the store rejects with. They are made in Rust as plain `Error`s
 * with a `code`, so `instanceof EventStoreError` recognises any `Error` whose
 * `code` is one of `ErrorCode`; `new EventStoreError(code, message)` makes
 * one (for tests and fakes of the store).
 */
export class EventStoreError extends Error {
  constructor(code, message = code, fields = {}) {
    super(message);
    this.name = "EventStoreError";
    this.code = code;
    Object.assign(this, fields);
  }

  static [Symbol.hasInstance](value) {
    return value instanceof Error && CODES.has(value.code);
  }
}

/** Whether `value` is an error of the store (with `code`, of that code). */
export function isEventStoreError(value, code) {
  return value instanceof EventStoreError && (code === undefined || value.code === code);
}

/**
 * Whether `event.action` matches `pattern` (`*`: one token, a final `>`:
 * one or more), the same rule as a query's `subjects`. With an event map it
 * narrows the event's type to the actions the pattern names.
 */
export function matches(event, pattern) {
  const tokens = typeof pattern === "string" ? pattern.split(".") : pattern;
  const action = event.action;
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === ">" && i === tokens.length - 1) return action.length > i;
    if (i >= action.length || (tokens[i] !== "*" && tokens[i] !== action[i])) return false;
  }
  return action.length === tokens.length;
}
