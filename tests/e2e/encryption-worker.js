// A module worker on an encrypted store, for tests/e2e/encryption.test.mjs:
// on { name, aggregate, count } it pushes `count` events with markers, then
// answers with every payload of the store it reads (the page's too).
import { EventStore } from "/pkg/index.js";

self.onmessage = async ({ data: { name, aggregate, count } }) => {
  try {
    const store = await EventStore.open(name, { encryption: true });
    for (let i = 0; i < count; i++) {
      await store.push([{ aggregate, commands: [{ action: `${aggregate}.pushed`, payload: { secret: `WORKER-${aggregate}-${i}` } }] }]);
    }
    const all = await store.filter();
    store.close();
    self.postMessage({ payloads: all.map((e) => e.payload) });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
self.postMessage({ ready: true });
