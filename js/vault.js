// The key vault of encryption at rest (issue 11): per store, a file in the
// Origin Private File System holding fixed-size key slots, written and
// overwritten in place through a FileSystemSyncAccessHandle, so that
// destroying a key (crypto-shredding) overwrites its bytes in the file
// itself. docs/privacy.md, "Key vault", has the file layout, the rules and
// what was measured on disk. For the store's own use, not a public API.
//
//   const vault = await Vault.open("my-app", { create: true });
//   const [{ slot, key }] = await vault.create(1); // key: AES-GCM CryptoKey, not extractable
//   const keys = await vault.keys([slot]);          // Map slot -> CryptoKey | null
//   await vault.destroy([slot]);                    // resolves after flush()
//   vault.close();
//   await Vault.delete("my-app");
//
// Sync access handles exist only in dedicated workers: in a window the
// vault starts a worker of its own from a Blob URL made of `vaultCore`'s
// source (no file for the app to serve); in a dedicated worker it runs
// `vaultCore` in that worker. Either way operations take the Web Lock
// `eventstore-wasm:vault:<name>` and open the file's sync access handle,
// so that tabs and workers take turns (a sync access handle is exclusive
// per file); every write is flushed before its operation resolves. Lock
// and handle are kept for the next operation while operations keep coming,
// given back when another context asks, after 50 ms idle or 200 ms
// held (see "Sessions" below).

/** Raises an Error with `code` (SPEC section 6) and extra fields. */
const fail = (code, message, extra) => Object.assign(new Error(message), { code }, extra);

/**
 * The vault's file operations, run in a dedicated worker: `vaultCore(scope)`
 * returns `run(op, args)`. Its source becomes the window's worker (via
 * Function.prototype.toString), so it must not use anything from this
 * module: everything it needs is inside it.
 */
export function vaultCore(scope) {
  const DIR = "eventstore-wasm";
  const MAGIC = [0x45, 0x53, 0x57, 0x4b, 0x45, 0x59, 0x53, 0x31]; /* "ESWKEYS1" */
  const VERSION = 2;
  const HEADER = 64; /* magic, u32 format version, u32 slot size, zeros */
  const SLOT = 96; /* u8 status, 32 key bytes, 32 bytes SHA-256 of the aggregate (zeros: none), zeros */
  const KEY = 32;
  const HASH = 1 + KEY; /* where the aggregate's hash starts in a slot */
  const LIVE = 1;
  const DESTROYED = 2;
  const RETIRED = 3; /* rotated: still decrypts, no longer used to encrypt */
  /*
   * Reserved by one open vault (its owner token where the hash goes, see
   * `reserve`): decrypts; bound to an aggregate (LIVE or RETIRED) by
   * `bind`. Writes sealed under it may be stored before that bind lands:
   * the store records such slots with the write (docs/privacy.md,
   * "Reserved slots").
   */
  const RESERVED = 4;
  const OWNER = 16; /* owner token bytes */
  const BUSY_MS = 10000; /* how long a handle held elsewhere is waited for */

  const error = (code, message, extra) => Object.assign(new Error(message), { code }, extra);
  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

  /** The vault file's name: as docs/privacy.md says (long names hashed). */
  function fileName(name) {
    let enc = encodeURIComponent(name);
    if (enc.length > 200) {
      let h = 0xcbf29ce484222325n;
      for (const b of new TextEncoder().encode(name)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
      enc = `${enc.slice(0, 150)}~${h.toString(16).padStart(16, "0")}`;
    }
    return `${enc}.keys`;
  }

  function supported() {
    const proto = scope.FileSystemFileHandle && scope.FileSystemFileHandle.prototype;
    if (!scope.isSecureContext) return "the page is not a secure context (https or localhost), so it has no Origin Private File System";
    if (!scope.navigator.storage || typeof scope.navigator.storage.getDirectory !== "function") return "this browser has no Origin Private File System (navigator.storage.getDirectory)";
    if (!proto || typeof proto.createSyncAccessHandle !== "function") return "this browser has no FileSystemSyncAccessHandle in workers";
    if (!scope.crypto || !scope.crypto.subtle) return "this browser has no WebCrypto (crypto.subtle)";
    return null;
  }

  /** The vault files' handles, kept between operations (1.4 ms less each in Chromium). */
  const handles = new Map();

  async function fileHandle(name, create) {
    if (handles.has(name)) return handles.get(name);
    const root = await scope.navigator.storage.getDirectory();
    try {
      const dir = await root.getDirectoryHandle(DIR, { create });
      const file = await dir.getFileHandle(fileName(name), { create });
      handles.set(name, file);
      return file;
    } catch (e) {
      if (e && e.name === "NotFoundError") {
        throw error("DATA_LOST", `vault: the key vault of store ${JSON.stringify(name)} does not exist (OPFS file ${DIR}/${fileName(name)})`, { reason: "no-vault" });
      }
      throw e;
    }
  }

  /**
   * Opens the sync access handle of `file`. Another context holding one
   * (which the Web Lock prevents, unless Web Locks are missing or another
   * copy of the library does not take it) makes this wait, bounded.
   */
  async function accessHandle(file, name) {
    for (let waited = 0; ; waited += 20) {
      try {
        return await file.createSyncAccessHandle();
      } catch (e) {
        if (!e || e.name !== "NoModificationAllowedError" || waited >= BUSY_MS) {
          if (e && e.name === "NotFoundError") {
            handles.delete(name);
            throw error("DATA_LOST", `vault: the key vault of store ${JSON.stringify(name)} was deleted`, { reason: "no-vault" });
          }
          if (e && e.name !== "NoModificationAllowedError" && e.name !== "QuotaExceededError") {
            /* WebKitGTK 2.50 with OPFS turned on: NotSupportedError, then InvalidStateError for that file. */
            throw error("STORAGE", `vault: this browser cannot open a FileSystemSyncAccessHandle (${e.name}: ${e.message}); the key vault of an encrypted store needs it`,
              e.name === "NotSupportedError" || e.name === "SecurityError" ? { reason: "unsupported" } : undefined);
          }
          if (e && e.name === "NoModificationAllowedError") {
            throw error("STORAGE", `vault: the key vault of store ${JSON.stringify(name)} stayed in use elsewhere for ${BUSY_MS / 1000} s`, { cause: e });
          }
          throw e;
        }
        await sleep(20);
      }
    }
  }

  /** Writes the header of an empty file, or checks the file's. */
  async function header(h, name) {
    const size = await h.getSize();
    if (size === 0) {
      const head = new Uint8Array(HEADER);
      head.set(MAGIC);
      const view = new DataView(head.buffer);
      view.setUint32(8, VERSION, true);
      view.setUint32(12, SLOT, true);
      writeAt(h, head, 0);
      await h.flush();
      return;
    }
    const head = new Uint8Array(Math.min(HEADER, size));
    h.read(head, { at: 0 });
    if (size < HEADER || MAGIC.some((b, i) => head[i] !== b)) {
      throw error("STORAGE", `vault: the key vault file of store ${JSON.stringify(name)} is not a key vault (bad header)`);
    }
    const view = new DataView(head.buffer);
    const version = view.getUint32(8, true);
    if (version !== VERSION || view.getUint32(12, true) !== SLOT) {
      throw error("VERSION_MISMATCH", `vault: the key vault of store ${JSON.stringify(name)} has format ${version}, this library reads format ${VERSION}`);
    }
  }

  /** The number of slot positions in a file of `size` bytes (a torn last slot counts, so it is never reused). */
  const slotCount = (size) => Math.max(0, Math.ceil((size - HEADER) / SLOT));

  /** Imports 32 key bytes as a non-extractable AES-GCM key, then zeroes them. */
  async function importKey(bytes) {
    try {
      return await scope.crypto.subtle.importKey("raw", bytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
    } finally {
      bytes.fill(0);
    }
  }

  /*
   * Sessions. Taking the lock and opening the file's sync access handle
   * (then checking its header) cost about 2 ms in Chromium, more than most
   * operations themselves, and a push that meets new aggregates asks for
   * keys every time. So the lock and the open handle are kept between
   * operations while this context keeps using them. They are given back
   * as soon as another context asks for them (a message on a
   * BroadcastChannel, sent before it waits for the lock; the holder ends
   * its session when its current operation is done), after LINGER_MS
   * idle, and after HOLD_MS in any case.
   */
  const LINGER_MS = 50;
  const HOLD_MS = 200;
  /** name -> { h, release, since, busy, wanted, timer }: a file held between operations. */
  const sessions = new Map();
  /** name -> the tail of its operations, which run one at a time. */
  const queues = new Map();
  /** name -> the BroadcastChannel on which contexts ask each other for the vault. */
  const turns = new Map();
  /** Names asked for while no session of theirs was open here (see turnChannel). */
  const asked = new Set();

  /** The channel of vault `name` on which a context waiting for it says so. */
  function turnChannel(name) {
    if (typeof scope.BroadcastChannel !== "function") return null;
    let c = turns.get(name);
    if (!c) {
      c = new scope.BroadcastChannel(`eventstore-wasm:vault-turn:${name}`);
      c.onmessage = () => {
        const s = sessions.get(name);
        // Asked while this context is still opening its session: it ends
        // that session after its first operation.
        if (!s) asked.add(name);
        else if (s.busy) s.wanted = true;
        else enqueue(name, () => (sessions.get(name) === s ? endSession(name) : undefined)).catch(() => {});
      };
      turns.set(name, c);
    }
    return c;
  }

  /** Runs `task` after every operation on vault `name` queued before it. */
  function enqueue(name, task) {
    const run = (queues.get(name) ?? Promise.resolve()).then(task);
    const tail = run.catch(() => {});
    queues.set(name, tail);
    tail.then(() => {
      if (queues.get(name) === tail) queues.delete(name);
    });
    return run;
  }

  /** Takes the vault's Web Lock until the returned function is called. */
  function acquire(name) {
    const locks = scope.navigator.locks;
    if (!locks || typeof locks.request !== "function") return Promise.resolve(() => {});
    return new Promise((granted, failed) => {
      locks.request(`eventstore-wasm:vault:${name}`, () => new Promise((release) => granted(release))).catch(failed);
    });
  }

  /** Closes the session of vault `name`, if any: the handle, then the lock. */
  async function endSession(name) {
    const s = sessions.get(name);
    if (!s) return;
    sessions.delete(name);
    clearTimeout(s.timer);
    const all = slotsOf.get(s.h);
    if (all) {
      all.bytes.fill(0);
      liveOf.delete(all);
    }
    slotsOf.delete(s.h);
    try {
      await s.h.close();
    } finally {
      s.release();
    }
  }

  /** One batch with the file's handle open, under the lock; `fn(handle)`. */
  function withFile(name, create, fn) {
    const why = supported();
    if (why) return Promise.reject(error("STORAGE", `vault: ${why}; the key vault of an encrypted store needs it`, { reason: "unsupported" }));
    return enqueue(name, async () => {
      let s = sessions.get(name);
      if (s) clearTimeout(s.timer);
      else {
        turnChannel(name)?.postMessage("want");
        asked.delete(name);
        const release = await acquire(name);
        try {
          const file = await fileHandle(name, create);
          const h = await accessHandle(file, name);
          try {
            await header(h, name);
          } catch (e) {
            try {
              await h.close();
            } catch {
              /* the header's error is the one to report */
            }
            throw e;
          }
          s = { h, release, since: performance.now(), busy: false, wanted: asked.delete(name), timer: 0 };
          sessions.set(name, s);
        } catch (e) {
          release();
          throw e;
        }
      }
      s.busy = true;
      try {
        const out = await fn(s.h);
        s.busy = false;
        // The operation is done: a failure to close its handle is not its own.
        if (s.wanted || performance.now() - s.since >= HOLD_MS) await endSession(name).catch(() => {});
        else {
          s.timer = setTimeout(() => {
            if (!s.busy && sessions.get(name) === s) enqueue(name, () => (sessions.get(name) === s ? endSession(name) : undefined)).catch(() => {});
          }, LINGER_MS);
        }
        return out;
      } catch (e) {
        await endSession(name).catch(() => {});
        throw e;
      }
    });
  }

  /** SHA-256 of each name's UTF-8 (Uint8Arrays). */
  const hashes = (names) =>
    Promise.all(names.map(async (n) => new Uint8Array(await scope.crypto.subtle.digest("SHA-256", new TextEncoder().encode(n)))));
  /**
   * A hash's bytes as a Map key: a string of one char per byte (a vault of
   * thousands of slots is indexed in well under a millisecond; hex strings
   * made byte by byte took 4 ms per 1,000 slots).
   */
  const hashKey = (bytes) => String.fromCharCode.apply(null, bytes);
  /** The hash key of slot `s` of every slot's `bytes`. */
  const slotHash = (bytes, s) => hashKey(bytes.subarray(s * SLOT + HASH, s * SLOT + HASH + KEY));

  /**
   * Every slot's bytes as read by the session holding `h`: read once per
   * session, then kept up to date by put() (nobody else writes while the
   * session holds the lock), and zeroed when the session ends.
   */
  const slotsOf = new WeakMap();

  /** Every slot's bytes, { count, bytes } (one read per session). */
  async function allSlots(h) {
    const known = slotsOf.get(h);
    if (known) return known;
    const count = slotCount(await h.getSize());
    const bytes = new Uint8Array(count * SLOT);
    h.read(bytes, { at: HEADER });
    const all = { count, bytes };
    slotsOf.set(h, all);
    return all;
  }

  /** Writes `bytes` at file offset `at`, all of them or a STORAGE error. */
  function writeAt(h, bytes, at) {
    const written = h.write(bytes, { at });
    if (written !== bytes.length) throw error("STORAGE", `vault: wrote ${written} of ${bytes.length} bytes`);
  }

  /** Writes `bytes` at file offset `at` (past the header), and into the session's copy of the slots. */
  function put(h, bytes, at) {
    writeAt(h, bytes, at);
    const all = slotsOf.get(h);
    if (!all) return;
    liveOf.delete(all);
    const from = at - HEADER;
    const to = from + bytes.length;
    if (to > all.bytes.length) {
      const count = Math.ceil(to / SLOT);
      const grown = new Uint8Array(count * SLOT);
      grown.set(all.bytes);
      all.bytes.fill(0);
      all.bytes = grown;
      all.count = count;
    }
    all.bytes.set(bytes, from);
  }

  /**
   * Hash key -> live slot, from every slot's bytes: made once per session
   * and kept while only bind() changes slots (it keeps the map up to date
   * itself); any put() drops it. (Made again for each bind, it cost the
   * worker a tenth of a millisecond per thousand slots, every bind.)
   */
  const liveOf = new WeakMap();
  function liveSlots(all) {
    const known = liveOf.get(all);
    if (known) return known;
    const { count, bytes } = all;
    const live = new Map();
    for (let s = 0; s < count; s++) {
      if (bytes[s * SLOT] === LIVE) live.set(slotHash(bytes, s), s);
    }
    liveOf.set(all, live);
    return live;
  }

  /**
   * Writes whole slots of the session's copy (changed there first) to the
   * file: each run of consecutive slots in one write (a bind of the
   * reserved slots a push took is one run).
   */
  function writeSlots(h, all, slots) {
    const sorted = [...slots].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1] + 1) j++;
      writeAt(h, all.bytes.subarray(sorted[i] * SLOT, (sorted[j - 1] + 1) * SLOT), HEADER + sorted[i] * SLOT);
      i = j;
    }
  }

  /** Appends a live slot per hash at slot `first` on; resolves to their keys' bytes. */
  async function appendSlots(h, first, list) {
    const bytes = new Uint8Array(list.length * SLOT);
    list.forEach((hash, i) => {
      bytes[i * SLOT] = LIVE;
      scope.crypto.getRandomValues(bytes.subarray(i * SLOT + 1, i * SLOT + 1 + KEY));
      bytes.set(hash, i * SLOT + HASH);
    });
    put(h, bytes, HEADER + first * SLOT);
    await h.flush();
    const keys = list.map((_, i) => bytes.slice(i * SLOT + 1, i * SLOT + 1 + KEY));
    bytes.fill(0);
    return keys;
  }

  const ops = {
    /**
     * The live slot and raw key bytes of each aggregate, [[aggregate,
     * slot, bytes]]; with `create`, a live slot is made for those without
     * one (under the lock, so never two live slots for one aggregate).
     */
    keysFor: (name, aggregates, create) =>
      withFile(name, false, async (h) => {
        const hs = await hashes(aggregates);
        const all = await allSlots(h);
        const live = liveSlots(all);
        const out = [];
        const missing = [];
        aggregates.forEach((a, i) => {
          const slot = live.get(hashKey(hs[i]));
          if (slot === undefined) missing.push(i);
          else out.push([a, slot, all.bytes.slice(slot * SLOT + 1, slot * SLOT + 1 + KEY)]);
        });
        if (create && missing.length > 0) {
          const first = all.count; /* appendSlots grows `all` */
          const keys = await appendSlots(h, first, missing.map((i) => hs[i]));
          missing.forEach((i, k) => out.push([aggregates[i], first + k, keys[k]]));
        }
        return out;
      }),

    /** [[slot, bytes | null | undefined]]: null for a destroyed slot, undefined for one not written. */
    rawKeys: (name, slots) =>
      withFile(name, false, async (h) => {
        const all = await allSlots(h);
        const out = slots.map((s) => {
          if (s >= all.count) return [s, undefined];
          const status = all.bytes[s * SLOT];
          if (status === LIVE || status === RETIRED || status === RESERVED) return [s, all.bytes.slice(s * SLOT + 1, s * SLOT + 1 + KEY)];
          return [s, status === DESTROYED ? null : undefined];
        });
        return out;
      }),

    /**
     * [[slot, bytes | null, hash | null]] for every slot written: its key
     * (null: destroyed) and, for a live slot, its aggregate's SHA-256: a
     * keyring's load (one read).
     */
    allKeys: (name) =>
      withFile(name, false, async (h) => {
        const all = await allSlots(h);
        const out = [];
        for (let s = 0; s < all.count; s++) {
          const status = all.bytes[s * SLOT];
          const key = () => all.bytes.slice(s * SLOT + 1, s * SLOT + 1 + KEY);
          if (status === LIVE) out.push([s, key(), all.bytes.slice(s * SLOT + HASH, s * SLOT + HASH + KEY)]);
          else if (status === RETIRED || status === RESERVED) out.push([s, key(), null]);
          else if (status === DESTROYED) out.push([s, null, null]);
        }
        return out;
      }),

    /**
     * `n` slots reserved, appended, [[slot, bytes]]: status RESERVED with a
     * fresh key and `owner` (a hex token, or null) where the hash goes; on
     * disk before it resolves. A reserved slot is never handed out again
     * (a write sealed under it may be stored before its bind lands).
     */
    reserve: (name, n, owner) =>
      withFile(name, false, async (h) => {
        const all = await allSlots(h);
        const first = all.count;
        const bytes = new Uint8Array(n * SLOT);
        const token = new Uint8Array(OWNER);
        if (owner !== null) for (let i = 0; i < OWNER; i++) token[i] = parseInt(owner.slice(2 * i, 2 * i + 2), 16);
        for (let i = 0; i < n; i++) {
          bytes[i * SLOT] = RESERVED;
          scope.crypto.getRandomValues(bytes.subarray(i * SLOT + 1, i * SLOT + 1 + KEY));
          bytes.set(token, i * SLOT + HASH);
        }
        try {
          put(h, bytes, HEADER + first * SLOT);
          await h.flush();
          return Array.from({ length: n }, (_, i) => [first + i, bytes.slice(i * SLOT + 1, i * SLOT + 1 + KEY)]);
        } finally {
          bytes.fill(0);
        }
      }),

    /**
     * Binds reserved slots to aggregates, pairs [[aggregate, slot, hash?]]
     * (hash: the SHA-256 of the aggregate's name, computed here if absent): a
     * reserved slot becomes its aggregate's live slot or, when the
     * aggregate has one already (made elsewhere meanwhile), a retired slot
     * of it (it still decrypts what was sealed under it, and a shred of the
     * aggregate destroys it). Idempotent: a slot already bound to that
     * aggregate, or destroyed, is left as it is (a recovery may bind what
     * its owner bound). [[aggregate, live slot | null, bytes | null]]: the
     * aggregate's live slot now, with its key bytes when it is not the
     * slot given. Flushed.
     */
    bind: (name, pairs) =>
      withFile(name, false, async (h) => {
        const all = await allSlots(h);
        // The caller may give each aggregate's hash (the store's keyring has it).
        const given = pairs.every((p) => p[2] instanceof Uint8Array && p[2].length === KEY);
        const hs = given ? pairs.map((p) => p[2]) : await hashes(pairs.map(([a]) => a));
        const live = liveSlots(all);
        const statusOf = (slot) => (slot < all.count ? all.bytes[slot * SLOT] : 0);
        pairs.forEach(([a, slot], i) => {
          const status = statusOf(slot);
          const mine = (status === LIVE || status === RETIRED) && slotHash(all.bytes, slot) === hashKey(hs[i]);
          if (status !== RESERVED && status !== DESTROYED && !mine) {
            throw error("STORAGE", `vault: slot ${slot} of the key vault of store ${JSON.stringify(name)} is neither reserved nor ${JSON.stringify(a)}'s (the vault does not belong to this database, or it was replaced)`);
          }
        });
        // Each reserved slot given gets its hash and status in the
        // session's copy (and `live`), then the changed slots go to the
        // file together, and are flushed before the answer. A failed
        // write ends the session (withFile), dropping the copy.
        const changed = [];
        const out = pairs.map(([a, slot], i) => {
          const k = hashKey(hs[i]);
          if (statusOf(slot) === RESERVED) {
            const now = live.get(k);
            all.bytes.set(hs[i], slot * SLOT + HASH);
            all.bytes[slot * SLOT] = now === undefined ? LIVE : RETIRED;
            if (now === undefined) live.set(k, slot);
            changed.push(slot);
          }
          const now = live.get(k);
          if (now === undefined) return [a, null, null];
          return [a, now, now === slot ? null : all.bytes.slice(now * SLOT + 1, now * SLOT + 1 + KEY)];
        });
        if (changed.length > 0) {
          writeSlots(h, all, changed);
          await h.flush();
        }
        return out;
      }),

    /**
     * Destroys the retired slots of each aggregate (a shred's old keys,
     * after its rotation), and of `slots` (the aggregates' slots writes
     * recorded before their binds landed) those still reserved (a bound
     * one is the aggregate's retired slot by then, or another's, or live).
     * The slots destroyed.
     */
    shred: (name, aggregates, slots = []) =>
      withFile(name, false, async (h) => {
        const wanted = new Set((await hashes(aggregates)).map(hashKey));
        const all = await allSlots(h);
        const dead = new Uint8Array(SLOT);
        dead[0] = DESTROYED;
        const extra = new Set(slots);
        const done = [];
        for (let s = 0; s < all.count; s++) {
          const status = all.bytes[s * SLOT];
          const retiredHere = status === RETIRED && wanted.has(slotHash(all.bytes, s));
          if (!retiredHere && !(extra.has(s) && status === RESERVED)) continue;
          put(h, dead, HEADER + s * SLOT);
          done.push(s);
        }
        await h.flush();
        return done;
      }),

    /**
     * A new live slot per aggregate; the old live one (if any) is retired
     * (still decrypts until destroyed). [[aggregate, slot, bytes, old]].
     */
    rotate: (name, aggregates) =>
      withFile(name, false, async (h) => {
        const hs = await hashes(aggregates);
        const all = await allSlots(h);
        const live = liveSlots(all);
        const olds = hs.map((hash) => live.get(hashKey(hash)) ?? null);
        for (const old of olds) if (old !== null) put(h, new Uint8Array([RETIRED]), HEADER + old * SLOT);
        const first = all.count; /* appendSlots grows `all` */
        const keys = await appendSlots(h, first, hs);
        return aggregates.map((a, i) => [a, first + i, keys[i], olds[i]]);
      }),


    /** Checks (or with `create`, makes) the vault file; resolves to its slot count. */
    open: (name, create) => withFile(name, create, async (h) => slotCount(await h.getSize())),

    /** n new live slots: [{ slot, key }], written and flushed before the keys are imported. */
    create: (name, n) =>
      withFile(name, false, async (h) => {
        const first = slotCount(await h.getSize());
        const bytes = new Uint8Array(n * SLOT);
        for (let i = 0; i < n; i++) {
          bytes[i * SLOT] = LIVE;
          scope.crypto.getRandomValues(bytes.subarray(i * SLOT + 1, i * SLOT + 1 + KEY));
        }
        try {
          put(h, bytes, HEADER + first * SLOT);
          await h.flush();
          const out = [];
          for (let i = 0; i < n; i++) out.push({ slot: first + i, key: await importKey(bytes.slice(i * SLOT + 1, i * SLOT + 1 + KEY)) });
          return out;
        } finally {
          bytes.fill(0);
        }
      }),

    /** [[slot, CryptoKey | null]]: null for a destroyed slot, undefined for one not written yet. */
    keys: (name, slots) =>
      withFile(name, false, async (h) => {
        const count = slotCount(await h.getSize());
        const out = [];
        const buf = new Uint8Array(SLOT);
        try {
          for (const slot of slots) {
            if (slot >= count) {
              out.push([slot, undefined]);
              continue;
            }
            buf.fill(0);
            h.read(buf, { at: HEADER + slot * SLOT });
            if (buf[0] === LIVE || buf[0] === RETIRED || buf[0] === RESERVED) out.push([slot, await importKey(buf.slice(1, 1 + KEY))]);
            else out.push([slot, buf[0] === DESTROYED ? null : undefined]);
          }
        } finally {
          buf.fill(0);
        }
        return out;
      }),

    /** Overwrites the slots in place (status 2, zeros), then flushes. */
    destroy: (name, slots) =>
      withFile(name, false, async (h) => {
        const count = slotCount(await h.getSize());
        const dead = new Uint8Array(SLOT); /* the key and the aggregate's hash overwritten with zeros */
        dead[0] = DESTROYED;
        const done = [];
        for (const slot of slots) {
          if (slot >= count) continue;
          put(h, dead, HEADER + slot * SLOT);
          done.push(slot);
        }
        await h.flush();
        return done;
      }),

    /** Overwrites the whole file with zeros, flushes, and removes it. */
    delete: async (name) => {
      const why = supported();
      if (why) throw error("STORAGE", `vault: ${why}`, { reason: "unsupported" });
      // This core is a fresh one (Vault.delete's own runner): no session
      // of its own; one elsewhere is asked to hand the vault over.
      turnChannel(name)?.postMessage("want");
      const release = await acquire(name);
      try {
        const root = await scope.navigator.storage.getDirectory();
        let dir;
        try {
          dir = await root.getDirectoryHandle(DIR);
          const file = await dir.getFileHandle(fileName(name));
          const h = await accessHandle(file, name);
          try {
            const zeros = new Uint8Array(64 * 1024);
            const size = await h.getSize();
            for (let at = 0; at < size; at += zeros.length) writeAt(h, zeros.subarray(0, Math.min(zeros.length, size - at)), at);
            await h.flush();
          } finally {
            await h.close();
          }
          await dir.removeEntry(fileName(name));
          handles.delete(name);
          return true;
        } catch (e) {
          if (e && e.name === "NotFoundError") return false;
          throw e;
        }
      } finally {
        release();
      }
    },

    /**
     * From any context (no sync access handle needed): "none" when store
     * `name` has no vault file, "removed" when it had one holding no key
     * slot (made by an open that failed next) and removed it, "keys" when
     * it holds slots (to be overwritten by `delete`, in a worker).
     */
    dropEmpty: async (name) => {
      /* No OPFS here (Node, an old browser): no vault either. */
      const storage = scope.navigator?.storage;
      if (!storage || typeof storage.getDirectory !== "function") return "none";
      try {
        const dir = await (await storage.getDirectory()).getDirectoryHandle(DIR);
        const size = async () => (await (await dir.getFileHandle(fileName(name))).getFile()).size;
        if ((await size()) > HEADER) return "keys";
        // Under the lock (a session elsewhere is asked to give it and its handle back).
        turnChannel(name)?.postMessage("want");
        const release = await acquire(name);
        try {
          if ((await size()) > HEADER) return "keys";
          await dir.removeEntry(fileName(name));
        } finally {
          release();
        }
        handles.delete(name);
        return "removed";
      } catch (e) {
        /* OPFS not usable (not a secure context), no directory, no file. */
        if (["NotFoundError", "SecurityError", "TypeMismatchError"].includes(e?.name)) return "none";
        throw e;
      }
    },
  };

  const run = async (op, args) => ops[op](...args);
  /** Ends every session (handles closed, locks released) and closes the turn channels (a vault closed in its own worker). */
  run.close = () => {
    for (const name of [...sessions.keys()]) endSession(name).catch(() => {});
    for (const c of turns.values()) c.close();
    turns.clear();
  };
  return run;
}

/** The Web Lock an open Vault holds, + name + ":" + its owner token. */
const OWNER_LOCK = "eventstore-wasm:vault-owner:";

/**
 * Takes a Web Lock of its own for an open Vault of `name`: { token, release },
 * or null without Web Locks. Slots it reserves carry the token, and the store
 * keys what it records of their binds by it; once the lock is gone (closed,
 * or its page or worker ended), another connection finishes those binds.
 */
async function ownerLock(name) {
  const locks = globalThis.navigator?.locks;
  if (!locks || typeof locks.request !== "function" || typeof locks.query !== "function") return null;
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  const token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  try {
    const release = await new Promise((granted, failed) => {
      locks.request(`${OWNER_LOCK}${name}:${token}`, () => new Promise((done) => granted(done))).catch(failed);
    });
    return { token, release };
  } catch {
    return null;
  }
}

/** Whether this global is a dedicated worker (which may open sync access handles itself). */
const inDedicatedWorker = () =>
  typeof globalThis.DedicatedWorkerGlobalScope === "function" && globalThis instanceof globalThis.DedicatedWorkerGlobalScope;

/** The worker's script: vaultCore, answering { id, op, args } with { id, value } or { id, error }. */
const WORKER_SOURCE = `const run = (${vaultCore.toString()})(self);
self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    self.postMessage({ id, value: await run(op, args) });
  } catch (e) {
    const plain = e !== null && typeof e === "object";
    self.postMessage({ id, error: { name: plain ? e.name : "Error", message: plain ? String(e.message) : String(e), code: plain ? e.code : undefined, reason: plain ? e.reason : undefined } });
  }
};
`;

/** An error from the worker as an Error with a SPEC code (DOMExceptions: STORAGE or QUOTA_EXCEEDED). */
function fromWorker(e) {
  if (e.code && typeof e.code === "string") return fail(e.code, e.message, e.reason ? { reason: e.reason } : undefined);
  const code = e.name === "QuotaExceededError" ? "QUOTA_EXCEEDED" : "STORAGE";
  return fail(code, `vault: ${e.name}: ${e.message}`, { cause: e });
}

/**
 * Starts a runner: `call(op, args)` and `close()`. In a dedicated worker it
 * is vaultCore itself; elsewhere a worker started from a Blob URL.
 */
function runner() {
  if (inDedicatedWorker()) {
    const run = vaultCore(globalThis);
    return {
      call: (op, args) => run(op, args).catch((e) => { throw e && typeof e.code === "string" ? e : fromWorker(e ?? {}); }),
      close: () => run.close(),
    };
  }
  if (globalThis.isSecureContext === false) {
    throw fail("STORAGE", "vault: the page is not a secure context (https or localhost), so it has no Origin Private File System; the key vault of an encrypted store needs it", { reason: "unsupported" });
  }
  if (typeof globalThis.Worker !== "function" || typeof globalThis.Blob !== "function" || typeof URL.createObjectURL !== "function") {
    throw fail("STORAGE", "vault: this context cannot start a dedicated worker, where the key vault's sync access handles live (open the store in a window or a dedicated worker)", { reason: "unsupported" });
  }
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  let worker;
  try {
    worker = new Worker(url, { name: "eventstore-wasm vault" });
  } catch (e) {
    URL.revokeObjectURL(url);
    throw fail("STORAGE", `vault: could not start the key vault's worker (a Content-Security-Policy without worker-src blob:?): ${e?.message ?? e}`, { cause: e, reason: "unsupported" });
  }
  const pending = new Map();
  let next = 0;
  let broken = null;
  const failAll = (err) => {
    broken = err;
    for (const { reject } of pending.values()) reject(err);
    pending.clear();
  };
  let loaded = false;
  worker.onmessage = ({ data }) => {
    // The Blob URL is needed only until the worker's script has run.
    if (!loaded) {
      loaded = true;
      URL.revokeObjectURL(url);
    }
    const p = pending.get(data.id);
    if (!p) return;
    pending.delete(data.id);
    if (data.error) p.reject(fromWorker(data.error));
    else p.resolve(data.value);
  };
  worker.onerror = (event) => {
    event.preventDefault?.();
    failAll(fail("STORAGE", `vault: the key vault's worker failed (a Content-Security-Policy without worker-src blob:?): ${event.message ?? "error"}`, { reason: "unsupported" }));
  };
  worker.onmessageerror = () => failAll(fail("STORAGE", "vault: a message from the key vault's worker could not be read"));
  return {
    call(op, args) {
      if (broken) return Promise.reject(broken);
      return new Promise((resolve, reject) => {
        const id = ++next;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, op, args });
      });
    },
    close() {
      worker.terminate();
      URL.revokeObjectURL(url);
      failAll(fail("CLOSED", "vault: the key vault was closed"));
    },
  };
}

function checkName(name) {
  if (typeof name !== "string" || name.length === 0) {
    throw fail("INVALID_ARGUMENT", `vault: the store name must be a non-empty string, got ${typeof name === "string" ? '""' : typeof name}`);
  }
  try {
    encodeURIComponent(name);
  } catch {
    throw fail("INVALID_ARGUMENT", `vault: the store name ${JSON.stringify(name)} holds a lone surrogate (not valid Unicode)`);
  }
}

function checkSlots(slots) {
  if (!Array.isArray(slots) && !(slots instanceof Set)) throw fail("INVALID_ARGUMENT", `vault: slots must be an array of slot numbers, got ${typeof slots}`);
  const list = [...new Set(slots)];
  for (const s of list) {
    if (!Number.isSafeInteger(s) || s < 0) throw fail("INVALID_ARGUMENT", `vault: a slot is an integer >= 0, got ${JSON.stringify(s) ?? String(s)}`);
  }
  return list;
}

/** One store's key vault (see the top of this file). */
export class Vault {
  #name;
  #runner;
  /** slot -> CryptoKey (live) or null (destroyed): what this vault has seen. */
  #seen = new Map();
  #channel = null;
  #closed = false;
  /** { token, release }: this vault's owner lock (see `reserve`), or null. */
  #owner = null;
  /** Slots other tabs and workers destroyed, until `takeDestroyed()`. */
  #destroyedElsewhere = new Set();
  /** Slots other tabs and workers retired (rotate), until `takeRetired()`. */
  #retiredElsewhere = new Set();

  constructor(name, runner) {
    this.#name = name;
    this.#runner = runner;
    // Destroys made by other tabs and workers reach this vault's cache.
    if (typeof globalThis.BroadcastChannel === "function") {
      this.#channel = new BroadcastChannel(`eventstore-wasm:vault:${name}`);
      this.#channel.onmessage = ({ data }) => {
        if (data?.destroyed) {
          for (const s of data.destroyed) {
            this.#seen.set(s, null);
            this.#destroyedElsewhere.add(s);
          }
        }
        if (data?.retired) for (const s of data.retired) this.#retiredElsewhere.add(s);
      };
    }
  }

  /**
   * Opens the key vault of store `name`. With `create: true` the file is
   * made when missing; without, a missing file rejects with code
   * `DATA_LOST` (`reason: "no-vault"`). Where OPFS sync access handles
   * cannot be used, rejects with code `STORAGE` (`reason: "unsupported"`).
   */
  static async open(name, { create = false } = {}) {
    checkName(name);
    const run = runner();
    let owner = null;
    try {
      await run.call("open", [name, create === true]);
      owner = await ownerLock(name);
    } catch (e) {
      run.close();
      throw e;
    }
    const vault = new Vault(name, run);
    vault.#owner = owner;
    return vault;
  }

  /** Removes the vault file of store `name` after overwriting it with zeros; resolves to whether there was one. */
  static async delete(name) {
    checkName(name);
    // Most stores are not encrypted: no worker is started for them, nor
    // for a vault file without keys.
    const here = vaultCore(globalThis);
    let found;
    try {
      found = await here("dropEmpty", [name]);
    } finally {
      here.close();
    }
    if (found !== "keys") return found === "removed";
    const run = runner();
    try {
      return await run.call("delete", [name]);
    } finally {
      run.close();
    }
  }

  /** The store name. */
  get name() {
    return this.#name;
  }

  /** This vault's owner token (hex; its Web Lock is held while it is open), or null without Web Locks. */
  get owner() {
    return this.#owner?.token ?? null;
  }

  /**
   * The owner tokens of the vaults of this store open anywhere (this
   * origin's Web Locks), or null when Web Locks cannot tell.
   */
  async openOwners() {
    const locks = globalThis.navigator?.locks;
    if (!locks || typeof locks.query !== "function") return null;
    const prefix = `${OWNER_LOCK}${this.#name}:`;
    const { held = [], pending = [] } = await locks.query();
    return [...held, ...pending].filter((l) => l.name?.startsWith(prefix)).map((l) => l.name.slice(prefix.length));
  }

  #check() {
    if (this.#closed) throw fail("CLOSED", `vault: the key vault of store ${JSON.stringify(this.#name)} was closed`);
  }

  /** `n` new live slots, as [{ slot, key }] (key: AES-GCM, not extractable), on disk when it resolves. */
  async create(n) {
    this.#check();
    if (!Number.isSafeInteger(n) || n < 1 || n > 100_000) throw fail("INVALID_ARGUMENT", `vault: create(n) takes an integer from 1 to 100000, got ${JSON.stringify(n) ?? String(n)}`);
    const made = await this.#runner.call("create", [this.#name, n]);
    for (const { slot, key } of made) this.#seen.set(slot, key);
    return made;
  }

  /**
   * Map slot -> CryptoKey, or null for a slot destroyed or not (yet)
   * created. Slots not seen before are read from the file (so keys other
   * tabs created are found).
   */
  async keys(slots) {
    this.#check();
    const list = checkSlots(slots);
    const missing = list.filter((s) => !this.#seen.has(s));
    if (missing.length > 0) {
      for (const [slot, key] of await this.#runner.call("keys", [this.#name, missing])) {
        // A slot not written yet may be written later: not remembered.
        if (key !== undefined) this.#seen.set(slot, key);
      }
    }
    return new Map(list.map((s) => [s, this.#seen.get(s) ?? null]));
  }

  /** Checks a list of aggregate names. */
  #aggregates(list) {
    if (!Array.isArray(list) || list.some((a) => typeof a !== "string")) throw fail("INVALID_ARGUMENT", "vault: aggregates must be an array of strings");
    return [...new Set(list)];
  }

  /**
   * The live slot and raw key bytes (32) of each aggregate: Map aggregate
   * -> { slot, key: Uint8Array }. With `create: true`, aggregates without
   * a live slot get one (atomically across tabs: never two live slots for
   * one aggregate); without, they are left out. For the store's keyring
   * (the raw bytes go into wasm; docs/privacy.md says why that is fine).
   */
  async keysFor(aggregates, { create = false } = {}) {
    this.#check();
    const list = this.#aggregates(aggregates);
    if (list.length === 0) return new Map();
    const found = await this.#runner.call("keysFor", [this.#name, list, create === true]);
    return new Map(found.map(([a, slot, key]) => [a, { slot, key }]));
  }

  /** Map slot -> raw key bytes (live or retired slots), null (destroyed) or undefined (never written). */
  async rawKeys(slots) {
    this.#check();
    const list = checkSlots(slots);
    if (list.length === 0) return new Map();
    return new Map(await this.#runner.call("rawKeys", [this.#name, list]));
  }

  /**
   * A new live slot per aggregate; the old live slot is retired (it still
   * decrypts until destroyed). Map aggregate -> { slot, key, old }.
   */
  async rotate(aggregates) {
    this.#check();
    const list = this.#aggregates(aggregates);
    if (list.length === 0) return new Map();
    const made = await this.#runner.call("rotate", [this.#name, list]);
    this.#channel?.postMessage({ retired: made.map(([, , , old]) => old).filter((s) => s !== null) });
    return new Map(made.map(([a, slot, key, old]) => [a, { slot, key, old }]));
  }

  /** The slots other tabs and workers destroyed since the last call (for the keyring). */
  takeDestroyed() {
    const out = [...this.#destroyedElsewhere];
    this.#destroyedElsewhere.clear();
    return out;
  }

  /**
   * Every written slot, [[slot, bytes | null, hash | null]]: its raw key
   * (null: destroyed) and, for a live slot, the SHA-256 of its aggregate's
   * name (the keyring finds an aggregate's live slot by it).
   */
  async loadAll() {
    this.#check();
    return this.#runner.call("allKeys", [this.#name]);
  }

  /**
   * `n` new slots reserved for this vault, [[slot, raw key bytes]], on disk
   * when it resolves. They decrypt, but belong to no aggregate until `bind`.
   */
  async reserve(n) {
    this.#check();
    if (!Number.isSafeInteger(n) || n < 1 || n > 100_000) throw fail("INVALID_ARGUMENT", `vault: reserve(n) takes an integer from 1 to 100000, got ${JSON.stringify(n) ?? String(n)}`);
    return this.#runner.call("reserve", [this.#name, n, this.#owner?.token ?? null]);
  }

  /**
   * Binds reserved slots to aggregates, pairs [[aggregate, slot, hash?]]
   * (hash: the SHA-256 of the name as 32 bytes, if the caller has it): each
   * becomes its aggregate's live slot, or a retired one of it when the
   * aggregate got a live slot elsewhere meanwhile; a slot bound to that
   * aggregate already, or destroyed, is left as it is. Resolves, after the
   * flush, to [[aggregate, live slot | null, raw key bytes | null]] (the
   * bytes when the live slot is not the one given).
   */
  async bind(pairs) {
    this.#check();
    const hash = (h) => h === undefined || (h instanceof Uint8Array && h.length === 32);
    if (!Array.isArray(pairs) || pairs.some((p) => !Array.isArray(p) || typeof p[0] !== "string" || !Number.isSafeInteger(p[1]) || p[1] < 0 || !hash(p[2]))) {
      throw fail("INVALID_ARGUMENT", "vault: bind takes [[aggregate, slot, hash?], ...]");
    }
    if (pairs.length === 0) return [];
    return this.#runner.call("bind", [this.#name, pairs]);
  }

  /**
   * Destroys the retired slots of each aggregate (a shred's old keys, after
   * `rotate`), and those of `options.slots` still reserved (never a bound
   * one, live or not), overwriting them in place; resolves to the slots
   * destroyed, after the flush. Other tabs and workers are told.
   */
  async shred(aggregates, { slots = [] } = {}) {
    this.#check();
    const list = this.#aggregates(aggregates);
    const extra = checkSlots(slots);
    if (list.length === 0 && extra.length === 0) return [];
    const done = await this.#runner.call("shred", [this.#name, list, extra]);
    for (const s of done) this.#seen.set(s, null);
    this.#channel?.postMessage({ destroyed: done });
    return done;
  }

  /**
   * Takes the store's shred lock (the Web Lock `eventstore-wasm:shred:<name>`)
   * until the function it resolves to is called: the shreds of one store
   * (rotate, seal the survivors again, destroy the old slots) run one at a
   * time across tabs and workers, or one would destroy the slot another
   * has just sealed survivors under.
   */
  lockShred() {
    this.#check();
    const locks = globalThis.navigator?.locks;
    if (!locks || typeof locks.request !== "function") return Promise.resolve(() => {});
    return new Promise((granted, failed) => {
      locks.request(`eventstore-wasm:shred:${this.#name}`, () => new Promise((release) => granted(release))).catch(failed);
    });
  }

  /** The slots other tabs and workers retired since the last call: no longer to encrypt with. */
  takeRetired() {
    const out = [...this.#retiredElsewhere];
    this.#retiredElsewhere.clear();
    return out;
  }

  /** Overwrites the slots' keys in place and flushes; resolves after the flush. Unknown slots are ignored. */
  async destroy(slots) {
    this.#check();
    const list = checkSlots(slots);
    const done = await this.#runner.call("destroy", [this.#name, list]);
    for (const s of done) this.#seen.set(s, null);
    this.#channel?.postMessage({ destroyed: done });
    return done;
  }

  /** Ends the vault's worker; later calls reject with CLOSED. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#seen.clear();
    this.#channel?.close();
    this.#runner.close();
    this.#owner?.release();
  }
}
