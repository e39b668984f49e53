//! An IndexedDB request as a Rust future, without a Promise in between:
//! the request's `success`/`error` handler wakes the task directly, which
//! then resumes in a microtask while the transaction is still active.
//!
//! The handlers are plain JavaScript arrow functions that call one shared
//! wasm closure with the request's number: no wasm-bindgen `Closure` per
//! request, and one call into JavaScript to listen, one to read the outcome.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use web_sys::IdbRequest;

#[wasm_bindgen(inline_js = r#"
let wake = null;
export function setWake(f) { wake = f; }
export function listen(request, id) {
  if (request.readyState === "done") return true;
  request.onsuccess = request.onerror = () => wake(id);
  return false;
}
export function outcome(request) {
  const error = request.error;
  if (error) throw error;
  return request.result;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = setWake)]
    fn set_wake(f: &JsValue);
    /// Calls `wake(id)` when the request finishes; `true` if it already has.
    fn listen(request: &IdbRequest, id: u32) -> bool;
    /// The request's result, or its error thrown.
    #[wasm_bindgen(catch)]
    fn outcome(request: &IdbRequest) -> Result<JsValue, JsValue>;
}

/// What a pending request's handler finds: its waker, and whether it fired.
#[derive(Default)]
struct Pending {
    finished: bool,
    waker: Option<Waker>,
}

thread_local! {
    /// Requests awaited and not yet finished: a few at a time.
    static PENDING: RefCell<Vec<(u32, Pending)>> = const { RefCell::new(Vec::new()) };
    static NEXT: Cell<u32> = const { Cell::new(0) };
    static WAKE_SET: Cell<bool> = const { Cell::new(false) };
}

fn on_finished(id: u32) {
    let waker = PENDING.with(|p| {
        p.borrow_mut()
            .iter_mut()
            .find(|(i, _)| *i == id)
            .and_then(|(_, pending)| {
                pending.finished = true;
                pending.waker.take()
            })
    });
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Resolves to the request's `result`, or its `error` (a DOMException).
pub struct Request {
    request: IdbRequest,
    /// `None` when the request had finished before it was awaited.
    id: Option<u32>,
}

impl Request {
    pub fn new(request: IdbRequest) -> Self {
        if !WAKE_SET.with(|s| s.replace(true)) {
            let wake = Closure::<dyn Fn(u32)>::new(on_finished).into_js_value();
            set_wake(&wake);
        }
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1));
            id
        });
        // A request awaited after it finished (issued with others, awaited
        // in turn) has already fired its event: no handler is needed then.
        if listen(&request, id) {
            return Request { request, id: None };
        }
        PENDING.with(|p| p.borrow_mut().push((id, Pending::default())));
        Request {
            request,
            id: Some(id),
        }
    }
}

impl Future for Request {
    type Output = Result<JsValue, JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(id) = self.id {
            let waiting =
                PENDING.with(
                    |p| match p.borrow_mut().iter_mut().find(|(i, _)| *i == id) {
                        Some((_, pending)) if !pending.finished => {
                            pending.waker = Some(cx.waker().clone());
                            true
                        }
                        _ => false,
                    },
                );
            if waiting {
                return Poll::Pending;
            }
        }
        Poll::Ready(outcome(&self.request))
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // A handler firing later finds nothing to wake.
            PENDING.with(|p| p.borrow_mut().retain(|(i, _)| *i != id));
        }
    }
}
