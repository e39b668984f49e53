//! IndexedDB requests and write transactions as Rust futures, without a
//! Promise in between: the `success`/`error` (or `complete`/`abort`)
//! handler wakes the task directly, which then resumes in a microtask while
//! the transaction is still active.
//!
//! The handlers are plain JavaScript arrow functions that call one shared
//! wasm closure with a number: no wasm-bindgen `Closure` per request, and
//! one call into JavaScript to listen, one to read the outcome.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use web_sys::{IdbRequest, IdbTransaction};

#[wasm_bindgen(inline_js = r#"
let wake = null;
export function setWake(f) { wake = f; }
// The waits of each connection, by id: when the browser closes it by itself
// (its close event), Chromium may never settle a transaction created just
// before (seen on a full disk), so its waits are woken as closed (2).
const waits = new WeakMap();
export function watch(db) {
  const ids = new Set();
  waits.set(db, ids);
  db.addEventListener("close", () => {
    waits.set(db, null);
    // A transaction's own abort, with its error (a full disk, say), may
    // follow the close event: it is given a moment to arrive, so that the
    // push that hit the full disk says QUOTA_EXCEEDED, not CLOSED.
    setTimeout(() => {
      for (const id of ids) wake(id, 2);
      ids.clear();
    }, 100);
  });
}
function track(db, id) {
  const ids = waits.get(db);
  if (ids) ids.add(id);
  else if (ids === null) queueMicrotask(() => wake(id, 2));
  return (state) => { if (ids) ids.delete(id); wake(id, state); };
}
export function listen(request, id) {
  if (request.readyState === "done") return true;
  const done = track(request.transaction?.db, id);
  request.onsuccess = request.onerror = () => done(1);
  return false;
}
const failures = new Map();
export function listenTransaction(tx, id) {
  const done = track(tx.db, id);
  tx.oncomplete = () => done(1);
  // A failed request's error event bubbles to its transaction before the
  // abort. Engines differ in what the transaction's own error says then
  // (Firefox: AbortError, WebKit: null after an explicit commit()), so the
  // first request's error is the one kept.
  tx.onerror = (e) => { if (!failures.has(id)) failures.set(id, e.target.error); };
  tx.onabort = () => done(0);
}
export function openBackwards(source, range, limit) {
  // getAllRecords (Chromium 141+) reads a page backwards in one request;
  // elsewhere a cursor is stepped.
  return typeof source.getAllRecords === "function"
    ? source.getAllRecords({ query: range, count: limit, direction: "prev" })
    : source.openCursor(range, "prev");
}
export function listenCursor(request, id, limit) {
  const done = track(request.transaction.db, id);
  const out = [];
  request.onsuccess = () => {
    const cursor = request.result;
    if (Array.isArray(cursor)) {
      for (const record of cursor) out.push(record.value);
    } else if (cursor) {
      out.push(cursor.value);
      if (out.length < limit) return cursor.continue();
    }
    done(1);
  };
  request.onerror = () => done(1);
  return out;
}
// An explicit commit() sends the commit with the writes instead of after
// their results, which saves about a fifth of a small push in Chromium. It
// is only safe where a request that fails after commit() still aborts the
// whole transaction: Firefox ESR 153 commits the other writes then (see
// tests/idb_rules.rs). So it is used only where the engine says it is
// Chromium (navigator.userAgentData, which Firefox and WebKit lack, and
// which user-agent switchers do not fake); elsewhere transactions commit
// by themselves once their requests are done.
const chromium = !!globalThis.navigator?.userAgentData?.brands?.some((b) => b.brand === "Chromium");
export function commitEarly(tx) { if (chromium) tx.commit(); }
export function commitsEarly() { return chromium; }
export function abortCause(tx, id) {
  const error = failures.get(id) ?? tx.error;
  failures.delete(id);
  return error;
}
export function forget(id) { failures.delete(id); }
export function outcome(request) {
  const error = request.error;
  if (error) throw error;
  return request.result;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = setWake)]
    fn set_wake(f: &JsValue);
    /// Wakes the waits on `db`'s requests and transactions as closed when
    /// the browser closes it by itself (its `close` event).
    pub fn watch(db: &web_sys::IdbDatabase);
    /// Calls `wake(id, DONE)` when the request finishes; `true` if it already has.
    fn listen(request: &IdbRequest, id: u32) -> bool;
    /// Calls `wake(id, DONE)` when the transaction completes, `wake(id, ABORTED)`
    /// when it aborts.
    #[wasm_bindgen(js_name = listenTransaction)]
    fn listen_transaction(tx: &IdbTransaction, id: u32);
    /// A backwards read of up to `limit` values of `source` (a store or an
    /// index) in `range`: `getAllRecords` where there is one, else a
    /// cursor; for [`CursorValues`].
    #[wasm_bindgen(js_name = openBackwards, catch)]
    pub fn open_backwards(
        source: &JsValue,
        range: &JsValue,
        limit: u32,
    ) -> Result<IdbRequest, JsValue>;
    /// Collects the values of a backwards read (a cursor stepped up to
    /// `limit`, or `getAllRecords`' records) into the array it returns;
    /// calls `wake(id, DONE)` when done or failed.
    #[wasm_bindgen(js_name = listenCursor)]
    fn listen_cursor(request: &IdbRequest, id: u32, limit: u32) -> js_sys::Array;
    /// Why a transaction listened to as `id` aborted: the first failed
    /// request's error, else the transaction's own `error` (may be null).
    #[wasm_bindgen(js_name = abortCause)]
    fn abort_cause(tx: &IdbTransaction, id: u32) -> JsValue;
    /// Drops what was kept for `id` (a transaction that completed).
    #[wasm_bindgen(js_name = forget)]
    fn forget_failure(id: u32);
    /// Commits `tx` at once where that is safe (see the JavaScript above).
    #[wasm_bindgen(js_name = commitEarly)]
    pub fn commit_early(tx: &IdbTransaction);
    /// Whether [`commit_early`] commits in this engine.
    #[wasm_bindgen(js_name = commitsEarly)]
    pub fn commits_early() -> bool;
    /// The request's result, or its error thrown.
    #[wasm_bindgen(catch)]
    fn outcome(request: &IdbRequest) -> Result<JsValue, JsValue>;
}

/// How a wait ended: its transaction aborted.
const ABORTED: u32 = 0;
/// How a wait ended: the request finished or its transaction completed.
const DONE: u32 = 1;
/// How a wait ended: the browser closed the connection first (see `watch`).
const CLOSED: u32 = 2;

/// What a handler finds: the waiting task, and how its event went.
#[derive(Default)]
struct Pending {
    /// `Some(ABORTED | DONE | CLOSED)` once the event fired.
    fired: Option<u32>,
    waker: Option<Waker>,
}

thread_local! {
    /// Signals awaited and not yet fired: a few at a time.
    static PENDING: RefCell<Vec<(u32, Pending)>> = const { RefCell::new(Vec::new()) };
    static NEXT: Cell<u32> = const { Cell::new(0) };
    static WAKE_SET: Cell<bool> = const { Cell::new(false) };
}

fn on_fired(id: u32, state: u32) {
    let waker = PENDING.with(|p| {
        p.borrow_mut()
            .iter_mut()
            .find(|(i, _)| *i == id)
            .and_then(|(_, pending)| {
                // The first outcome stands (a close, then a late abort).
                pending.fired.get_or_insert(state);
                pending.waker.take()
            })
    });
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// A number for one event to wait for; its handler calls [`on_fired`].
fn next_id() -> u32 {
    if !WAKE_SET.with(|s| s.replace(true)) {
        let wake = Closure::<dyn Fn(u32, u32)>::new(on_fired).into_js_value();
        set_wake(&wake);
    }
    NEXT.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1));
        id
    })
}

/// An event awaited by number: how it ended once it fired.
struct Signal(u32);

impl Signal {
    fn new(id: u32) -> Self {
        PENDING.with(|p| p.borrow_mut().push((id, Pending::default())));
        Signal(id)
    }

    fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<u32> {
        PENDING.with(
            |p| match p.borrow_mut().iter_mut().find(|(i, _)| *i == self.0) {
                Some((
                    _,
                    Pending {
                        fired: Some(state), ..
                    },
                )) => Poll::Ready(*state),
                Some((_, pending)) => {
                    pending.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(ABORTED),
            },
        )
    }

    /// Waits for the event: `Err(closed)` if the browser closed the
    /// connection first, else `Ok(state)`.
    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<Result<u32, JsValue>> {
        self.poll_fired(cx).map(|state| match state {
            CLOSED => Err(JsValue::from_str(super::idb::BROWSER_CLOSED)),
            state => Ok(state),
        })
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        // A handler firing later finds nothing to wake.
        PENDING.with(|p| p.borrow_mut().retain(|(i, _)| *i != self.0));
    }
}

/// Resolves to the request's `result`, or its `error` (a DOMException).
pub struct Request {
    request: IdbRequest,
    /// `None` when the request had finished before it was awaited.
    signal: Option<Signal>,
}

impl Request {
    pub fn new(request: IdbRequest) -> Self {
        let id = next_id();
        // A request awaited after it finished (issued with others, awaited
        // in turn) has already fired its event: no handler is needed then.
        let signal = (!listen(&request, id)).then(|| Signal::new(id));
        Request { request, signal }
    }
}

impl Future for Request {
    type Output = Result<JsValue, JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(signal) = &self.signal {
            if let Err(closed) = std::task::ready!(signal.poll_open(cx)) {
                return Poll::Ready(Err(closed));
            }
        }
        Poll::Ready(outcome(&self.request))
    }
}

/// Resolves to `Ok(())` when a transaction completes, `Err(cause)` when it
/// aborts, where `cause` is the first failed request's error (a
/// DOMException), else the transaction's `error` (maybe null). Listens from
/// its creation, so that an early abort is not missed.
pub struct Completion {
    signal: Signal,
    tx: IdbTransaction,
}

impl Completion {
    pub fn new(tx: &IdbTransaction) -> Self {
        let id = next_id();
        listen_transaction(tx, id);
        Completion {
            signal: Signal::new(id),
            tx: tx.clone(),
        }
    }
}

impl Future for Completion {
    type Output = Result<(), JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.signal.poll_open(cx).map(|state| {
            if state? == DONE {
                forget_failure(self.signal.0);
                Ok(())
            } else {
                Err(abort_cause(&self.tx, self.signal.0))
            }
        })
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        forget_failure(self.signal.0);
    }
}

/// Resolves to the values a backwards read returns (up to a limit), newest
/// first, in one wait: `getAllRecords`' records, or a cursor stepped in
/// JavaScript.
pub struct CursorValues {
    request: IdbRequest,
    values: js_sys::Array,
    signal: Signal,
}

impl CursorValues {
    /// `request` must come from [`open_backwards`], just made.
    pub fn new(request: IdbRequest, limit: u32) -> Self {
        let id = next_id();
        let signal = Signal::new(id);
        let values = listen_cursor(&request, id, limit.max(1));
        CursorValues {
            request,
            values,
            signal,
        }
    }
}

impl Future for CursorValues {
    type Output = Result<js_sys::Array, JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::task::ready!(self.signal.poll_open(cx))?;
        outcome(&self.request)?;
        Poll::Ready(Ok(self.values.clone()))
    }
}
