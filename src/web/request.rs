//! An IndexedDB request as a Rust future, without a Promise in between:
//! the request's `success`/`error` handler wakes the task directly, which
//! then resumes in a microtask while the transaction is still active.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{IdbRequest, IdbRequestReadyState};

#[derive(Default)]
struct State {
    finished: bool,
    waker: Option<Waker>,
}

/// Resolves to the request's `result`, or its `error` (a DOMException).
pub struct Request {
    request: IdbRequest,
    state: Rc<RefCell<State>>,
    on_done: Option<Closure<dyn FnMut()>>,
}

impl Request {
    pub fn new(request: IdbRequest) -> Self {
        let state = Rc::new(RefCell::new(State::default()));
        // A request awaited after it finished (issued with others, awaited in
        // turn) has already fired its event: no handler is needed then.
        let on_done = (request.ready_state() != IdbRequestReadyState::Done).then(|| {
            let state = state.clone();
            let on_done = Closure::<dyn FnMut()>::new(move || {
                let mut s = state.borrow_mut();
                s.finished = true;
                if let Some(waker) = s.waker.take() {
                    waker.wake();
                }
            });
            request.set_onsuccess(Some(on_done.as_ref().unchecked_ref()));
            request.set_onerror(Some(on_done.as_ref().unchecked_ref()));
            on_done
        });
        if on_done.is_none() {
            state.borrow_mut().finished = true;
        }
        Request {
            request,
            state,
            on_done,
        }
    }
}

impl Future for Request {
    type Output = Result<JsValue, JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.state.borrow_mut();
        if !state.finished {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(match self.request.error() {
            Ok(Some(error)) => Err(error.into()),
            Ok(None) => self.request.result(),
            Err(e) => Err(e),
        })
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.on_done.is_some() {
            self.request.set_onsuccess(None);
            self.request.set_onerror(None);
        }
    }
}
