// The package entry's own JavaScript under Node: init, the error class and
// guard, and `matches` (the rule of a query's `subjects`).
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import init, { EventStore, EventStoreError, ErrorCode, isEventStoreError, matches } from "../../pkg/index.js";

test("init() is idempotent, and the statics wait for it", async () => {
  const first = init();
  assert.equal(init(), first, "the same promise");
  const [store] = await Promise.all([EventStore.open("entry-init"), first]);
  assert.equal(typeof store.push, "function");
  assert.equal(EventStore.open.name, "open", "the wrapped statics keep their names");
  store.close();
  await EventStore.delete("entry-init");
});

test("EventStoreError: made by hand or by the store, told apart from other errors", () => {
  const made = new EventStoreError(ErrorCode.SEQUENCE_MISMATCH, "no", { aggregate: ["a"], expected: 0, actual: 1 });
  assert.ok(made instanceof EventStoreError && made instanceof Error);
  assert.deepEqual([made.name, made.code, made.message, made.aggregate, made.expected, made.actual], [
    "EventStoreError", "SEQUENCE_MISMATCH", "no", ["a"], 0, 1,
  ]);
  const fromRust = Object.assign(new Error("CLOSED: the store is closed"), { code: "CLOSED" });
  assert.ok(fromRust instanceof EventStoreError);
  assert.ok(isEventStoreError(fromRust) && isEventStoreError(fromRust, "CLOSED") && !isEventStoreError(fromRust, "STORAGE"));
  assert.ok(!(Object.assign(new Error("x"), { code: "ENOENT" }) instanceof EventStoreError), "another library's code");
  assert.ok(!({ code: "CLOSED", message: "x" } instanceof EventStoreError), "not an Error");
  assert.ok(!(null instanceof EventStoreError) && !isEventStoreError(undefined));
  assert.ok(Object.isFrozen(ErrorCode));
});

test("matches follows the subject pattern rules", () => {
  const e = (action) => ({ action: action.split(".") });
  const cases = [
    ["user.A.added", "user.A.added", true],
    ["user.A.added", "user.*.added", true],
    ["user.A.added", ["user", "*", "added"], true],
    ["user.A.added", "user.>", true],
    ["user.A.added", ">", true],
    ["user.A.added", "user.A.added.>", false],
    ["user.A.added", "user.A", false],
    ["user.A", "user.A.>", false],
    ["user.A.added", "user.*", false],
    ["user.A.added", "*.*.*", true],
    ["user.A.added", "*.*.*.*", false],
    ["user.A.email.changed", "user.*.>", true],
    ["user.A.added", "user.B.added", false],
  ];
  for (const [action, pattern, expected] of cases) {
    assert.equal(matches(e(action), pattern), expected, `${action} ~ ${pattern}`);
  }
});
