//! Folding in the background (see [`crate::log`]): once pushes pause, in
//! small transactions, one per idle period.

use std::cell::Cell;
use std::rc::Rc;

use super::event_store::{idle, sleep};
use super::idb::IdbStorage;
use crate::error::Result;
use crate::log::FOLD_BUDGET;
use crate::storage::Transaction;

/// A fold transaction starts once no push and no read has begun for this
/// long (a fold holds back the reads and pushes that come after it)...
const QUIET_MS: f64 = 100.0;
/// ...or, the first, this long after the first push it has not folded yet,
/// whatever the reads and pushes;
const MAX_WAIT_MS: f64 = 1000.0;
/// later ones, while pushes and reads go on, this many times as long after
/// the last one as it took: folding takes at most a quarter of a busy
/// page's time, so that a long import is slowed by a quarter at most and
/// folded once it pauses.
const BUSY_SHARE: f64 = 3.0;

thread_local! {
    /// Background folding paused in this thread (for tests).
    static PAUSED: Cell<bool> = const { Cell::new(false) };
}

/// Pauses (or resumes) background folding in this thread: for tests that
/// look at unfolded records. Folds already running finish.
pub fn pause_folding(paused: bool) {
    PAUSED.with(|p| p.set(paused));
}

/// The background folder of one store.
pub struct Folder {
    storage: IdbStorage,
    running: Cell<bool>,
    /// Pushes since the loop last found nothing to fold.
    dirty: Cell<bool>,
    last_push: Cell<f64>,
    first_push: Cell<f64>,
}

impl Folder {
    pub fn new(storage: IdbStorage) -> Rc<Folder> {
        Rc::new(Folder {
            storage,
            running: Cell::new(false),
            dirty: Cell::new(false),
            last_push: Cell::new(0.0),
            first_push: Cell::new(0.0),
        })
    }

    /// Something may need folding: a push committed, or the store opened
    /// (records other tabs left unfolded).
    pub fn pushed(self: &Rc<Self>) {
        let now = js_sys::Date::now();
        if !self.dirty.replace(true) {
            self.first_push.set(now);
        }
        self.last_push.set(now);
        if self.running.replace(true) {
            return;
        }
        let me = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            me.run().await;
            me.running.set(false);
        });
    }

    /// Waits until pushes and reads pause, or until `deadline`.
    async fn settle(&self, deadline: f64) {
        loop {
            let now = js_sys::Date::now();
            let active = self.last_push.get().max(self.storage.0.read_at());
            let quiet = now - active;
            if !PAUSED.with(Cell::get) && (quiet >= QUIET_MS || now >= deadline) {
                return;
            }
            let wait = (QUIET_MS - quiet).clamp(10.0, QUIET_MS);
            let _ = wasm_bindgen_futures::JsFuture::from(sleep(wait)).await;
        }
    }

    async fn run(&self) {
        while self.dirty.get() {
            self.settle(self.first_push.get() + MAX_WAIT_MS).await;
            self.dirty.set(false);
            loop {
                let _ = wasm_bindgen_futures::JsFuture::from(idle()).await;
                if PAUSED.with(Cell::get) {
                    self.dirty.set(true);
                    break;
                }
                let began = js_sys::Date::now();
                let fold =
                    super::shred::keyed(&self.storage, || fold_once(&self.storage, FOLD_BUDGET));
                match fold.await {
                    Ok(0) => break,
                    Ok(_) => {}
                    // Closed, or failing: the next push or open tries again.
                    Err(_) => return,
                }
                let now = js_sys::Date::now();
                self.settle(now + BUSY_SHARE * (now - began)).await;
            }
        }
    }
}

/// One fold transaction: about `budget` batches; how many records it folded.
pub async fn fold_once(storage: &IdbStorage, budget: usize) -> Result<usize> {
    let mut tx = storage.0.fold_write()?;
    let folded = tx.fold(budget).await?;
    tx.commit().await?;
    Ok(folded)
}
