// store.sync(options): the network side of sync (docs/sync-protocol.md,
// section 13). This file only fetches, waits and holds the Web Lock; every
// storage step and every rule (what is pending, what an answer settles, how
// a pull page and a conflict enter the log) is one call into the wasm core
// (src/web/sync.rs over src/sync/local.rs).
//
// One tab at a time does the network work for a store: the one holding the
// Web Lock `eventstore-wasm:sync:<name>`. The others wait for the lock (and
// take over when that tab closes); their pushes reach the leader through
// the store's own commit hints (a subscription), and what the leader pulls
// reaches them the same way.

const MAX_BACKOFF_MS = 30_000;
const FIRST_BACKOFF_MS = 500;
const LONG_POLL_S = 25;
const REQUEST_TIMEOUT_MS = 30_000;
const STATUS_EVERY_MS = 1_000;
const PAGE = 1000;

function syncError(code, message, fields = {}) {
  return Object.assign(new Error(message), { code }, fields);
}

/** Checks `store.sync(options)`; throws INVALID_ARGUMENT naming the bad value. */
function checkOptions(options) {
  if (options === null || typeof options !== "object") {
    throw syncError("INVALID_ARGUMENT", `sync options must be an object { url, token?, onConflict? }, got ${options === null ? "null" : typeof options}`);
  }
  for (const key of Object.keys(options)) {
    if (!["url", "token", "onConflict"].includes(key)) {
      throw syncError("INVALID_ARGUMENT", `unknown sync option ${JSON.stringify(key)} (known: url, token, onConflict)`);
    }
  }
  let url;
  try {
    url = new URL(options.url);
  } catch {
    throw syncError("INVALID_ARGUMENT", `sync url must be an absolute http(s) URL, got ${JSON.stringify(options.url)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw syncError("INVALID_ARGUMENT", `sync url must be http: or https:, got ${JSON.stringify(options.url)}`);
  }
  if (options.token !== undefined && typeof options.token !== "string") {
    throw syncError("INVALID_ARGUMENT", `sync token must be a string, got ${typeof options.token}`);
  }
  if (options.onConflict !== undefined && typeof options.onConflict !== "function") {
    throw syncError("INVALID_ARGUMENT", `onConflict must be a function, got ${typeof options.onConflict}`);
  }
  return { base: url.href.replace(/\/+$/, ""), token: options.token, onConflict: options.onConflict };
}

/** A wire event (docs/sync-protocol.md) as the store's events look. */
function asEvent(e) {
  const { position, ...rest } = e;
  return { ...rest, remotePosition: position ?? null };
}

/** An error of an HTTP answer: SYNC, with the status in the message. */
async function httpError(what, response) {
  const text = await response.text().catch(() => "");
  let detail = text.slice(0, 300);
  try {
    const body = JSON.parse(text);
    if (body?.error?.code) detail = `${body.error.code}: ${body.error.message}`;
  } catch {}
  return syncError("SYNC", `${what} failed: HTTP ${response.status} ${detail}`, { status: response.status });
}

const debug = (...args) => {
  const log = globalThis.EVENTSTORE_SYNC_DEBUG;
  if (Array.isArray(log)) log.push(args.join(" "));
  else if (log) console.log("sync:", ...args);
};
const stopped = () => syncError("SYNC", "sync was stopped");

export class Sync {
  #store;
  #base;
  #token;
  #onConflict;
  #stopped = false;
  #stopController = new AbortController();
  #leading = false;
  #begun = false;
  /** The error that ended sync (LOG_MISMATCH): later flushes reject with it. */
  #fatal = null;
  #refreshing = false;
  #refreshAgain = false;
  #error = null;
  #online = globalThis.navigator?.onLine ?? true;
  #counts = { pending: 0, conflicts: 0, cursor: 0, settled: 0, last: 0, log: null };
  #wakeups = [];
  #woken = false;
  #poll = null;
  #flushes = [];
  #cleanups = [];
  #onStop;

  constructor(store, options, onStop) {
    const { base, token, onConflict } = checkOptions(options);
    this.#store = store;
    this.#base = base;
    this.#token = token;
    this.#onConflict = onConflict;
    this.#onStop = onStop;
    // Commits here and in other tabs (pushes to send) wake the loop.
    // (Pulled events, which carry a remotePosition, need no round.)
    // A local push also refreshes status() at once (it counts the new
    // pending events a moment after the push resolves).
    const unsubscribe = store.subscribe(undefined, (e) => {
      if (e.remotePosition !== null) return;
      this.#wake();
      this.#refreshSoon();
    }, {
      fromPosition: "end",
      onError: (e) => { if (e?.code === "CLOSED") this.stop(); },
    });
    this.#cleanups.push(unsubscribe);
    const on = (target, kind, f) => {
      target?.addEventListener?.(kind, f);
      this.#cleanups.push(() => target?.removeEventListener?.(kind, f));
    };
    on(globalThis, "online", () => { this.#online = true; this.#wake(); });
    on(globalThis, "offline", () => { this.#online = false; this.#abortPoll(); });
    const timer = setInterval(() => this.#refresh(), STATUS_EVERY_MS);
    timer.unref?.(); // under Node, the status timer alone keeps no process alive
    this.#cleanups.push(() => clearInterval(timer));
    this.#refresh();
    this.#run();
  }

  /** `{ pending, conflicts, remotePosition, online, error }`, as of the last look at storage. */
  status() {
    const c = this.#counts;
    return {
      pending: c.pending,
      conflicts: c.conflicts,
      remotePosition: c.log === null ? null : c.cursor,
      online: this.#online,
      error: this.#error,
    };
  }

  /**
   * Resolves once every event pending now is accepted (or settled by
   * onConflict) and everything the server holds now has been pulled.
   * Waits while the server is unreachable; rejects on a refusal (SYNC) or
   * on a conflict left without a decision (CONFLICT).
   */
  flush() {
    if (this.#stopped) return Promise.reject(stopped());
    if (this.#fatal) return Promise.reject(this.#fatal);
    return new Promise((resolve, reject) => {
      const flush = { resolve, reject, last: null, head: null };
      this.#flushes.push(flush);
      this.#wake();
      if (!this.#leading) this.#refresh();
    });
  }

  /** Stops syncing; pending events stay pending. */
  stop() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopController.abort();
    this.#abortPoll();
    for (const f of this.#cleanups.splice(0)) {
      try { f(); } catch {}
    }
    for (const f of this.#flushes.splice(0)) f.reject(stopped());
    this.#wake();
    this.#onStop?.();
  }

  // ------------------------------------------------------------ the loop

  async #run() {
    const locks = globalThis.navigator?.locks;
    try {
      if (typeof locks?.request === "function") {
        await locks.request(`eventstore-wasm:sync:${this.#store.name}`, { signal: this.#stopController.signal }, () => this.#lead());
      } else {
        await this.#lead();
      }
    } catch (e) {
      if (!this.#stopped) this.#fail(e);
    }
  }

  async #lead() {
    this.#leading = true;
    let attempt = 0;
    try {
      while (!this.#stopped) {
        try {
          await this.#round();
          attempt = 0;
          this.#error = null;
          this.#online = true;
          await this.#refresh();
          await this.#settleFlushes();
          await this.#live();
        } catch (e) {
          if (this.#stopped) return;
          debug("error", e?.code, e?.message);
          if (e?.code === "CLOSED") return this.stop();
          if (/LOG_MISMATCH/.test(e?.message)) e.fatal = true;
          this.#error = e;
          if (e?.fatal) return this.#fail(e);
          if (e?.status === undefined) this.#online = false;
          // A refusal (401, 403, ...) rejects the flushes waiting now;
          // the network failing or a 5xx only delays them.
          if (e?.status !== undefined && e.status < 500) {
            for (const f of this.#flushes.splice(0)) f.reject(e);
          }
          attempt += 1;
          const backoff = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (attempt - 1));
          await this.#sleep(backoff * (0.75 + Math.random() / 2));
        }
      }
    } finally {
      this.#leading = false;
    }
  }

  /** An error that ends sync: LOG_MISMATCH, a closed store. */
  #fail(e) {
    this.#error = e;
    this.#fatal = e;
    for (const f of this.#flushes.splice(0)) f.reject(e);
  }

  /** One round: the log, forgets, pending events, then pull to the end. */
  async #round() {
    debug("round", this.#flushes.length);
    this.#woken = false;
    if (!this.#begun || this.#flushes.some((f) => f.head === null)) {
      const info = await this.#json("GET", "/v1/info");
      if (!this.#begun) {
        try {
          await this.#store.__syncBegin(info.log);
        } catch (e) {
          if (e?.code === "SYNC") e.fatal = true;
          throw e;
        }
        this.#counts = await this.#store.__syncCounts();
        this.#begun = true;
      }
      for (const f of this.#flushes) {
        if (f.head === null) {
          f.last = (await this.#store.__syncCounts()).last;
          f.log = info.log;
          f.head = info.head;
        }
      }
    }
    await this.#resolveParked();
    await this.#sendForgets();
    await this.#push();
    // Settling may have queued forgets (events forgotten while their push
    // was in flight): sent now, not at the next round.
    await this.#sendForgets();
    await this.#pull(0);
  }

  async #sendForgets() {
    for (const { id, body } of await this.#store.__syncForgets()) {
      const response = await this.#fetch("POST", "/v1/forget", body);
      if (response.status === 200) {
        await this.#store.__syncForgetSent(id);
      } else if (response.status >= 500) {
        throw await httpError("forget", response);
      } else {
        // Refused (403: not the token's to forget; 413: too many at once):
        // retrying it unchanged cannot succeed, so it is dropped and reported.
        const e = await httpError("forget", response);
        await this.#store.__syncForgetSent(id);
        throw e;
      }
    }
  }

  async #push() {
    for (let round = 0; round < 1000; round++) {
      const bodies = await this.#store.__syncPending(PAGE);
      if (bodies.length === 0) return;
      for (const body of bodies) {
        const response = await this.#fetch("POST", "/v1/push", body);
        if (response.status >= 500) throw await httpError("push", response);
        const text = await response.text();
        const out = await this.#store.__syncSettle(response.status, text);
        if (out.error) {
          out.error.status = response.status;
          if (/LOG_MISMATCH/.test(out.error.message)) out.error.fatal = true;
          throw out.error;
        }
        if (out.synced === 0 && out.conflicts.length === 0) {
          throw syncError("SYNC", `push: HTTP ${response.status} answered none of the pushed events: ${text.slice(0, 300)}`, { status: response.status });
        }
        debug("settled", this.#store.name, response.status, JSON.stringify(out));
        if (out.conflicts.length > 0) {
          // The remote events come with the pull, which meets them as
          // conflicts and resolves them; an aggregate the pull cannot
          // resolve (the token may push it but not pull it) is parked.
          const resolved = await this.#pull(0);
          for (const aggregate of out.conflicts) {
            if (!resolved.has(aggregate)) await this.#store.__syncResolve(aggregate, "park");
          }
          break;
        }
      }
    }
  }

  /** Pulls until the server has nothing more; returns the aggregates whose conflicts were resolved. */
  async #pull(wait, signal) {
    const resolved = new Set();
    const get = (after, wait) => {
      const query = `after=${after}&limit=${PAGE}&wait=${wait}&log=${encodeURIComponent(this.#counts.log ?? "")}`;
      return this.#fetch("GET", `/v1/pull?${query}`, undefined, signal, wait);
    };
    let next = get(this.#counts.cursor, wait);
    for (let page = 0; page < 100_000; page++) {
      const response = await next;
      next = null;
      if (response.status !== 200) {
        const e = await httpError("pull", response);
        if (response.status === 412) e.fatal = true;
        throw e;
      }
      const text = await response.text();
      // While this page is applied, the next one is on its way: the
      // answer ends with its cursor and whether there is more.
      const tail = /"cursor":(\d+),"more":true/.exec(text.slice(-200));
      if (tail) next = get(Number(tail[1]), 0).catch((e) => e);
      const out = await this.#store.__syncApply(text);
      debug("applied", this.#store.name, JSON.stringify({ ...out, conflict: out.conflict?.aggregate }));
      this.#counts.cursor = out.cursor;
      if (out.conflict) {
        await this.#resolve(out.conflict);
        resolved.add(out.conflict.aggregate.join("."));
        next = get(this.#counts.cursor, 0);
        continue;
      }
      if (!out.more) return resolved;
      next ??= get(this.#counts.cursor, 0);
      const settled = await next;
      if (settled instanceof Error) throw settled;
      next = settled;
    }
    return resolved;
  }

  async #resolve({ aggregate, pending, remote }) {
    let decision = "park";
    if (this.#onConflict) {
      try {
        decision = await this.#onConflict({ aggregate, pending: pending.map(asEvent), remote: remote.map(asEvent) });
      } catch (e) {
        this.#error = syncError("CONFLICT", `onConflict threw for ${aggregate.join(".")}: ${e?.message ?? e}`, { cause: e });
      }
    }
    if (decision !== "rebase" && decision !== "discard") decision = "park";
    await this.#store.__syncResolve(aggregate.join("."), decision);
  }

  /** Conflicts parked earlier (no onConflict then) get a decision now, if there is an onConflict. */
  async #resolveParked() {
    if (!this.#onConflict) return;
    for (const conflict of await this.#store.__syncParked()) await this.#resolve(conflict);
  }

  /** Live: one long poll at a time until woken (a local push, a flush, online). */
  async #live() {
    while (!this.#stopped && !this.#woken) {
      const controller = new AbortController();
      this.#poll = controller;
      try {
        await this.#pull(LONG_POLL_S, controller.signal);
        await this.#refresh();
      } catch (e) {
        if (controller.signal.aborted) break;
        throw e;
      } finally {
        this.#poll = null;
      }
    }
    this.#woken = false;
  }

  async #settleFlushes() {
    if (this.#flushes.length === 0) return;
    const c = await this.#store.__syncCounts();
    // status() right after a flush resolves tells what the flush saw.
    this.#take(c);
    debug("settle flushes", JSON.stringify(c), JSON.stringify(this.#flushes));
    for (const f of [...this.#flushes]) {
      if (f.head === null || f.last === null) continue;
      if (f.log !== undefined && c.log !== null && f.log !== c.log) {
        // Asked of a server that now has another log.
        this.#flushes.splice(this.#flushes.indexOf(f), 1);
        f.reject(syncError("SYNC", `LOG_MISMATCH: the server now has log ${JSON.stringify(f.log)}, this store synced with ${JSON.stringify(c.log)}; nothing was mixed`));
        continue;
      }
      const sent = c.pending === 0 || c.settled >= f.last;
      const pulled = c.cursor >= f.head;
      if (sent && pulled) {
        this.#flushes.splice(this.#flushes.indexOf(f), 1);
        f.resolve();
      } else if (c.conflicts > 0 && pulled) {
        this.#flushes.splice(this.#flushes.indexOf(f), 1);
        f.reject(syncError("CONFLICT", `${c.conflicts} pending events conflict with the server's and wait for a decision (pass onConflict to sync())`));
      }
    }
    // Another tab leads: it does the work; look again shortly.
    if (this.#flushes.length > 0 && !this.#leading) setTimeout(() => this.#settleFlushes(), 200);
  }

  /** A refresh now, or once more after the one under way (never two at once). */
  async #refreshSoon() {
    if (this.#refreshing) {
      this.#refreshAgain = true;
      return;
    }
    this.#refreshing = true;
    do {
      this.#refreshAgain = false;
      await this.#refresh();
    } while (this.#refreshAgain);
    this.#refreshing = false;
  }

  /** Counts read from storage become status()'s (the leader's pull cursor may be ahead of them). */
  #take(c) {
    this.#counts = this.#leading ? { ...c, cursor: Math.max(c.cursor, this.#counts.cursor) } : c;
  }

  async #refresh() {
    if (this.#stopped) return;
    try {
      const c = await this.#store.__syncCounts();
      this.#take(c);
      if (!this.#leading) await this.#followerFlushes();
    } catch (e) {
      if (e?.code === "CLOSED") this.stop();
    }
  }

  /** A tab that does not lead settles its flushes from storage, once it knows the server's head. */
  async #followerFlushes() {
    for (const f of this.#flushes) {
      if (f.head !== null || f.asking) continue;
      f.asking = true;
      this.#json("GET", "/v1/info").then(
        async (info) => {
          f.last = (await this.#store.__syncCounts()).last;
          f.log = info.log;
          f.head = info.head;
        },
        () => {},
      ).finally(() => { f.asking = false; });
    }
    await this.#settleFlushes();
  }

  // ------------------------------------------------------------ transport

  async #fetch(method, path, body, signal, waitSeconds = 0) {
    if (this.#stopped) throw stopped();
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), REQUEST_TIMEOUT_MS + waitSeconds * 1000);
    const signals = [timeout.signal, this.#stopController.signal, signal].filter(Boolean);
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.#token !== undefined) headers.Authorization = `Bearer ${this.#token}`;
    try {
      return await fetch(this.#base + path, { method, headers, body, signal: AbortSignal.any ? AbortSignal.any(signals) : signals[0], cache: "no-store" });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw syncError("SYNC", `${method} ${this.#base}${path}: the server is unreachable (${e?.message ?? e})`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  async #json(method, path) {
    const response = await this.#fetch(method, path);
    if (response.status !== 200) throw await httpError(path, response);
    try {
      return await response.json();
    } catch (e) {
      throw syncError("SYNC", `${path}: the answer is not JSON (${e.message})`, { status: 200 });
    }
  }

  // ------------------------------------------------------------ waiting

  #wake() {
    this.#woken = true;
    this.#abortPoll();
    for (const w of this.#wakeups.splice(0)) w();
  }

  #abortPoll() {
    this.#poll?.abort();
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); resolve(); };
      const timer = setTimeout(done, ms);
      this.#wakeups.push(done);
    });
  }
}
