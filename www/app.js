// The playground: push, filter (with wildcards) and forget through the package,
// synced with the sync server that `npm start` runs next to it.
//
// Query parameters: `db=NAME` opens another database (default `playground`;
// a second one acts as a second device in the same browser), `sync=URL` syncs
// with another server (default http://127.0.0.1:8787), `sync=off` turns sync off,
// `token=T` sends a bearer token.
import init, { EventStore } from "../pkg/index.js";

const params = new URLSearchParams(location.search);
const dbName = params.get("db") || "playground";
const syncUrl = params.get("sync") ?? "http://127.0.0.1:8787";

await init();
const store = await EventStore.open(dbName);
document.querySelector("#db").textContent = dbName;
if (dbName !== "playground") {
  const other = document.querySelector("#second");
  other.href = "?db=playground";
  other.textContent = "?db=playground";
}
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
                     e.forgotten ? "(forgotten)" : JSON.stringify(e.payload),
                     e.remotePosition ?? "pending"]) {
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
store.subscribe(undefined, refresh, { fromPosition: "end", onForget: refresh, onWithdraw: refresh, onError: fail });

// ---- sync -------------------------------------------------------------------

const statusLine = document.querySelector("#sync-status");
let sync = null;

function showStatus() {
  if (!sync) return;
  let s;
  try { s = sync.status(); } catch (e) { s = { error: e }; }
  const error = s.error ? `${s.error.code ?? "ERROR"}: ${s.error.message}` : "none";
  statusLine.textContent = `sync with ${syncUrl}: ${s.online ? "online" : "offline"}, pending ${s.pending}, ` +
    `conflicts ${s.conflicts}, remote position ${s.remotePosition ?? "–"}, error ${error}`;
  statusLine.classList.toggle("error", !!s.error);
  document.body.dataset.syncPending = String(s.pending);
  document.body.dataset.syncError = s.error ? (s.error.code ?? "ERROR") : "";
  // Events that became synced show their remote position: redraw on a change.
  const key = `${s.pending}/${s.remotePosition}`;
  if (key !== lastKey) { lastKey = key; refresh(); }
}
let lastKey = "";

if (syncUrl === "off") {
  statusLine.textContent = "sync: off (remove ?sync=off to turn it on)";
  document.querySelector("#flush").disabled = true;
} else if (typeof store.sync !== "function") {
  statusLine.textContent = "sync: this build of the package has no store.sync";
  document.querySelector("#flush").disabled = true;
} else {
  try {
    const options = { url: syncUrl };
    if (params.get("token")) options.token = params.get("token");
    sync = store.sync(options);
    showStatus();
    setInterval(showStatus, 250);
  } catch (e) {
    statusLine.textContent = `sync: ${e.code ?? "ERROR"}: ${e.message}`;
    statusLine.classList.add("error");
  }
}

document.querySelector("#flush").addEventListener("click", async () => {
  if (!sync) return;
  say("flushing …");
  try {
    await sync.flush();
    say("flushed: every pending event sent, everything on the server pulled");
  } catch (e) { fail(e); }
  showStatus();
  await show().catch(fail);
});

await show().catch(fail);
document.body.dataset.ready = "true";
