// An app's own event map: push checks each action's payload, reads narrow
// by the actions their `subjects` name.
import { EventStore, matches, type StoredEvent, type PushEntry } from "eventstore-wasm";

interface UserAdded {
  name: string;
  email: string;
  tags: string[];
}

type AppEvents = {
  [action: `user.${string}.added`]: UserAdded;
  [action: `user.${string}.renamed`]: { name: string };
  [action: `user.${string}.seen`]: { at: Date };
  [action: `team.${string}.made`]: null;
};

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>) => ok;

const store = await EventStore.open<AppEvents>("typed");
const id = crypto.randomUUID();

const pushed = await store.push([
  {
    aggregate: ["user", id],
    expectedSequence: 0,
    commands: [
      { action: `user.${id}.added`, payload: { name: "Ada", email: "ada@example.com", tags: ["admin"] } },
      { action: ["user", id, "renamed"], revision: 2, payload: { name: "Ada L." } },
      { action: `user.${id}.seen`, payload: { at: new Date() } },
    ],
  },
  { aggregate: "team.T", commands: [{ action: "team.T.made" }] },
]);
void pushed;

// Entries built ahead of the call are typed by the map too.
const entry: PushEntry<AppEvents> = { aggregate: "user.B", commands: [{ action: "user.B.renamed", payload: { name: "Bo" } }] };
await store.push([entry]);

// Narrowed by the subjects pattern: only `user.*.added` events.
const added = await store.filter({ queries: [{ subjects: "user.*.added" }] });
for (const e of added) {
  same<typeof e.action, ["user", string, "added"]>(true);
  if (!e.forgotten) {
    const name: string = e.payload.name;
    const tags: string[] = e.payload.tags;
    void [name, tags];
  } else {
    same<typeof e.payload, null>(true);
  }
}

// Two queries: the union of their actions.
await store.filter({ queries: [{ subjects: "user.*.added" }, { subjects: ["user", "*", "renamed"] }] }, (e) => {
  if (e.forgotten) return;
  if (matches(e, "user.*.added")) {
    const email: string = e.payload.email;
    void email;
  } else {
    same<typeof e.payload, { name: string }>(true);
  }
  if (matches(e, ["user", "*", "renamed"])) same<typeof e.payload, { name: string }>(true);
  if (matches(e, "user.>")) same<typeof e, typeof e>(true);
});

// A Date comes back as its JSON string.
const seen = await store.filter({ queries: [{ subjects: `user.${id}.seen` }] });
if (seen[0] && !seen[0].forgotten) {
  const at: string = seen[0].payload.at;
  void at;
}

// `>` and queries without subjects give every action of the map.
const everything = await store.filter({ queries: [{ aggregate: "user.>" }] });
same<(typeof everything)[number], StoredEvent<AppEvents>>(true);
const deep = await store.filter({ queries: [{ subjects: "user.>" }] });
same<(typeof deep)[number]["action"], ["user", string, "added"] | ["user", string, "renamed"] | ["user", string, "seen"]>(true);

// Subscriptions and streams narrow the same way.
const stop = store.subscribe(
  { queries: [{ subjects: "team.*.made" }] },
  (e) => same<typeof e.payload, null>(true),
  { onForget: (events) => same<(typeof events)[number]["action"], ["team", string, "made"]>(true) },
);
stop();
for await (const e of store.events({ queries: [{ subjects: "user.*.renamed" }] })) {
  if (!e.forgotten) same<typeof e.payload, { name: string }>(true);
}

// get: any event of the map, or null.
const got = await store.get(pushed[0].id);
same<typeof got, StoredEvent<AppEvents> | null>(true);

store.close();

// A typed store can go where an untyped one is expected (helpers, tests).
async function countAll(any: EventStore): Promise<number> {
  return (await any.filter({})).length;
}
void countAll(await EventStore.open<AppEvents>("typed-any"));

// An event map declared as an interface, with fixed actions.
interface CounterEvents {
  "counter.incremented": { by: number };
  "counter.reset": null;
}
const counter = await EventStore.open<CounterEvents>("counter");
await counter.push([{ aggregate: "counter", commands: [{ action: "counter.incremented", payload: { by: 2 } }, { action: "counter.reset" }] }]);
let total = 0;
await counter.filter({ queries: [{ subjects: "counter.incremented" }] }, (e) => {
  if (!e.forgotten) total += e.payload.by;
});
// @ts-expect-error by is a number
await counter.push([{ aggregate: "counter", commands: [{ action: "counter.incremented", payload: { by: "2" } }] }]);
void total;
