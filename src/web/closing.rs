//! A signal for the browser closing a connection by itself (IndexedDB's
//! `close` event): calls under way race against it, because after a storage
//! failure Chromium may never settle a transaction created just before
//! the close (seen on a full disk: a push then waited forever).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Fired once, when the browser closes the connection.
#[derive(Default)]
pub struct Closing {
    fired: Cell<bool>,
    waiting: RefCell<Vec<(u64, Waker)>>,
    next: Cell<u64>,
}

impl Closing {
    /// Fires the signal: every [`Closing::wait`] resolves.
    pub fn fire(&self) {
        self.fired.set(true);
        for (_, waker) in self.waiting.take() {
            waker.wake();
        }
    }

    /// Resolves once the signal has fired.
    pub fn wait(self: &Rc<Self>) -> Wait {
        let id = self.next.get();
        self.next.set(id + 1);
        Wait {
            closing: self.clone(),
            id,
        }
    }
}

/// The future of [`Closing::wait`]; dropping it forgets its waker.
pub struct Wait {
    closing: Rc<Closing>,
    id: u64,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing.fired.get() {
            return Poll::Ready(());
        }
        let mut waiting = self.closing.waiting.borrow_mut();
        match waiting.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, waker)) if waker.will_wake(cx.waker()) => {}
            Some((_, waker)) => *waker = cx.waker().clone(),
            None => waiting.push((self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.closing.waiting.try_borrow_mut() {
            waiting.retain(|(id, _)| *id != self.id);
        }
    }
}
