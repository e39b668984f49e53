// The README example (between its readme-example markers), type-checked as
// the JavaScript it is; tests/node/readme-types.test.mjs keeps it in step.
import init, { EventStore } from "eventstore-wasm";
await init();

const store = await EventStore.open("readme-example");
await store.push([
  { aggregate: ["user", "A"], expectedSequence: 0, commands: [
      { action: "user.A.added", payload: { name: "Ada", email: "ada@example.com" } },
      { action: "user.A.renamed", revision: 2, payload: { name: "Ada L." } } ] },
  { aggregate: "user.B", commands: [{ action: "user.B.added", payload: { name: "Bob" } }] },
]);

const added = await store.filter({ queries: [{ subjects: "user.*.added" }] });
console.assert(added.length === 2 && added[1].aggregate.join(".") === "user.B");

const names = new Map();
await store.filter({ queries: [{ aggregate: "user.>" }] }, (e) => { names.set(e.aggregate[1], e.payload.name); });
console.assert(names.get("A") === "Ada L.");

const erased = await store.forget({ queries: [{ aggregate: "user.A" }] });
const [first] = await store.filter({ queries: [{ aggregate: "user.A" }], limit: 1 });
console.assert(erased === 2 && first.payload === null && first.forgotten && first.sequence === 1);

store.close();
await EventStore.delete("readme-example");
