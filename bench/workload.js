// The event-log workload shared by every implementation of the benchmark.
// Pure and deterministic: the same push number always yields the same events,
// so each implementation writes exactly the same data and every read-back can
// be checked against values computed here.
//
// - 1,000 aggregates user.u0 … user.u999.
// - A push holds 100 events: 25 different aggregates, 4 events each, in the
//   lifecycle order added, renamed, email.changed, removed.
// - Push p carries the aggregate groups g = 25p … 25p+24; group g belongs to
//   aggregate (g * 397) mod 1000, a permutation of 0..999, so the aggregates of
//   one push are spread over the key space (not 25 neighbours) and every
//   aggregate comes back after 1,000 groups (40 pushes) with its sequences
//   continuing (group g is the aggregate's (floor(g / 1000) + 1)-th group).
// - Each payload is a JSON object of 200 bytes (JSON.stringify length).

export const AGGREGATES = 1000;
export const AGGS_PER_PUSH = 25;
export const KINDS = ["added", "renamed", "email.changed", "removed"];
export const EVENTS_PER_PUSH = AGGS_PER_PUSH * KINDS.length; // 100
export const PAYLOAD_BYTES = 200;
const STRIDE = 397; // coprime with 1000
const INV_STRIDE = (() => {
  for (let x = 1; x < AGGREGATES; x++) if ((STRIDE * x) % AGGREGATES === 1) return x;
  throw new Error("stride not invertible");
})();

export const aggName = (a) => `user.u${a}`;
export const aggOfGroup = (g) => (g * STRIDE) % AGGREGATES;
export const pushesFor = (events) => Math.ceil(events / EVENTS_PER_PUSH);

// Cheap deterministic pseudo-random text, so payloads are not all alike.
function filler(seed, length) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz      ";
  let x = (seed * 2654435761) >>> 0 || 1;
  let s = "";
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    s += alphabet[x & 31];
  }
  return s;
}

/** The payload of aggregate `a`'s event with sequence `seq` and kind index `k`. */
export function payload(a, seq, k) {
  const base = { v: 1, user: `u${a}`, seq };
  if (k === 0) Object.assign(base, { name: `User ${a}`, email: `u${a}.${seq}@example.com`, plan: "free", tags: ["new", "web"] });
  else if (k === 1) Object.assign(base, { name: `User ${a} (renamed ${seq})`, by: "self" });
  else if (k === 2) Object.assign(base, { email: `user-${a}-${seq}@mail.example.org`, verified: seq % 2 === 0 });
  else Object.assign(base, { reason: seq % 3 === 0 ? "requested" : "inactive", at: 1764000000000 + seq });
  base.note = "";
  const room = PAYLOAD_BYTES - JSON.stringify(base).length;
  base.note = filler(a * 100003 + seq, Math.max(0, room));
  return base;
}

/**
 * The events of push `p` (0-based), in push order, with the sequence each
 * implementation must assign: [{ aggregate, action, payload, sequence }].
 */
export function pushEvents(p) {
  const out = [];
  for (let slot = 0; slot < AGGS_PER_PUSH; slot++) {
    const g = p * AGGS_PER_PUSH + slot;
    const a = aggOfGroup(g);
    const first = Math.floor(g / AGGREGATES) * KINDS.length + 1;
    for (let k = 0; k < KINDS.length; k++) {
      const sequence = first + k;
      out.push({ aggregate: aggName(a), action: `${aggName(a)}.${KINDS[k]}`, payload: payload(a, sequence, k), sequence });
    }
  }
  return out;
}

/** Number of events of aggregate `a` in a log made of pushes 0..pushes-1. */
export function aggregateCount(a, pushes) {
  const groups = pushes * AGGS_PER_PUSH;
  const r = (a * INV_STRIDE) % AGGREGATES; // first group of aggregate a
  if (r >= groups) return 0;
  return (Math.floor((groups - 1 - r) / AGGREGATES) + 1) * KINDS.length;
}

/** The workload event of aggregate `a` with sequence `seq` (1-based), wherever it was pushed. */
export function eventOf(a, seq) {
  const j = Math.floor((seq - 1) / KINDS.length);
  const k = (seq - 1) % KINDS.length;
  const g = ((a * INV_STRIDE) % AGGREGATES) + j * AGGREGATES;
  const slot = g % AGGS_PER_PUSH;
  return pushEvents(Math.floor(g / AGGS_PER_PUSH))[slot * KINDS.length + k];
}

/** Number of `user.*.added` events in a log made of pushes 0..pushes-1. */
export const addedCount = (pushes) => pushes * AGGS_PER_PUSH;

/** A known event in the middle of the log: push floor(pushes/2), slot 10, kind 2. */
export function knownEvent(pushes) {
  return pushEvents(Math.floor(pushes / 2))[10 * KINDS.length + 2];
}

/** Canonical JSON (sorted keys), to compare payloads whatever the key order. */
export function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** Subject-prefix keys of an action string: "a.b.c" -> ["a", "a.b", "a.b.c"]. */
export function prefixes(action) {
  const tokens = action.split(".");
  const out = new Array(tokens.length);
  let acc = "";
  for (let i = 0; i < tokens.length; i++) {
    acc = i === 0 ? tokens[0] : `${acc}.${tokens[i]}`;
    out[i] = acc;
  }
  return out;
}

/**
 * Push `p` of another shape: `aggs` aggregates of `per` events each (100
 * events when aggs × per = 100), group g = aggs·p + slot belonging to
 * aggregate aggOfGroup(g) as above, so the aggregates of a push are all
 * different. Shape 25 × 4 is `pushEvents`.
 */
export function shapeEvents(aggs, per, p) {
  const out = [];
  for (let slot = 0; slot < aggs; slot++) {
    const g = p * aggs + slot;
    const a = aggOfGroup(g);
    const first = Math.floor(g / AGGREGATES) * per + 1;
    for (let k = 0; k < per; k++) {
      const sequence = first + k;
      const kind = k % KINDS.length;
      out.push({ aggregate: aggName(a), action: `${aggName(a)}.${KINDS[kind]}`, payload: payload(a, sequence, kind), sequence });
    }
  }
  return out;
}

/** Events of aggregate `a` after pushes 0..pushes-1 of shape aggs × per. */
export function shapeCount(a, aggs, per, pushes) {
  const groups = pushes * aggs;
  const r = (a * INV_STRIDE) % AGGREGATES;
  if (r >= groups) return 0;
  return (Math.floor((groups - 1 - r) / AGGREGATES) + 1) * per;
}

/** `user.*.added` events after pushes 0..pushes-1 of shape aggs × per (kind k % 4 of each group's k-th event). */
export const shapeAddedCount = (aggs, per, pushes) => pushes * aggs * Math.ceil(per / KINDS.length);
