// Mistakes the types must catch (each line must fail to compile).
import { EventStore, ErrorCode, type StoredEvent } from "eventstore-wasm";

type AppEvents = {
  [action: `user.${string}.added`]: { name: string };
  [action: `user.${string}.renamed`]: { name: string };
};

export async function typed(store: EventStore<AppEvents>): Promise<void> {
  // @ts-expect-error wrong payload for the action
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: 42 } }] }]);
  // @ts-expect-error a payload missing a required field
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: {} }] }]);
  // @ts-expect-error an action the map does not have
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.deleted", payload: { name: "x" } }] }]);
  // @ts-expect-error a wildcard in a pushed action, even one the map's template would take
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.*.added", payload: { name: "x" } }] }]);
  // @ts-expect-error the payload is required where the map says so
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.renamed" }] }]);

  const added = await store.filter({ queries: [{ subjects: "user.*.added" }] });
  // @ts-expect-error a forgotten event's payload is null: check `forgotten` first
  void added[0].payload.name;
  // @ts-expect-error narrowed to `added` events: the action's last token is "added"
  if (added[0].action[2] === "renamed") void 0;
}

export async function untyped(store: EventStore, event: StoredEvent): Promise<void> {
  // @ts-expect-error a wildcard in a pushed aggregate
  await store.push([{ aggregate: "user.*", commands: [{ action: "user.A.added" }] }]);
  // @ts-expect-error a wildcard in a pushed aggregate, as tokens
  await store.push([{ aggregate: ["user", ">"], commands: [{ action: "user.A.added" }] }]);
  // @ts-expect-error a wildcard in a pushed action
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.>" }] }]);
  // @ts-expect-error limit on forget
  await store.forget({ queries: [{ aggregate: "user.A" }], limit: 1 });
  // @ts-expect-error unknown property (a typo of expectedSequence)
  await store.push([{ aggregate: "user.A", expectedSeq: 0, commands: [{ action: "user.A.added" }] }]);
  // @ts-expect-error unknown property in a query
  await store.filter({ queries: [{ subject: "user.A.added" }] });
  // @ts-expect-error unknown property in a command
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", data: 1 }] }]);
  // @ts-expect-error a sequence is a number
  const sequence: string = event.sequence;
  // @ts-expect-error a subject is a string or tokens
  await store.push([{ aggregate: 42, commands: [{ action: "user.A.added" }] }]);
  // @ts-expect-error a command needs an action
  await store.push([{ aggregate: "user.A", commands: [{ payload: 1 }] }]);
  // @ts-expect-error limit is a number
  await store.filter({ limit: "10" });
  // @ts-expect-error forget resolves to a number
  const erased: string = await store.forget({});
  // @ts-expect-error fromPosition is a number or "end"
  store.subscribe({}, () => {}, { fromPosition: "start" });
  // @ts-expect-error there is no such method
  store.append([]);
  // @ts-expect-error no such error code
  void ErrorCode.NOT_A_CODE;
  // @ts-expect-error the store is made by EventStore.open, not new
  new EventStore();
  // @ts-expect-error unknown property in a range
  await store.filter({ queries: [{ subjects: "a.b", sequence: { from: 1, too: 2 } }] });
  // @ts-expect-error unknown property of a filter
  await store.filter({ queries: [{ subjects: "a.b" }], limt: 2 });
  // @ts-expect-error unknown property in a subscription's query
  store.subscribe({ queries: [{ subjectz: "a.b" }] }, () => {});
  // @ts-expect-error unknown property in a position range
  store.events({ queries: [{ position: { frm: 1 } }] });
  // @ts-expect-error count takes a filter
  await store.count({ queries: [{ sequence: 1 }] });
  // @ts-expect-error subscribe takes no limit
  store.subscribe({ limit: 5 }, () => {});
  // @ts-expect-error forget takes no reverse
  await store.forget({ reverse: true });
  // @ts-expect-error an upcaster returns the new payload, not undefined
  await EventStore.open("x", { upcasters: [{ action: "a.b", from: 1, to: 2, upcast: () => undefined }] });
  // @ts-expect-error get takes an id string
  await store.get(1);
  // @ts-expect-error encryption is true or false
  await EventStore.open("x", { encryption: "yes" });
  void [sequence, erased];
}

// @ts-expect-error the event type is StoredEvent: no export shadows the DOM's Event
import type { Event as NotExported } from "eventstore-wasm";
