// Compile-only check (tsc -p tests/types) that the package types
// the API of SPEC section 3 precisely: typical calls type-check, mistakes do not.
import init, {
  EventStore,
  type StoredEvent,
  type PushEntry,
  type Filter,
  type Query,
  type Subject,
  type Pattern,
  type Command,
} from "eventstore-wasm";

export async function usage(): Promise<void> {
  await init();
  const store: EventStore = await EventStore.open("types-check");
  const sealed: EventStore = await EventStore.open("types-check-sealed", { encryption: true });
  sealed.close();

  const aggregate: Subject = ["user", "A"];
  const added: Command = { action: ["user", "A", "added"], revision: 1, payload: { name: "Ada" } };
  const changed: Command = { action: "user.A.email.changed", payload: { email: "ada@example.com" } };
  const entries: PushEntry[] = [
    { aggregate, expectedSequence: 0, commands: [added, changed] },
    { aggregate: "user.B", commands: [{ action: "user.B.added", payload: {} }, { action: "user.B.seen" }] },
  ];
  const events: StoredEvent[] = await store.push(entries);
  const compacted: EventStore = await store.compact();
  compacted.close();

  for (const event of events) {
    const id: string = event.id;
    const tokens: string[] = event.aggregate;
    const action: string[] = event.action;
    const revision: number = event.revision;
    const sequence: number = event.sequence;
    const position: number = event.position;
    const createdAt: number = event.createdAt;
    const forgotten: boolean = event.forgotten;
    const payload: unknown = event.payload;
    void [id, tokens, action, revision, sequence, position, createdAt, forgotten, payload];
  }

  const subjects: Pattern = "user.*.added";
  const query: Query = {
    subjects,
    aggregate: ["user", ">"],
    sequence: { from: 1, to: 10 },
    createdAt: { from: 0, to: Date.now() },
  };
  const filter: Filter = { queries: [query], limit: 100 };
  const found: StoredEvent[] = await store.filter(filter);
  const all: StoredEvent[] = await store.filter({});

  let total = 0;
  await store.filter({ queries: [{ aggregate: "user.A" }] }, (event) => {
    total += event.sequence;
  });

  const erased: number = await store.forget({ queries: [{ aggregate: "user.A" }] });
  void [found, all, total, erased];

  store.close();
  await EventStore.delete("types-check");
}

export async function mistakes(store: EventStore, event: StoredEvent): Promise<void> {
  // @ts-expect-error a sequence is a number, not a string
  const sequence: string = event.sequence;
  // @ts-expect-error a subject is a string or a string array, not a number
  const subject: Subject = 42;
  // @ts-expect-error an entry's aggregate is a subject
  await store.push([{ aggregate: 42, commands: [{ action: "user.A.added" }] }]);
  // @ts-expect-error a command needs an action
  await store.push([{ aggregate: "user.A", commands: [{ payload: 1 }] }]);
  // @ts-expect-error a pattern is a string or a string array
  await store.filter({ queries: [{ subjects: 7 }] });
  // @ts-expect-error limit is a number
  await store.filter({ limit: "10" });
  // @ts-expect-error the reducer gets a StoredEvent, whose id is a string
  await store.filter({}, (e) => e.id.toFixed());
  // @ts-expect-error forget resolves to a number
  const erased: string = await store.forget({});
  // @ts-expect-error there is no such method
  store.append([]);
  void [sequence, subject, erased];
}

export async function live(store: EventStore): Promise<void> {
  const seen: StoredEvent[] = [];
  const stop: () => void = store.subscribe({ queries: [{ subjects: "user.*.added" }] }, (e) => seen.push(e));
  const fromEnd = store.subscribe(undefined, (e) => void e.position, {
    fromPosition: "end",
    onForget: (events: StoredEvent[]) => void events.length,
    onError: (error) => void error,
  });
  for await (const event of store.events({ queries: [{ aggregate: "user.>" }] })) {
    const position: number = event.position;
    void position;
  }
  // @ts-expect-error fromPosition is a number or "end"
  store.subscribe({}, () => {}, { fromPosition: "start" });
  // @ts-expect-error onEvent gets a StoredEvent
  store.subscribe({}, (e: string) => void e);
  stop();
  fromEnd();
}
