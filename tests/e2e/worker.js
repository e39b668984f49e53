// A module worker running the store, for tests/e2e/subscribe.test.mjs:
// on { name, aggregate, count } it pushes `count` events and answers "done".
// No `init()`: the entry loads the module on the first EventStore.open.
import { EventStore } from "/pkg/index.js";

self.onmessage = async ({ data: { name, aggregate, count } }) => {
  try {
    const store = await EventStore.open(name);
    for (let i = 0; i < count; i++) {
      await store.push([{ aggregate, commands: [{ action: `${aggregate}.pushed`, payload: { i } }] }]);
    }
    const mine = await store.filter({ queries: [{ aggregate }] });
    store.close();
    self.postMessage({ done: mine.length });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
self.postMessage({ ready: true });
