// The README's other examples, as a TypeScript app under `strict` writes them.
import init, { EventStore, EventStoreError, ErrorCode, isEventStoreError, type StoredEvent } from "eventstore-wasm";

await init(); // optional, idempotent
const store = await EventStore.open("readme");

// The example's reducer: payloads are `any` without an event map.
const names: Record<string, string> = {};
await store.filter({ queries: [{ aggregate: "user.>" }] }, (e) => {
  names[e.aggregate[1]] = e.payload.name;
});
const [first] = await store.filter({ queries: [{ aggregate: "user.A" }], limit: 1 });
console.assert(first.payload === null && first.forgotten && first.sequence === 1);

// A Date payload is accepted (stored as JSON.stringify writes it).
await store.push([{ aggregate: "user.C", commands: [{ action: "user.C.seen", payload: { at: new Date() } }] }]);

// An interface payload.
interface Renamed {
  name: string;
  previous?: string;
}
const renamed: Renamed = { name: "Ada L." };
await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.renamed", revision: 2, payload: renamed }] }]);

// Live subscriptions.
declare const view: { add(e: StoredEvent): void; erase(events: StoredEvent[]): void };
declare const savedPosition: number;
const unsubscribe = store.subscribe(
  { queries: [{ subjects: "user.*.added" }] },
  (event) => view.add(event),
  { fromPosition: savedPosition, onForget: (events) => view.erase(events), onError: (error) => console.error(error) },
);
unsubscribe();

// Async iteration.
for await (const event of store.events({ queries: [{ aggregate: "user.>" }] })) {
  const p: number = event.position;
  void p;
}

// The reads.
const one = await store.get("0192…");
if (one !== null) void one.payload;
const n: number = await store.count({ queries: [{ aggregate: "user.>" }] });
const last20 = await store.filter({ queries: [{ aggregate: "user.>" }], reverse: true, limit: 20 });
const since = await store.filter({ queries: [{ position: { from: savedPosition + 1 } }] });
void [n, last20, since];

// Open options.
const upcasted = await EventStore.open("readme-upcast", {
  upcasters: [{ action: "user.*.added", from: 1, to: 2, upcast: (payload) => ({ ...payload, email: null }) }],
  onDataLost: ({ lastPosition, position, reason }) => console.warn(`events ${position + 1}..${lastPosition} are gone (${reason})`),
});
upcasted.close();

// Errors: a real class, a type guard and the codes as values.
try {
  await store.push([{ aggregate: "user.A", expectedSequence: 0, commands: [{ action: "user.A.added" }] }]);
} catch (e) {
  if (e instanceof EventStoreError && e.code === ErrorCode.SEQUENCE_MISMATCH) {
    const at: string[] | undefined = e.aggregate;
    void [at, e.expected, e.actual];
  }
  if (isEventStoreError(e, "CLOSED")) {
    const code: "CLOSED" = e.code;
    void code;
  }
}

// The DOM's Event is still the DOM's.
const click: Event = new Event("click");
void click;

// Disposal.
{
  using disposable = await EventStore.open("readme-dispose");
  void disposable;
}

store.close();
await EventStore.delete("readme");
