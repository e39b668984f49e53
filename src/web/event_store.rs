//! The exported `EventStore` class.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Reflect};
use wasm_bindgen::prelude::*;

use super::fold::{fold_once, Folder};
use super::idb::{Database, IdbStorage, ENCRYPTION_KEY, FENCE_KEY};
use super::interop::{self, js_error};
use super::live::Live;
use super::marker::{self as opfs, Keeper};
use super::upcast::{self, Upcasters};
use super::vault::Sealer;
use crate::engine::{self, Window};
use crate::error::{Error, Result};
use crate::heads::HeadCache;
use crate::seal::Suite;

#[wasm_bindgen(inline_js = r#"
export function pagedEvents(fetchPage, limit) {
  return {
    async *[Symbol.asyncIterator]() {
      // The last position handed out: the next page starts after it (before
      // it, for a reverse read).
      let last = 0, left = limit;
      while (left > 0) {
        const page = await fetchPage(last, Math.min(left, 1000));
        for (const event of page) yield event;
        if (page.length === 0) return;
        left -= page.length;
        last = page[page.length - 1].position;
      }
    },
  };
}
export function nextTask() { return new Promise((r) => setTimeout(r, 0)); }
// For the background fold (fold.rs), kept in this snippet: each inline_js
// snippet is a module the page loads, and wasm-bindgen-test's runner hangs
// now and then at start with five of them.
export function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
export function idle() {
  return new Promise((resolve) =>
    typeof requestIdleCallback === "function"
      ? requestIdleCallback(() => resolve(), { timeout: 100 })
      : setTimeout(resolve, 0));
}

const DIR = "eventstore-wasm";
async function folder(create) {
  const storage = globalThis.navigator?.storage;
  if (typeof storage?.getDirectory !== "function") return undefined;
  try {
    const root = await storage.getDirectory();
    return await root.getDirectoryHandle(DIR, { create });
  } catch (e) {
    return e?.name === "NotFoundError" ? null : undefined;
  }
}
// Two copies, NAME.json and NAME.2.json; a write replaces the one that does
// not hold the latest marker, so a write cut short (a full disk) leaves it.
const copies = (file) => [file, file.replace(/\.json$/, ".2.json")];
async function readCopies(dir, file) {
  const found = [];
  for (const f of copies(file)) {
    let text;
    try { text = await (await (await dir.getFileHandle(f)).getFile()).text(); } catch { continue; }
    let m = null;
    try { m = JSON.parse(text); } catch {}
    found.push({ f, text, m: typeof m?.lastPosition === "number" ? m : null });
  }
  return found;
}
const latest = (found) => found.filter((c) => c.m).sort((a, b) => b.m.lastPosition - a.m.lastPosition)[0];
export async function readMarker(file) {
  const dir = await folder(false);
  if (!dir) return dir;
  return latest(await readCopies(dir, file))?.m ?? null;
}
function withLock(file, run) {
  const locks = globalThis.navigator?.locks;
  return typeof locks?.request === "function" ? locks.request(`eventstore-wasm:marker:${file}`, run) : run();
}
export function writeMarker(file, format, name, firstId, lastPosition, merge, wanted) {
  const mine = { format, name, firstId, lastPosition };
  return withLock(file, () => writeLocked(file, mine, merge, wanted));
}
async function writeLocked(file, mine, merge, wanted) {
  if (!wanted()) return true;
  const dir = await folder(true);
  if (!dir) return false;
  const found = await readCopies(dir, file);
  const top = latest(found);
  const same = top && top.m.format === mine.format && top.m.name === mine.name && top.m.firstId === mine.firstId;
  if (merge && same && top.m.lastPosition >= mine.lastPosition) return true;
  const [a, b] = copies(file);
  const target = top?.f === a ? b : a;
  if (!merge) {
    // A reset: the other copy may hold the lost log's marker.
    for (const c of found) if (c.f !== target) await dir.removeEntry(c.f).catch(() => {});
  }
  const text = JSON.stringify(mine);
  const handle = await dir.getFileHandle(target, { create: true });
  if (typeof handle.createWritable === "function") {
    const stream = await handle.createWritable();
    await stream.write(text);
    await stream.close();
    return true;
  }
  if (typeof handle.createSyncAccessHandle === "function") {
    const access = await handle.createSyncAccessHandle();
    try {
      const bytes = new TextEncoder().encode(text);
      access.truncate(0);
      access.write(bytes, { at: 0 });
      access.flush();
    } finally {
      access.close();
    }
    return true;
  }
  return false;
}
export function removeMarker(file) {
  return withLock(file, async () => {
    const dir = await folder(false);
    if (!dir) return;
    for (const f of copies(file)) {
      try { await dir.removeEntry(f); } catch (e) { if (e?.name !== "NotFoundError") throw e; }
    }
  });
}
export function later(f, ms) { setTimeout(f, ms); }
export function onHidden(f) {
  const doc = globalThis.document;
  const hidden = () => { if (doc.visibilityState === "hidden") f(); };
  if (!doc || typeof globalThis.addEventListener !== "function") return () => {};
  globalThis.addEventListener("pagehide", f);
  doc.addEventListener("visibilitychange", hidden);
  return () => {
    globalThis.removeEventListener("pagehide", f);
    doc.removeEventListener("visibilitychange", hidden);
  };
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = pagedEvents)]
    fn paged_events(fetch_page: &JsValue, limit: f64) -> JsValue;
    #[wasm_bindgen(js_name = nextTask)]
    async fn next_task();
    /// The latest marker, as parsed from its file; `null` if there is
    /// none, `undefined` if OPFS cannot be used here.
    #[wasm_bindgen(js_name = readMarker)]
    pub(super) async fn read_marker(file: &str) -> JsValue;
    /// Writes the marker; `false` if OPFS cannot be used here.
    #[wasm_bindgen(js_name = writeMarker, catch)]
    pub(super) async fn write_marker(
        file: &str,
        format: u32,
        name: &str,
        first_id: &str,
        last_position: f64,
        merge: bool,
        wanted: &Closure<dyn FnMut() -> bool>,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = removeMarker, catch)]
    pub(super) async fn remove_marker(file: &str) -> Result<JsValue, JsValue>;
    pub(super) fn later(f: JsValue, ms: f64);
    /// Calls `f` on `pagehide` and when the document turns hidden; returns
    /// the function that stops listening.
    #[wasm_bindgen(js_name = onHidden)]
    pub(super) fn on_hidden(f: &Closure<dyn FnMut()>) -> js_sys::Function;
    /// Resolves after `ms` milliseconds.
    pub(super) fn sleep(ms: f64) -> js_sys::Promise;
    /// Resolves when the page is idle (`requestIdleCallback`, at most
    /// 100 ms), or on the next task where there is no such thing.
    pub(super) fn idle() -> js_sys::Promise;
}

/// An event store on one IndexedDB database. Open it with `EventStore.open(name)`.
#[wasm_bindgen]
pub struct EventStore {
    storage: IdbStorage,
    heads: HeadCache,
    live: Rc<Live>,
    folder: Rc<Folder>,
    upcasters: Option<Rc<Upcasters>>,
    /// Keeps the loss marker (`None` where OPFS cannot be used).
    keeper: Option<Rc<Keeper>>,
    /// The last push failed for lack of space (see [`EventStore::push`]).
    out_of_space: std::cell::Cell<bool>,
    /// Where sync's steps are (see `super::sync`).
    session: RefCell<super::sync::Session>,
    /// Whether forgets destroy keys (off only in tests: `__keepKeys`).
    shred: std::cell::Cell<bool>,
    name: String,
}

#[wasm_bindgen]
impl EventStore {
    /// Opens the event store `name`, creating its IndexedDB database if needed.
    /// `options.upcasters` turn old revisions' payloads into current ones
    /// on every read.
    ///
    /// If the database lost events this origin had written (the browser
    /// reset it, as Chromium does after a full disk), rejects with
    /// `DATA_LOST`, unless `options.onDataLost` is given: then it is called
    /// with `{ name, lastPosition, position, reason }` (awaited if it
    /// returns a promise) and the store opens with what is left.
    ///
    /// ```ts
    /// const store = await EventStore.open("my-app", {
    ///   upcasters: [{ action: "user.*.added", from: 1, to: 2, upcast: (p) => ({ ...p, tags: [] }) }],
    ///   onDataLost: ({ lastPosition, position }) => console.warn(`events ${position + 1}..${lastPosition} are gone`),
    /// });
    /// ```
    pub async fn open(
        name: String,
        options: Option<super::types::OpenOptionsArg>,
    ) -> std::result::Result<EventStore, JsValue> {
        let options = options.map_or(JsValue::UNDEFINED, JsValue::from);
        let options = interop::open_options(&options).map_err(js_error)?;
        let upcasters = Upcasters::new(options.upcasters);
        let db = Database::open(&name).await.map_err(js_error)?;
        let storage = IdbStorage(Rc::new(db));
        if let Err(e) = crate::portability::check_not_importing(&storage, &name).await {
            storage.0.close();
            return Err(js_error(e));
        }
        if let Err(e) = encryption(&name, &storage, options.encryption).await {
            storage.0.close();
            return Err(e);
        }
        let keeper = match guard(&name, &storage, options.on_data_lost.as_ref()).await {
            Ok(keeper) => keeper,
            Err(e) => {
                storage.0.close();
                return Err(e);
            }
        };
        // A shred a closed tab left unfinished (see `super::shred`).
        if let Err(e) = super::shred::run(&storage, true).await {
            storage.0.close();
            return Err(js_error(e));
        }
        let live = Live::new(&name, storage.clone(), upcasters.clone());
        let weak = Rc::downgrade(&live);
        storage.0.on_closed(move |why| {
            if let Some(live) = weak.upgrade() {
                live.fail_all(why);
            }
        });
        let folder = Folder::new(storage.clone());
        // Records another tab left unfolded are folded once this page is quiet.
        folder.pushed();
        Ok(EventStore {
            live,
            folder,
            heads: HeadCache::new(),
            storage,
            upcasters,
            keeper,
            out_of_space: std::cell::Cell::new(false),
            session: RefCell::default(),
            shred: std::cell::Cell::new(true),
            name,
        })
    }

    /// Deletes the event store `name` and all its events (and its loss
    /// marker: a deliberate delete is not a loss). Open connections in
    /// other tabs close themselves.
    #[wasm_bindgen(js_name = delete)]
    pub async fn delete_store(name: String) -> std::result::Result<(), JsValue> {
        opfs::deleting(&name);
        Database::delete(&name).await.map_err(js_error)?;
        opfs::remove(&name).await;
        // An encrypted store's keys go with it.
        Sealer::delete(&name).await.map_err(js_error)?;
        Ok(())
    }

    /// Appends events atomically: all entries in one transaction, or none.
    /// Resolves to the stored events in push order.
    #[wasm_bindgen(unchecked_return_type = "Event[]")]
    pub async fn push(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PushEntry[]")] entries: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        let e = match self.push_inner(&entries).await {
            Ok(events) => {
                self.out_of_space.set(false);
                return Ok(events);
            }
            Err(e) => settle(&self.storage.0, e).await,
        };
        // After a full disk, Firefox refuses the next writes with
        // `InvalidStateError: A mutation operation was attempted on a
        // database that did not allow mutations`: still no space.
        let e = match e {
            Error::Storage(m) if self.out_of_space.get() && m.starts_with("InvalidStateError") => {
                Error::QuotaExceeded(format!("the disk is still full: {m}"))
            }
            e => e,
        };
        self.out_of_space.set(matches!(e, Error::QuotaExceeded(_)));
        Err(js_error(e))
    }

    /// Events matching `filter` in position order; with a `reducer`, calls it
    /// once per event instead and resolves to `undefined`.
    #[wasm_bindgen(unchecked_return_type = "Event[] | undefined")]
    pub async fn filter(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter | undefined")] filter: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((event: Event) => void) | undefined")]
        reducer: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        let reducer: Option<Function> = match reducer {
            r if r.is_undefined() || r.is_null() => None,
            r => Some(interop::function(&r, interop::At::root("the reducer")).map_err(js_error)?),
        };
        let thrown: RefCell<Option<JsValue>> = RefCell::new(None);
        let pages: RefCell<Vec<Array>> = RefCell::default();
        let upcasters = self.upcasters.as_deref();
        // The last position given to the reducer: a read done again (an
        // encrypted store meeting a key another tab made) skips up to it.
        let given: std::cell::Cell<Option<f64>> = std::cell::Cell::new(None);
        let read = super::shred::keyed(&self.storage, || {
            pages.borrow_mut().clear();
            engine::filter(&self.storage, &filter, Window::default(), |tx, page| {
                let events = upcast::page_events(tx, page, filter.reverse, upcasters, &thrown)?;
                match &reducer {
                    None => pages.borrow_mut().push(events),
                    Some(f) => {
                        for e in events.iter() {
                            let at = Reflect::get(&e, &interop::key("position"))
                                .ok()
                                .and_then(|p| p.as_f64());
                            let seen = match (given.get(), at) {
                                (Some(g), Some(p)) => (p <= g) != filter.reverse || p == g,
                                _ => false,
                            };
                            if seen {
                                continue;
                            }
                            given.set(at);
                            if let Err(err) = f.call1(&JsValue::UNDEFINED, &e) {
                                thrown.replace(Some(err));
                                return Err(Error::argument("the reducer threw"));
                            }
                        }
                    }
                }
                Ok(())
            })
        });
        let outcome = read.await;
        let mut pages = pages.into_inner();
        if let Some(err) = thrown.into_inner() {
            return Err(err);
        }
        if let Err(e) = outcome {
            return Err(js_error(settle(&self.storage.0, e).await));
        }
        if reducer.is_some() {
            return Ok(JsValue::UNDEFINED);
        }
        // Usually one page: hand it over as it is.
        Ok(match pages.len() {
            0 => Array::new().into(),
            1 => pages.swap_remove(0).into(),
            _ => pages.into_iter().collect::<Array>().flat(1).into(),
        })
    }

    /// Erases the payload of every matching event, keeping its metadata.
    /// Resolves to the number of events newly erased.
    pub async fn forget(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter")] filter: JsValue,
    ) -> std::result::Result<f64, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        let forget = super::shred::keyed(&self.storage, || {
            engine::forget(&self.storage, &filter, interop::random_uuid)
        });
        let (erased, events) = match forget.await {
            Ok(done) => done,
            Err(e) => return Err(js_error(settle(&self.storage.0, e).await)),
        };
        if erased > 0 {
            self.live.forgot(&parse(&events).map_err(js_error)?);
            // Encrypted: the keys of what was erased are destroyed (resolves after).
            super::shred::run(&self.storage, self.shred.get())
                .await
                .map_err(js_error)?;
        }
        Ok(erased as f64)
    }

    /// Delivers every stored event matching `filter` after
    /// `options.fromPosition` (default 0, the start; `"end"`: live only), in
    /// position order, then each new matching event as it is committed here,
    /// in another tab or in a worker. Exactly once, in order, no gap.
    /// `options.onForget(events)` receives already delivered events whose
    /// payload was erased since; `options.onWithdraw(events)` receives
    /// already delivered events that sync took back (a conflict resolved
    /// by rebase, which delivers them again at their new positions, or
    /// discard); `options.onError(error)` is told why a
    /// subscription ended (a throwing `onEvent` ends it too).
    /// Returns the function that ends the subscription.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn subscribe(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter | undefined")] filter: JsValue,
        #[wasm_bindgen(js_name = onEvent, unchecked_param_type = "(event: Event) => void")]
        on_event: JsValue,
        #[wasm_bindgen(unchecked_param_type = "SubscribeOptions | undefined")] options: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        if filter.limit.is_some() {
            return Err(js_error(Error::argument(
                "subscribe does not take a `limit`",
            )));
        }
        if filter.reverse {
            return Err(js_error(Error::argument(
                "subscribe does not take `reverse`: events arrive in position order as they are committed",
            )));
        }
        let on_event =
            interop::function(&on_event, interop::At::root("onEvent")).map_err(js_error)?;
        let options = interop::subscribe_options(&options).map_err(js_error)?;
        let unsubscribe = self.live.subscribe(filter, on_event, options);
        Ok(Closure::<dyn Fn()>::new(move || unsubscribe()).into_js_value())
    }

    /// The events matching `filter` as an async iterable, read from
    /// IndexedDB a page (1,000 events) at a time; newest first with
    /// `reverse: true`.
    #[wasm_bindgen(unchecked_return_type = "AsyncIterable<Event>")]
    pub fn events(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter | undefined")] filter: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        let limit = filter.limit.map_or(f64::INFINITY, |l| l as f64);
        let storage = self.storage.clone();
        let upcasters = self.upcasters.clone();
        let fetch =
            Closure::<dyn Fn(f64, f64) -> js_sys::Promise>::new(move |last: f64, count: f64| {
                let storage = storage.clone();
                let upcasters = upcasters.clone();
                let filter = crate::filter::Filter {
                    limit: Some(count as usize),
                    ..filter.clone()
                };
                wasm_bindgen_futures::future_to_promise(async move {
                    let result = Array::new();
                    let last = last as u64;
                    let window = match (filter.reverse, last) {
                        (false, _) => Window {
                            after: last,
                            ..Window::default()
                        },
                        (true, 0) => Window::default(),
                        (true, _) => Window {
                            before: Some(last),
                            ..Window::default()
                        },
                    };
                    let thrown: RefCell<Option<JsValue>> = RefCell::new(None);
                    let read = super::shred::keyed(&storage, || {
                        result.set_length(0);
                        engine::filter(&storage, &filter, window, |tx, page| {
                            let events = upcast::page_events(
                                tx,
                                page,
                                filter.reverse,
                                upcasters.as_deref(),
                                &thrown,
                            )?;
                            for e in events.iter() {
                                result.push(&e);
                            }
                            Ok(())
                        })
                    });
                    let outcome = read.await;
                    if let Some(e) = thrown.into_inner() {
                        return Err(e);
                    }
                    if let Err(e) = outcome {
                        return Err(js_error(settle(&storage.0, e).await));
                    }
                    Ok(result.into())
                })
            });
        Ok(paged_events(&fetch.into_js_value(), limit))
    }

    /// The event with this id, or `null`.
    #[wasm_bindgen(unchecked_return_type = "Event | null")]
    pub async fn get(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let id = interop::event_id(&id).map_err(js_error)?;
        let thrown = RefCell::new(None);
        let upcasters = self.upcasters.as_deref();
        let event = RefCell::new(JsValue::NULL);
        let read = super::shred::keyed(&self.storage, || {
            engine::get(&self.storage, &id, |tx, page| {
                event.replace(upcast::page_events(tx, page, false, upcasters, &thrown)?.get(0));
                Ok(())
            })
        });
        let outcome = read.await;
        let event = event.into_inner();
        if let Some(e) = thrown.into_inner() {
            return Err(e);
        }
        if let Err(e) = outcome {
            return Err(js_error(settle(&self.storage.0, e).await));
        }
        Ok(event)
    }

    /// How many events match `filter` (at most its `limit`), without
    /// reading them out.
    pub async fn count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter | undefined")] filter: JsValue,
    ) -> std::result::Result<f64, JsValue> {
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        let count = engine::count(&self.storage, &filter);
        match count.await {
            Ok(n) => Ok(n as f64),
            Err(e) => Err(js_error(settle(&self.storage.0, e).await)),
        }
    }

    /// Test hook (tests/e2e/encryption.test.mjs): forgets of this store
    /// no longer destroy keys, to show what crypto-shredding prevents.
    #[wasm_bindgen(js_name = __keepKeys, skip_typescript)]
    pub fn keep_keys(&self) {
        self.shred.set(false);
    }

    /// The name the store was opened with (its IndexedDB database).
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Closes the store: ends its subscriptions; later calls reject with `CLOSED`.
    pub fn close(&self) {
        if let Some(keeper) = &self.keeper {
            keeper.flush_if_due();
            keeper.stop();
        }
        self.live.close();
        self.storage.0.close();
    }
}

impl Drop for EventStore {
    /// `store.free()` and `using store = …` (`Symbol.dispose`) drop the
    /// store: its connection must not stay open, or `EventStore.delete` and
    /// upgrades in other tabs would wait for it.
    fn drop(&mut self) {
        self.close();
    }
}

impl EventStore {
    /// Folds every unfolded record now, in transactions of `budget`
    /// batches; how many records were folded (for tests and benchmarks).
    #[doc(hidden)]
    pub async fn fold_all(&self, budget: usize) -> std::result::Result<usize, JsValue> {
        let mut total = 0;
        loop {
            match fold_once(&self.storage, budget).await.map_err(js_error)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Starts a fold of about `budget` batches and drops it unfinished: the
    /// transaction aborts, as when a tab closes in the middle of a fold
    /// (for tests).
    #[doc(hidden)]
    pub async fn fold_aborted(&self, budget: usize) -> std::result::Result<(), JsValue> {
        use crate::storage::Transaction;
        let mut tx = self.storage.0.fold_write().map_err(js_error)?;
        tx.fold(budget).await.map_err(js_error)?;
        drop(tx);
        Ok(())
    }

    pub(super) fn storage(&self) -> &IdbStorage {
        &self.storage
    }

    pub(super) fn session(&self) -> &RefCell<super::sync::Session> {
        &self.session
    }

    /// The heads this page knows (shared by pushes and pulled pages).
    pub(super) fn head_cache(&self) -> &HeadCache {
        &self.heads
    }

    /// Sync appended, withdrew or changed events: wake subscribers here
    /// and elsewhere, and keep the loss marker in step (the log's first
    /// event may be another one after a conflict).
    pub(super) async fn announce(&self) {
        self.live.committed();
        if let Some(keeper) = &self.keeper {
            if let Ok(found) = crate::marker::found(&self.storage).await {
                keeper.first_changed(found.first_id);
                keeper.committed(found.last_position);
            }
        }
    }

    /// Sync erased payloads (a pulled forget): tell subscribers.
    pub(super) fn forgotten_elsewhere(&self, events: &Array) {
        self.live.forgot(events);
    }

    /// Sync took events back (a conflict's rebase or discard): tell
    /// subscribers, then deliver what was appended.
    pub(super) fn withdrawn(&self, events: &Array) {
        self.live.withdrew(events);
    }

    async fn push_inner(&self, entries: &JsValue) -> Result<JsValue> {
        self.storage.0.check_open()?;
        let entries = interop::push_entries(entries)?;
        let count: usize = entries.iter().map(|e| e.commands.len()).sum();
        let now = js_sys::Date::now() as u64;
        // Random bits for every id of the push, drawn in one call. A push
        // redone (after a failed guess, see `engine::push`, or a moved
        // shred fence) takes the same bits again: the ids of the aborted
        // attempt were never stored.
        let mut random = vec![0u8; count * 10];
        interop::random_bytes(&mut random)?;
        let mut tries = 0;
        let (batches, events) = loop {
            let sealer = self.storage.0.sealer();
            if let Some(sealer) = &sealer {
                // Every key the push seals with, before its transaction starts.
                sealer
                    .ensure(entries.iter().map(|e| e.aggregate.as_str()))
                    .await?;
            }
            let mut used = 0;
            let new_id = || {
                if used + 10 > random.len() {
                    used = 0;
                }
                let mut bytes = [0u8; 10];
                bytes.copy_from_slice(&random[used..used + 10]);
                used += 10;
                uuid::Builder::from_unix_timestamp_millis(now, &bytes)
                    .into_uuid()
                    .to_string()
            };
            let push = engine::push(
                &self.storage,
                &self.heads,
                &entries,
                now,
                new_id,
                |tx, _| tx.added_events(),
            );
            match push.await {
                // Undone for a shred elsewhere: again, under the new keys.
                Err(_)
                    if tries < super::shred::KEYED_TRIES
                        && sealer.as_ref().is_some_and(|s| s.wants()) =>
                {
                    if let Some(sealer) = &sealer {
                        sealer.refresh().await?;
                    }
                    tries += 1;
                }
                done => break done?,
            }
        };
        if let Some(last) = batches.iter().map(|b| b.last_position).max() {
            self.live.committed();
            self.folder.pushed();
            if let Some(keeper) = &self.keeper {
                if keeper.needs_first_id() {
                    // The log's first push: its first event may be position 1.
                    let first = events.get(0);
                    let position = Reflect::get(&first, &interop::key("position"));
                    if position.ok().and_then(|p| p.as_f64()) == Some(1.0) {
                        let id = Reflect::get(&first, &interop::key("id"));
                        if let Some(id) = id.ok().and_then(|i| i.as_string()) {
                            keeper.first_id(id);
                        }
                    }
                }
                keeper.committed(last);
            }
        }
        Ok(events.into())
    }
}

/// A storage failure after the browser closed the connection is `CLOSED`,
/// not a bare `STORAGE: AbortError`: the transactions it aborts fail before
/// its `close` event, so a storage error waits one task for that event.
pub async fn settle(db: &Database, e: Error) -> Error {
    if !matches!(e, Error::Storage(_) | Error::Constraint(_)) {
        return e;
    }
    if db.closed_reason().is_none() {
        next_task().await;
    }
    match db.closed_reason() {
        Some(why) => Error::Closed(why),
        None => e,
    }
}

/// Checks the database against its loss marker (see `crate::marker`):
/// `DATA_LOST`, or `onDataLost` told and the marker reset. Returns the
/// keeper of the marker, `None` where OPFS cannot be used.
async fn guard(
    name: &str,
    storage: &IdbStorage,
    on_data_lost: Option<&Function>,
) -> std::result::Result<Option<Rc<Keeper>>, JsValue> {
    let Some(mut marker) = opfs::read(name).await else {
        return Ok(None);
    };
    let found = crate::marker::found(storage).await.map_err(js_error)?;
    if let Some((m, loss)) = marker
        .as_ref()
        .and_then(|m| crate::marker::check(m, &found).map(|loss| (m, loss)))
    {
        let Some(f) = on_data_lost else {
            return Err(js_error(Error::DataLost {
                name: name.to_owned(),
                last_position: m.last_position,
                position: found.last_position,
                reason: loss.as_str(),
                found: match (loss, &found.first_id) {
                    (crate::marker::Loss::Replaced, Some(id)) => {
                        format!("holds another log (its first event is {id})")
                    }
                    (_, Some(_)) => format!("ends at position {}", found.last_position),
                    (_, None) => "is empty".into(),
                },
            }));
        };
        let info =
            interop::data_lost_info(name, m.last_position, found.last_position, loss.as_str());
        let answer = f.call1(&JsValue::UNDEFINED, &info)?;
        wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&answer)).await?;
        opfs::reset(name, &found).await;
        marker = found.first_id.clone().map(|id| crate::marker::Marker {
            format: crate::marker::FORMAT,
            name: name.to_owned(),
            first_id: id,
            last_position: found.last_position,
        });
    }
    Ok(Some(Keeper::start(
        name,
        storage.clone(),
        &found,
        marker.as_ref(),
    )))
}

/// Checks `{ encryption }` against the store's flag (docs/privacy.md) and
/// gives an encrypted store its keys.
async fn encryption(
    name: &str,
    storage: &IdbStorage,
    on: bool,
) -> std::result::Result<(), JsValue> {
    let flag = storage
        .0
        .sync_entry(ENCRYPTION_KEY)
        .await
        .map_err(js_error)?;
    let flagged = !flag.is_undefined();
    if !on && !flagged {
        return Ok(());
    }
    if !on {
        return Err(js_error(Error::argument(format!(
            "store {name:?} is encrypted: open it with EventStore.open({name:?}, {{ encryption: true }})"
        ))));
    }
    // The store's cipher: the one its flag names, the current one for a new store.
    let suite = match flag.as_string() {
        Some(text) => Suite::of_flag(name, &text).map_err(js_error)?,
        None if flagged => {
            return Err(js_error(Error::Storage(format!(
                "store {name:?}: corrupt encryption entry (not a text)"
            ))))
        }
        None => Suite::default(),
    };
    if !flagged && engine::last_position(storage).await.map_err(js_error)? > 0 {
        return Err(js_error(Error::argument(format!(
            "store {name:?} holds events stored without encryption, which cannot be turned on for them: open it without `encryption`, or export its events and import them into a new store opened with {{ encryption: true }}"
        ))));
    }
    let sealer = match Sealer::open(name, !flagged, suite).await {
        Ok(s) => s,
        Err(e) => {
            if Reflect::get(&e, &"code".into())
                .ok()
                .and_then(|c| c.as_string())
                .as_deref()
                == Some("DATA_LOST")
            {
                let detail = Reflect::get(&e, &"message".into()).unwrap_or_default();
                let message = format!(
                    "store {name:?} is encrypted but its key vault is gone, so its keys are lost and its payloads cannot be read ({})",
                    detail.as_string().unwrap_or_default()
                );
                let _ = Reflect::set(&e, &"message".into(), &message.into());
            }
            return Err(e);
        }
    };
    let sealer = Rc::new(sealer);
    // The shred fence, read before the keys are loaded: keys are then at
    // least as new as it (see `IdbTx::check_fence`).
    let fence = storage.0.sync_entry(FENCE_KEY).await.map_err(js_error)?;
    sealer.set_fence(fence.as_f64().unwrap_or(0.0));
    if let Err(e) = sealer.preload().await {
        sealer.close();
        return Err(js_error(e));
    }
    if flagged {
        recover_binds(storage, &sealer).await;
    } else if let Err(e) = storage
        .0
        .put_sync_entry(ENCRYPTION_KEY, Some(&suite.flag()))
        .await
    {
        sealer.close();
        return Err(js_error(e));
    }
    storage.0.set_sealer(sealer);
    Ok(())
}

/// Finishes the binds that connections now gone (closed, crashed) left
/// unconfirmed (see `Sealer::pending_binds`), and deletes their records.
/// Not fatal: a record not done stays, and a forget destroys the slots it
/// names all the same.
async fn recover_binds(storage: &IdbStorage, sealer: &Sealer) {
    // Who is open is asked first: a connection missing from the answer is
    // gone, so its last write is in the records read next.
    let Some(open) = sealer.open_binds_keys().await else {
        return;
    };
    let Ok(entries) = storage.0.binds_entries().await else {
        return;
    };
    for (key, json) in entries {
        if open.contains(&key) || key == sealer.binds_key() {
            continue;
        }
        // One record at a time: one the vault refuses does not hold up the others.
        if sealer.bind_recorded(&json).await.is_ok() {
            let _ = storage.0.drop_binds_entry(&key, &json).await;
        }
    }
}

fn parse(json: &str) -> Result<Array> {
    js_sys::JSON::parse(json)
        .map(|v| Array::from(&v))
        .map_err(|e| Error::Storage(format!("cannot decode events: {e:?}")))
}
