// The playground: push, filter (with wildcards) and forget through the package.
import init, { EventStore } from "../pkg/index.js";

await init();
const store = await EventStore.open("playground");
const log = document.querySelector("#log");
const say = (text) => { log.textContent = text; };
const fail = (e) => say(`${e.code ?? "ERROR"}: ${e.message}`);

function currentFilter() {
  const f = new FormData(document.querySelector("#filter"));
  const query = {};
  if (f.get("subjects")) query.subjects = f.get("subjects");
  if (f.get("aggregate")) query.aggregate = f.get("aggregate");
  const filter = { queries: [query] };
  if (f.get("limit")) filter.limit = Number(f.get("limit"));
  return filter;
}

async function show() {
  const events = await store.filter(currentFilter());
  const rows = events.map((e) => {
    const tr = document.createElement("tr");
    if (e.forgotten) tr.className = "forgotten";
    for (const v of [e.position, e.aggregate.join("."), e.sequence, e.action.join("."), e.revision,
                     e.forgotten ? "(forgotten)" : JSON.stringify(e.payload)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  document.querySelector("#events").replaceChildren(...rows);
  return events.length;
}

document.querySelector("#push").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    const payload = f.get("payload") ? JSON.parse(f.get("payload")) : null;
    const entry = { aggregate: f.get("aggregate"), commands: [{ action: f.get("action"), payload }] };
    if (f.get("expected") !== "") entry.expectedSequence = Number(f.get("expected"));
    const [event] = await store.push([entry]);
    say(`pushed ${event.action.join(".")} as sequence ${event.sequence}, position ${event.position}`);
    await show();
  } catch (e) { fail(e); }
});

document.querySelector("#filter").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { say(`${await show()} events`); } catch (e) { fail(e); }
});

document.querySelector("#forget").addEventListener("click", async () => {
  try {
    const { queries } = currentFilter();
    const n = await store.forget({ queries });
    say(`forgot the payload of ${n} events`);
    await show();
  } catch (e) { fail(e); }
});

// Keep the table current when events land here, in another tab or a worker.
let pending = false;
const refresh = () => {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; show().catch(fail); });
};
store.subscribe(undefined, refresh, { fromPosition: "end", onForget: refresh, onError: fail });

await show().catch(fail);
document.body.dataset.ready = "true";
