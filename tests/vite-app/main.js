// A user's app importing the package by name, bundled by Vite.
import init, { EventStore } from "eventstore-wasm";

try {
  await init();
  const store = await EventStore.open("vite-app");
  await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada" } }] }]);
  const [event] = await store.filter({ queries: [{ subjects: "user.*.added" }] });
  store.close();
  await EventStore.delete("vite-app");
  document.body.dataset.result = JSON.stringify({ name: event.payload.name, sequence: event.sequence });
} catch (e) {
  document.body.dataset.result = JSON.stringify({ error: `${e.code ?? e.name}: ${e.message}` });
}
