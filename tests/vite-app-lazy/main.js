// A user's app that imports the package by name and never calls init(),
// bundled by Vite with its default build target (no top-level await).
import { EventStore, EventStoreError } from "eventstore-wasm";

async function main() {
  const store = await EventStore.open("vite-app-lazy");
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada" } }] }]);
  const [event] = await store.filter({ queries: [{ subjects: "user.*.added" }] });
  const error = await store.push([{ aggregate: "user.*", commands: [{ action: "x" }] }]).catch((e) => e);
  store.close();
  await EventStore.delete("vite-app-lazy");
  return { name: event.payload.name, sequence: event.sequence, error: error instanceof EventStoreError && error.code };
}

main().then(
  (result) => (document.body.dataset.result = JSON.stringify(result)),
  (e) => (document.body.dataset.result = JSON.stringify({ error: `${e.code ?? e.name}: ${e.message}` })),
);
