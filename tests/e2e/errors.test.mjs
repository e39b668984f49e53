// SPEC 6: every error code from a bad call, as an Error with a `code` and a
// message naming the offending value.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, errorIn, TIMEOUT } from "./helpers.mjs";

let env, page;
before(async () => {
  env = await setup();
  page = await env.newPage();
  await page.evaluate(async (name) => {
    window.store = await EventStore.open(name);
    await store.push([{ aggregate: "seq.A", commands: [{ action: "seq.A.one" }, { action: "seq.A.two" }] }]);
  }, uniqueName("errors"));
});
after(() => env?.close());

const assertError = (err, code, message) => {
  assert.ok(err, `expected a rejection with ${code}, but the call succeeded`);
  assert.equal(err.code, code, `code of ${JSON.stringify(err)}`);
  assert.equal(err.isError, true, "an Error instance");
  assert.match(err.message, message);
};

// [title, code, message pattern, call (a function source run in the page, `store` is open)]
const cases = [
  ["token with a space", "INVALID_SUBJECT", /user\.a b/, () => store.push([{ aggregate: "user.a b", commands: [{ action: "user.x" }] }])],
  ["token with a tab (array form)", "INVALID_SUBJECT", /a(\t|\\t)b/, () => store.push([{ aggregate: ["user", "a\tb"], commands: [{ action: "user.x" }] }])],
  ["wildcard * in a pushed aggregate", "INVALID_SUBJECT", /user\.\*/, () => store.push([{ aggregate: "user.*", commands: [{ action: "user.x" }] }])],
  ["wildcard > in a pushed action", "INVALID_SUBJECT", /user\.A\.>/, () => store.push([{ aggregate: "user.A", commands: [{ action: "user.A.>" }] }])],
  ["empty token a..b", "INVALID_SUBJECT", /a\.\.b/, () => store.push([{ aggregate: "a..b", commands: [{ action: "a.b" }] }])],
  ["empty subject", "INVALID_SUBJECT", /subject|empty|""/i, () => store.push([{ aggregate: "", commands: [{ action: "a.b" }] }])],
  ["empty token in array form", "INVALID_SUBJECT", /empty|""|token/i, () => store.push([{ aggregate: ["user", ""], commands: [{ action: "a.b" }] }])],
  ["33 tokens", "INVALID_SUBJECT", /33|32/, () => store.push([{ aggregate: Array(33).fill("t").join("."), commands: [{ action: "a.b" }] }])],
  ["token of 256 bytes (128 two-byte characters)", "INVALID_SUBJECT", /255|256|long/i, () => store.push([{ aggregate: ["user", "é".repeat(128)], commands: [{ action: "a.b" }] }])],
  ["pattern with > not last", "INVALID_SUBJECT", /user\.>\.added/, () => store.filter({ queries: [{ subjects: "user.>.added" }] })],
  ["aggregate pattern with a space", "INVALID_SUBJECT", /us er/, () => store.filter({ queries: [{ aggregate: "us er.>" }] })],
  ["forget pattern a..b", "INVALID_SUBJECT", /a\.\.b/, () => store.forget({ queries: [{ subjects: "a..b" }] })],

  ["function payload", "INVALID_PAYLOAD", /function/i, () => store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: () => 1 }] }])],
  ["symbol payload", "INVALID_PAYLOAD", /symbol/i, () => store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: { s: Symbol("s") } }] }])],
  ["BigInt payload", "INVALID_PAYLOAD", /bigint/i, () => store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: { n: 10n } }] }])],
  ["NaN payload", "INVALID_PAYLOAD", /nan/i, () => store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: { n: NaN } }] }])],
  ["Infinity payload", "INVALID_PAYLOAD", /infinit/i, () => store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: [-Infinity] }] }])],
  ["cyclic payload", "INVALID_PAYLOAD", /cycl|circular/i, () => {
    const o = { a: [] };
    o.a.push(o);
    return store.push([{ aggregate: "p.1", commands: [{ action: "p.1.x", payload: o }] }]);
  }],

  ["revision 70000", "INVALID_ARGUMENT", /70000/, () => store.push([{ aggregate: "a.1", commands: [{ action: "a.1.x", revision: 70000 }] }])],
  ["revision 1.5", "INVALID_ARGUMENT", /1\.5/, () => store.push([{ aggregate: "a.1", commands: [{ action: "a.1.x", revision: 1.5 }] }])],
  ["revision -1", "INVALID_ARGUMENT", /-1/, () => store.push([{ aggregate: "a.1", commands: [{ action: "a.1.x", revision: -1 }] }])],
  ["expectedSequence -1", "INVALID_ARGUMENT", /-1/, () => store.push([{ aggregate: "a.1", expectedSequence: -1, commands: [{ action: "a.1.x" }] }])],
  ["expectedSequence 1.5", "INVALID_ARGUMENT", /1\.5/, () => store.push([{ aggregate: "a.1", expectedSequence: 1.5, commands: [{ action: "a.1.x" }] }])],
  ["entry with empty commands", "INVALID_ARGUMENT", /commands/, () => store.push([{ aggregate: "a.1", commands: [] }])],
  ["entry without commands", "INVALID_ARGUMENT", /commands/, () => store.push([{ aggregate: "a.1" }])],
  ["limit on forget", "INVALID_ARGUMENT", /limit/, () => store.forget({ queries: [{ aggregate: "a.1" }], limit: 10 })],
  ["push with a string", "INVALID_ARGUMENT", /array/i, () => store.push("user.A")],
  ["push with an object", "INVALID_ARGUMENT", /array/i, () => store.push({ aggregate: "a.1", commands: [{ action: "a.1.x" }] })],
  // README decision: unknown properties are refused, so that a typo cannot skip a check.
  ["misspelt expectedSequence", "INVALID_ARGUMENT", /unknown property "expectedSeq".*aggregate, expectedSequence, commands/, () => store.push([{ aggregate: "a.1", expectedSeq: 0, commands: [{ action: "a.1.x" }] }])],
  ["unknown command property", "INVALID_ARGUMENT", /command 0.*unknown property "payLoad"/, () => store.push([{ aggregate: "a.1", commands: [{ action: "a.1.x", payLoad: 1 }] }])],
  ["command that is not an object", "INVALID_ARGUMENT", /must be an object.*"a\.1\.x"/, () => store.push([{ aggregate: "a.1", commands: ["a.1.x"] }])],
  ["entry that is an array", "INVALID_ARGUMENT", /must be an object/, () => store.push([["a.1"]])],
  ["unknown filter property", "INVALID_ARGUMENT", /unknown property "query"/, () => store.filter({ query: [] })],
  ["unknown query property", "INVALID_ARGUMENT", /unknown property "subject"/, () => store.filter({ queries: [{ subject: "a.>" }] })],
  ["unknown range property", "INVALID_ARGUMENT", /unknown property "until"/, () => store.filter({ queries: [{ sequence: { from: 1, until: 3 } }] })],
  ["unknown subscribe option", "INVALID_ARGUMENT", /unknown property "from"/, () => store.subscribe({}, () => {}, { from: 0 })],
  ["filter limit -1", "INVALID_ARGUMENT", /-1/, () => store.filter({ limit: -1 })],
  ["filter limit 1.5", "INVALID_ARGUMENT", /1\.5/, () => store.filter({ limit: 1.5 })],
  ["sequence range from -1", "INVALID_ARGUMENT", /-1/, () => store.filter({ queries: [{ sequence: { from: -1, to: 3 } }] })],

  ["SEQUENCE_MISMATCH", "SEQUENCE_MISMATCH", /seq\.A|seq","A/, () => store.push([{ aggregate: "seq.A", expectedSequence: 1, commands: [{ action: "seq.A.three" }] }])],
];

for (const [title, code, message, call] of cases) {
  test(`${code}: ${title}`, { timeout: TIMEOUT }, async () => {
    assertError(await errorIn(page, call), code, message);
  });
}

test("SEQUENCE_MISMATCH carries aggregate, expected and actual, and names them in its message", { timeout: TIMEOUT }, async () => {
  const err = await errorIn(page, () => store.push([{ aggregate: "seq.A", expectedSequence: 1, commands: [{ action: "seq.A.three" }] }]));
  assertError(err, "SEQUENCE_MISMATCH", /1/);
  assert.deepEqual([err.aggregate, err.expected, err.actual], [["seq", "A"], 1, 2]);
  assert.match(err.message, /2/);
});

test("CLOSED: a call on a closed store", { timeout: TIMEOUT }, async () => {
  const err = await page.evaluate(async (name) => {
    const closed = await EventStore.open(name);
    closed.close();
    return errorOf(() => closed.filter({}));
  }, uniqueName("closed"));
  assertError(err, "CLOSED", /clos/i);
});

test("VERSION_MISMATCH: a database of a newer version is refused and left as it is", { timeout: TIMEOUT }, async () => {
  const r = await page.evaluate(async (name) => {
    await rawCreate(name, 999);
    const err = await errorOf(() => EventStore.open(name));
    return { err, version: (await rawDatabases())[name] };
  }, uniqueName("newer"));
  assertError(r.err, "VERSION_MISMATCH", /999/);
  assert.equal(r.version, 999, "the database keeps version 999");
});

test("STORAGE: a database at the library's version without its object stores", { timeout: TIMEOUT }, async () => {
  const r = await page.evaluate(async ({ probe, name }) => {
    // The library's own schema version, read from a database it created.
    (await EventStore.open(probe)).close();
    const version = (await rawDatabases())[probe];
    await EventStore.delete(probe);
    await rawCreate(name, version);
    return { version, err: await errorOf(() => EventStore.open(name)) };
  }, { probe: uniqueName("probe"), name: uniqueName("hollow") });
  assert.ok(Number.isInteger(r.version) && r.version >= 1, `schema version ${r.version}`);
  assertError(r.err, "STORAGE", /./);
});
