//! The loss marker in the Origin Private File System (rules in
//! `crate::marker` and `docs/storage.md`): read and checked at open,
//! rewritten off the push path (the first events at once, then at most
//! every second, and when the page is hidden or the store closed), removed
//! by `EventStore.delete`. Where OPFS is missing the store runs without it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use wasm_bindgen::prelude::*;

// The OPFS calls are JavaScript in `event_store`'s snippet: each snippet is
// one more module the page loads, and wasm-bindgen-test-runner's server
// drops connections when a page loads more than four or five of them.
use super::event_store::{later, on_hidden, read_marker, remove_marker, write_marker};
use super::idb::IdbStorage;
use crate::marker::{self, Due, Found, Marker, Schedule};

/// What the marker says at open: `None` where OPFS cannot be used.
pub async fn read(name: &str) -> Option<Option<Marker>> {
    let found = read_marker(&marker::file_name(name)).await;
    if found.is_undefined() {
        return None;
    }
    Some(from_js(&found).filter(|m| m.is_for(name)))
}

/// The marker in the object JavaScript parsed from its file; `None` for
/// anything else (a field missing or of another type, a position that is
/// not a safe non-negative integer).
fn from_js(m: &JsValue) -> Option<Marker> {
    if !m.is_object() {
        return None;
    }
    let field = |key: &str| js_sys::Reflect::get(m, &JsValue::from_str(key)).ok();
    let format = field("format")?.as_f64()?;
    let last = field("lastPosition")?.as_f64()?;
    if format != f64::from(marker::FORMAT)
        || !(0.0..=9_007_199_254_740_991.0).contains(&last)
        || last.fract() != 0.0
    {
        return None;
    }
    Some(Marker {
        format: marker::FORMAT,
        name: field("name")?.as_string()?,
        first_id: field("firstId")?.as_string()?,
        last_position: last as u64,
    })
}

/// Removes the marker of `name` (a deliberate delete is not a loss).
pub async fn remove(name: &str) {
    let _ = remove_marker(&marker::file_name(name)).await;
}

thread_local! {
    /// `EventStore.delete` calls per store name in this thread: a keeper
    /// started before one never writes again (its write would bring back
    /// the marker that the delete removes).
    static DELETES: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

fn deletes(name: &str) -> u64 {
    DELETES.with(|d| d.borrow().get(name).copied().unwrap_or(0))
}

/// Notes that `EventStore.delete(name)` was called (before it deletes).
pub fn deleting(name: &str) {
    DELETES.with(|d| *d.borrow_mut().entry(name.to_owned()).or_insert(0) += 1);
}

/// Writes a marker for what `found` says, or removes it for an empty log.
pub async fn reset(name: &str, found: &Found) {
    match &found.first_id {
        Some(id) => {
            let _ = write(name, id, found.last_position, false, || true).await;
        }
        None => remove(name).await,
    }
}

/// Writes the marker under a Web Lock per store (where there are Web
/// Locks), so that writes and `delete`'s removal do not interleave across
/// tabs and workers; `wanted` is asked under the lock. With `merge`, a
/// marker of the same log with a higher position is kept.
async fn write(
    name: &str,
    first_id: &str,
    last_position: u64,
    merge: bool,
    wanted: impl FnMut() -> bool + 'static,
) -> bool {
    // JavaScript writes the JSON (`{ format, name, firstId, lastPosition }`):
    // it parses the other copy there anyway (see `event_store`'s snippet).
    let wanted = Closure::<dyn FnMut() -> bool>::new(wanted);
    let file = marker::file_name(name);
    let written = write_marker(
        &file,
        marker::FORMAT,
        name,
        first_id,
        last_position as f64,
        merge,
        &wanted,
    )
    .await;
    matches!(written, Ok(v) if v.is_truthy())
}

/// Keeps one store's marker up to date as its pushes commit.
pub struct Keeper {
    name: String,
    storage: IdbStorage,
    schedule: RefCell<Schedule>,
    first_id: RefCell<Option<String>>,
    /// A timer is set for a later write.
    planned: Cell<bool>,
    /// A write is under way; `again`: another is due after it.
    writing: Cell<bool>,
    again: Cell<bool>,
    /// Stops the `pagehide`/`visibilitychange` listeners.
    stop_listening: RefCell<Option<js_sys::Function>>,
    /// [`deletes`] of the name when the keeper started.
    generation: u64,
    _on_hidden: RefCell<Option<Closure<dyn FnMut()>>>,
}

impl Keeper {
    /// A keeper for a store opened with `found` in it and `marker` (if it
    /// names the same log) in OPFS; writes at once if the marker lags.
    pub fn start(
        name: &str,
        storage: IdbStorage,
        found: &Found,
        marker: Option<&Marker>,
    ) -> Rc<Keeper> {
        let now = js_sys::Date::now();
        let mut schedule = Schedule::default();
        if let Some(m) = marker.filter(|m| Some(&m.first_id) == found.first_id.as_ref()) {
            schedule.wrote(m.last_position, now);
        }
        schedule.known = found.last_position;
        let keeper = Rc::new(Keeper {
            name: name.to_owned(),
            storage,
            schedule: RefCell::new(schedule),
            first_id: RefCell::new(found.first_id.clone()),
            planned: Cell::new(false),
            writing: Cell::new(false),
            again: Cell::new(false),
            stop_listening: RefCell::new(None),
            generation: deletes(name),
            _on_hidden: RefCell::new(None),
        });
        let weak = Rc::downgrade(&keeper);
        let closure = Closure::<dyn FnMut()>::new(move || {
            if let Some(k) = weak.upgrade() {
                k.flush_if_due();
            }
        });
        keeper.stop_listening.replace(Some(on_hidden(&closure)));
        keeper._on_hidden.replace(Some(closure));
        keeper.act(keeper.schedule.borrow().due(now));
        keeper
    }

    /// A push committed up to `position`. Costs a clock read and a few
    /// comparisons unless a write is due.
    pub fn committed(self: &Rc<Self>, position: u64) {
        let due = self
            .schedule
            .borrow_mut()
            .committed(position, js_sys::Date::now());
        self.act(due);
    }

    /// Whether the log's first id is still unknown (the log was empty).
    pub fn needs_first_id(&self) -> bool {
        self.first_id.borrow().is_none()
    }

    /// The id of the event at position 1, seen in a push.
    pub fn first_id(&self, id: String) {
        self.first_id.replace(Some(id));
    }

    /// Sync changed the log's first event (a conflict withdrew it): the
    /// marker names the new one at once, so that the next open does not
    /// take the change for a reset.
    pub fn first_changed(self: &Rc<Self>, id: Option<String>) {
        if *self.first_id.borrow() != id {
            self.first_id.replace(id);
            self.write_now();
        }
    }

    /// Writes now whatever is not written yet (page hidden, store closed).
    pub fn flush_if_due(self: &Rc<Self>) {
        let due = self.schedule.borrow().due(js_sys::Date::now());
        if due != Due::Nothing {
            self.write_now();
        }
    }

    /// Stops listening for the page going hidden.
    pub fn stop(&self) {
        if let Some(stop) = self.stop_listening.borrow_mut().take() {
            let _ = stop.call0(&JsValue::UNDEFINED);
        }
    }

    fn act(self: &Rc<Self>, due: Due) {
        match due {
            Due::Nothing => {}
            Due::Now => self.write_now(),
            Due::After(ms) => {
                if !self.planned.replace(true) {
                    let weak: Weak<Keeper> = Rc::downgrade(self);
                    let f = Closure::once_into_js(move || {
                        if let Some(k) = weak.upgrade() {
                            k.planned.set(false);
                            let due = k.schedule.borrow().due(js_sys::Date::now());
                            k.act(due);
                        }
                    });
                    later(f, ms);
                }
            }
        }
    }

    fn write_now(self: &Rc<Self>) {
        if self.writing.replace(true) {
            self.again.set(true);
            return;
        }
        let keeper = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let due = loop {
                keeper.again.set(false);
                if !keeper.write_once().await {
                    keeper.schedule.borrow_mut().failed(js_sys::Date::now());
                }
                let due = keeper.schedule.borrow().due(js_sys::Date::now());
                if !(keeper.again.get() && due == Due::Now) {
                    break due;
                }
            };
            keeper.writing.set(false);
            // Positions that came in during the write wait their turn.
            if let Due::After(_) = due {
                keeper.act(due);
            }
        });
    }

    /// Reads the first id if not known yet and writes, keeping a higher
    /// position that another tab or worker wrote.
    async fn write_once(&self) -> bool {
        let target = self.schedule.borrow().known;
        if self.first_id.borrow().is_none() {
            match marker::found(&self.storage).await {
                Ok(found) => self.first_id.replace(found.first_id),
                Err(_) => return false,
            };
        }
        let Some(id) = self.first_id.borrow().clone() else {
            return false;
        };
        // Not after a delete: here (`EventStore.delete`) or in another
        // context (this connection was closed for it).
        let (name, generation, db) = (self.name.clone(), self.generation, self.storage.0.clone());
        let wanted = move || {
            deletes(&name) == generation
                && db.closed_reason().as_deref() != Some(super::idb::DELETED_ELSEWHERE)
        };
        if !write(&self.name, &id, target, true, wanted).await {
            return false;
        }
        self.schedule
            .borrow_mut()
            .wrote(target, js_sys::Date::now());
        true
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}
