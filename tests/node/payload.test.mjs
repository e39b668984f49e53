// Payloads through the built package: a push stores exactly the JSON text
// that JSON.stringify with the checking replacer gives (the path every
// payload took before the fast paths of `pushJson` and `payloadJson`,
// src/web/interop.rs), and rejects with INVALID_PAYLOAD, saying the same
// thing, where that one throws. Random values (seeded) and the shapes that tell the two apart:
// NaN, undefined array elements and holes, functions, symbols and BigInt
// at any depth, toJSON, class instances, getters, cycles, deep nesting.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventStore } from "../../pkg/index.js";

/** What the checked path gives: the JSON text, or the TypeError's message. */
function reference(value) {
  if (value === undefined) return { json: "null" };
  try {
    return {
      json: JSON.stringify(value, function (key, v) {
        const where = key === "" ? "the payload" : `${JSON.stringify(key)}`;
        switch (typeof v) {
          case "function": case "symbol": case "bigint":
            throw new TypeError(`${where} is a ${typeof v}, which JSON cannot represent`);
          case "number":
            if (!Number.isFinite(v)) throw new TypeError(`${where} is ${v}, which JSON cannot represent`);
            break;
          case "undefined":
            if (Array.isArray(this)) throw new TypeError(`array element ${key} is undefined`);
            break;
        }
        return v;
      }),
    };
  } catch (e) {
    return { error: e.message };
  }
}

/** A small seeded generator (xorshift32). */
function random(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

class Point { constructor() { this.x = 1; this.y = [2]; } }

/** A random value, plain most of the time, with an odd part now and then. */
function value(r, depth = 0) {
  const leaves = [
    () => "text " + r(1000), () => "", () => r(1e6) - 5e5, () => r(1000) / 7, () => -0, () => true, () => null,
    () => Number.MAX_SAFE_INTEGER, () => "é \u0000 \"quoted\" \\",
  ];
  const odd = [
    () => NaN, () => Infinity, () => -Infinity, () => undefined, () => () => 1, () => Symbol("s"), () => 10n,
    () => new Date(1764000000000 + r(1000)), () => new Point(), () => ({ toJSON: () => "via toJSON" }),
    () => new Map([[1, 2]]), () => new String("boxed"), () => new Number(r(10)), () => Object.create(null),
    () => Object.defineProperty({}, "g", { get: () => 7, enumerable: true }),
    () => { const a = [1, 2]; a.length = 3; return a; }, // a hole
    () => { const a = [1]; a.extra = "ignored"; return a; },
  ];
  const k = r(20);
  if (depth >= 4 || k < 8) return leaves[r(leaves.length)]();
  if (k < 10) return odd[r(odd.length)]();
  if (k < 15) return Array.from({ length: r(5) }, () => value(r, depth + 1));
  const o = {};
  for (let i = r(5); i > 0; i--) o[["a", "b", "name", "0", "x y", "toString"][r(6)]] = value(r, depth + 1);
  return o;
}

function handpicked() {
  const cyclic = { a: 1 };
  cyclic.self = cyclic;
  const cyclicArray = [1];
  cyclicArray.push(cyclicArray);
  let deep = 1;
  for (let i = 0; i < 100; i++) deep = [deep];
  let deepObject = { leaf: NaN };
  for (let i = 0; i < 70; i++) deepObject = { d: deepObject };
  return [
    undefined, null, 0, "s", [], {}, { a: undefined }, [undefined], [1, , 3], { f() {} }, [() => 1], { s: Symbol("x") },
    { n: { m: [1, { k: NaN }] } }, { big: [1n] }, new Date(0), { when: new Date(0) }, cyclic, cyclicArray, deep, deepObject,
    Object.assign(Object.create(null), { a: [1, 2] }), { toJSON() { return { n: NaN }; } }, [new Point()],
  ];
}

test("push stores what the checked JSON path gives, and rejects where it throws", async () => {
  const name = `payloads-${process.pid}`;
  const store = await EventStore.open(name);
  try {
    const r = random(20261127);
    const values = [...handpicked(), ...Array.from({ length: 400 }, () => value(r))];
    let plain = 0;
    let rejected = 0;
    for (const [i, v] of values.entries()) {
      const want = reference(v);
      const aggregate = `p.v${i}`;
      let got;
      try {
        got = await store.push([{ aggregate, commands: [{ action: `${aggregate}.set`, payload: v }] }]);
      } catch (e) {
        assert.ok(want.error, `value ${i}: rejected (${e.message}), but the checked path gives ${want.json}`);
        assert.equal(e.code, "INVALID_PAYLOAD", `value ${i}`);
        assert.ok(e.message.includes(want.error), `value ${i}: ${JSON.stringify(e.message)} should say ${JSON.stringify(want.error)}`);
        rejected++;
        continue;
      }
      assert.ok(!want.error, `value ${i}: stored, but the checked path throws ${want.error}`);
      const stored = JSON.parse(want.json);
      assert.deepEqual(got[0].payload, stored, `value ${i}: the pushed event's payload`);
      const [read] = await store.filter({ queries: [{ aggregate }] });
      assert.deepEqual(read.payload, stored, `value ${i}: read back`);
      plain++;
    }
    // Both kinds were met, many times.
    assert.ok(plain > 100 && rejected > 50, `${plain} stored, ${rejected} rejected`);
  } finally {
    store.close();
    await EventStore.delete(name);
  }
});
