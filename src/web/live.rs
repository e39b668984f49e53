//! Live subscriptions: catch-up, then every new matching event, from this
//! page, other tabs and workers (`BroadcastChannel`), exactly once and in
//! position order.
//!
//! A subscription remembers the last position it has delivered. Any hint
//! that the log may have grown (a local commit, a message from another
//! context, the page becoming visible again) makes it read the events after
//! that position in one snapshot and advance to the snapshot's end. Reads of
//! one subscription never overlap, so nothing is delivered twice; hints
//! that arrive during a read cause one more read, so nothing is missed.
//! Messages carry no events, only the hint: a context that was asleep or
//! missed messages catches up from IndexedDB on the next hint.
//!
//! Commits are announced only once another context listens; see
//! [`crate::presence`] for that protocol.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BroadcastChannel, EventTarget, MessageEvent};

use super::idb::IdbStorage;
use super::upcast::{self, Upcasters};
use crate::engine::{self, Window};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::presence::{Message, Presence};

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this position (0: from the start of the log).
    After(u64),
    /// After the log's current end: live events only.
    End,
}

/// The subscriptions of one `EventStore` and the channel that wakes them.
pub struct Live {
    storage: IdbStorage,
    upcasters: Option<Rc<Upcasters>>,
    channel: Option<BroadcastChannel>,
    subscriptions: RefCell<Vec<Rc<Subscription>>>,
    listeners: RefCell<Vec<Listener>>,
    presence: RefCell<Presence>,
}

/// An event listener this store added, to remove on close.
type Listener = (
    EventTarget,
    &'static str,
    Closure<dyn FnMut(web_sys::Event)>,
);

struct Subscription {
    filter: Filter,
    on_event: Function,
    on_forget: Option<Function>,
    on_withdraw: Option<Function>,
    on_error: Option<Function>,
    after: Cell<u64>,
    caught_up: Cell<bool>,
    running: Cell<bool>,
    again: Cell<bool>,
    active: Cell<bool>,
}

impl Live {
    /// Listens on the channel `eventstore-wasm:<name>` and to the page
    /// coming back (visible, shown, focused, online).
    pub fn new(name: &str, storage: IdbStorage, upcasters: Option<Rc<Upcasters>>) -> Rc<Live> {
        let channel = BroadcastChannel::new(&format!("eventstore-wasm:{name}")).ok();
        let live = Rc::new(Live {
            storage,
            upcasters,
            channel,
            subscriptions: RefCell::new(Vec::new()),
            listeners: RefCell::new(Vec::new()),
            presence: RefCell::new(Presence::default()),
        });
        let weak = Rc::downgrade(&live);
        let on_message = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            let Some(live) = weak.upgrade() else { return };
            let data = event
                .dyn_ref::<MessageEvent>()
                .map(|m| m.data())
                .unwrap_or(JsValue::UNDEFINED);
            let kind = Reflect::get(&data, &"kind".into())
                .ok()
                .and_then(|k| k.as_string())
                .and_then(|k| Message::from_kind(&k));
            let Some(message) = kind else { return };
            let subscribed = !live.subscriptions.borrow().is_empty();
            let reply = live.presence.borrow_mut().received(message, subscribed);
            live.post(reply, None);
            match message {
                Message::Forget => {
                    let events =
                        Reflect::get(&data, &"events".into()).unwrap_or(JsValue::UNDEFINED);
                    let withdrawn =
                        Reflect::get(&data, &"withdrawn".into()).is_ok_and(|w| w.is_truthy());
                    if Array::is_array(&events) {
                        live.told(&Array::from(&events), withdrawn);
                    }
                    if withdrawn {
                        live.wake();
                    }
                }
                Message::Commit => live.wake(),
                Message::Who | Message::Hello => {}
            }
        });
        let mut listeners = Vec::new();
        if let Some(c) = &live.channel {
            listeners.push((
                c.clone().unchecked_into::<EventTarget>(),
                "message",
                on_message,
            ));
        }
        let global: EventTarget = js_sys::global().unchecked_into();
        let mut targets: Vec<(EventTarget, &'static str)> = ["pageshow", "focus", "online"]
            .into_iter()
            .map(|kind| (global.clone(), kind))
            .collect();
        if let Ok(document) = Reflect::get(&global, &"document".into()) {
            if let Ok(document) = document.dyn_into::<EventTarget>() {
                targets.push((document.clone(), "visibilitychange"));
                targets.push((document, "resume"));
            }
        }
        for (target, kind) in targets {
            let weak = Rc::downgrade(&live);
            let wake = Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
                if let Some(live) = weak.upgrade() {
                    live.wake();
                }
            });
            listeners.push((target, kind, wake));
        }
        for (target, kind, closure) in &listeners {
            let _ = target.add_event_listener_with_callback(kind, closure.as_ref().unchecked_ref());
        }
        live.listeners.replace(listeners);
        let hello = live.presence.borrow_mut().opened(js_sys::Date::now());
        live.post(hello, None);
        live
    }

    fn post(&self, message: Option<Message>, events: Option<&Array>) {
        let (Some(channel), Some(message)) = (&self.channel, message) else {
            return;
        };
        let data = Object::new();
        let _ = Reflect::set(&data, &"kind".into(), &message.kind().into());
        if let Some(events) = events {
            let _ = Reflect::set(&data, &"events".into(), events);
        }
        let _ = channel.post_message(&data);
    }

    /// Adds a subscription and starts its catch-up. Returns its handle.
    pub fn subscribe(
        self: &Rc<Self>,
        filter: Filter,
        on_event: Function,
        options: super::interop::SubscribeOptions,
    ) -> Rc<dyn Fn()> {
        let start = options.start;
        let sub = Rc::new(Subscription {
            filter,
            on_event,
            on_forget: options.on_forget,
            on_withdraw: options.on_withdraw,
            on_error: options.on_error,
            after: Cell::new(match start {
                Start::After(p) => p,
                Start::End => 0,
            }),
            caught_up: Cell::new(false),
            // An "end" subscription must not read before its start is known:
            // hints meanwhile only mark it for a read (see `run`).
            running: Cell::new(start == Start::End),
            again: Cell::new(false),
            active: Cell::new(true),
        });
        self.subscriptions.borrow_mut().push(sub.clone());
        let hello = self.presence.borrow_mut().subscribed();
        self.post(hello, None);
        // "end" is the end of the log after every call made before
        // subscribe() and before any made after: the read transaction is
        // created by this task, which runs after the tasks of the earlier
        // calls of this page and before those of the later ones (and after
        // the retry of a push that has to be redone: `Storage::begin_guess`).
        let live = self.clone();
        let first = sub.clone();
        let storage = self.storage.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if start == Start::End {
                match engine::last_position(&storage).await {
                    Ok(end) => first.after.set(end),
                    Err(e) => return first.fail(e.into_js()),
                }
                first.caught_up.set(true);
                first.running.set(false);
            }
            live.clone().run(first);
        });
        let live = Rc::downgrade(self);
        Rc::new(move || {
            sub.active.set(false);
            if let Some(live) = live.upgrade() {
                live.subscriptions
                    .borrow_mut()
                    .retain(|s| !Rc::ptr_eq(s, &sub));
            }
        })
    }

    /// Something may have been committed: here, or in another context.
    pub fn committed(self: &Rc<Self>) {
        let hint = self.presence.borrow_mut().committed(js_sys::Date::now());
        self.post(hint, None);
        self.wake();
    }

    /// Payloads were erased: tell the subscribers here and elsewhere.
    pub fn forgot(self: &Rc<Self>, events: &Array) {
        self.post(Some(Message::Forget), Some(events));
        self.told(events, false);
    }

    /// Sync took events back from their positions (a conflict's rebase or
    /// discard) and may have appended others: tell the subscribers here
    /// and elsewhere, then deliver what is new.
    pub fn withdrew(self: &Rc<Self>, events: &Array) {
        if let Some(channel) = &self.channel {
            let data = Object::new();
            let _ = Reflect::set(&data, &"kind".into(), &Message::Forget.kind().into());
            let _ = Reflect::set(&data, &"events".into(), events);
            let _ = Reflect::set(&data, &"withdrawn".into(), &JsValue::TRUE);
            let _ = channel.post_message(&data);
        }
        self.told(events, true);
        self.committed();
    }

    /// Ends every subscription with `CLOSED` (the browser closed the
    /// database by itself).
    pub fn fail_all(&self, why: &str) {
        let subs: Vec<_> = self.subscriptions.borrow_mut().drain(..).collect();
        for sub in subs {
            sub.fail(Error::Closed(why.to_owned()).into_js());
        }
    }

    /// Ends every subscription and stops listening.
    pub fn close(&self) {
        for sub in self.subscriptions.borrow_mut().drain(..) {
            sub.active.set(false);
        }
        for (target, kind, closure) in self.listeners.borrow_mut().drain(..) {
            let _ =
                target.remove_event_listener_with_callback(kind, closure.as_ref().unchecked_ref());
        }
        let last = self.presence.borrow_mut().closing();
        self.post(last, None);
        if let Some(c) = &self.channel {
            c.close();
        }
    }

    fn wake(self: &Rc<Self>) {
        let subs: Vec<_> = self.subscriptions.borrow().clone();
        for sub in subs {
            self.clone().run(sub);
        }
    }

    /// Hands already delivered events to `onForget` (erased) or
    /// `onWithdraw` (withdrawn).
    fn told(&self, events: &Array, withdrawn: bool) {
        let subs: Vec<_> = self.subscriptions.borrow().clone();
        for sub in subs {
            let callback = if withdrawn {
                &sub.on_withdraw
            } else {
                &sub.on_forget
            };
            let Some(on_forget) = callback else {
                continue;
            };
            let mine: Array = events
                .iter()
                .filter(|e| {
                    position(e) <= sub.after.get() && super::interop::event_matches(&sub.filter, e)
                })
                .collect();
            if sub.active.get() && mine.length() > 0 {
                if let Err(e) = on_forget.call1(&JsValue::UNDEFINED, &mine) {
                    sub.fail(e);
                }
            }
        }
    }

    /// Reads and delivers what is new for `sub`, unless a read is under way
    /// (then that read goes round once more).
    fn run(self: Rc<Self>, sub: Rc<Subscription>) {
        if !sub.active.get() {
            return;
        }
        if sub.running.get() {
            sub.again.set(true);
            return;
        }
        sub.running.set(true);
        wasm_bindgen_futures::spawn_local(async move {
            let mut refreshed = 0;
            loop {
                sub.again.set(false);
                let window = Window {
                    after: sub.after.get(),
                    before: None,
                    tail: sub.caught_up.get(),
                };
                let thrown: RefCell<Option<JsValue>> = RefCell::new(None);
                let read = engine::filter_to_end(&self.storage, &sub.filter, window, |tx, page| {
                    let upcasters = self.upcasters.as_deref();
                    let events = upcast::page_events(tx, page, false, upcasters, &thrown)?;
                    deliver(&sub, &events, &thrown)
                });
                let outcome = read.await;
                if let Some(e) = thrown.into_inner() {
                    sub.fail(e);
                    break;
                }
                match outcome {
                    Ok(end) => {
                        sub.after.set(sub.after.get().max(end));
                        sub.caught_up.set(true);
                    }
                    Err(e) => {
                        // An encrypted store meeting keys another tab
                        // made: fetched, then read again (what was
                        // delivered is skipped by position).
                        if let Some(sealer) = self.storage.0.sealer() {
                            if refreshed < super::shred::KEYED_TRIES
                                && matches!(sealer.refresh().await, Ok(true))
                            {
                                refreshed += 1;
                                sub.again.set(true);
                                continue;
                            }
                        }
                        let e = super::event_store::settle(&self.storage.0, e).await;
                        sub.fail(e.into_js());
                        break;
                    }
                }
                if !sub.again.get() || !sub.active.get() {
                    break;
                }
            }
            sub.running.set(false);
        });
    }
}

impl Drop for Live {
    /// A store dropped without `close()` must not leave listeners calling
    /// into freed closures.
    fn drop(&mut self) {
        self.close();
    }
}

fn position(event: &JsValue) -> u64 {
    Reflect::get(event, &"position".into())
        .ok()
        .and_then(|p| p.as_f64())
        .unwrap_or(0.0) as u64
}

fn deliver(sub: &Subscription, events: &Array, thrown: &RefCell<Option<JsValue>>) -> Result<()> {
    for event in events.iter() {
        if !sub.active.get() {
            return Err(Error::Closed("unsubscribed".into()));
        }
        let p = position(&event);
        if p <= sub.after.get() {
            continue;
        }
        sub.after.set(p);
        if let Err(e) = sub.on_event.call1(&JsValue::UNDEFINED, &event) {
            thrown.replace(Some(e));
            return Err(Error::argument("onEvent threw"));
        }
    }
    Ok(())
}

impl Subscription {
    /// Ends the subscription and reports why (to `onError`, else to the console).
    fn fail(&self, error: JsValue) {
        if !self.active.replace(false) {
            return;
        }
        match &self.on_error {
            Some(f) => {
                let _ = f.call1(&JsValue::UNDEFINED, &error);
            }
            None => {
                let report = Reflect::get(&js_sys::global(), &"reportError".into())
                    .ok()
                    .and_then(|f| f.dyn_into::<Function>().ok());
                if let Some(report) = report {
                    let _ = report.call1(&JsValue::UNDEFINED, &error);
                }
            }
        }
    }
}

trait IntoJs {
    fn into_js(self) -> JsValue;
}

impl IntoJs for Error {
    fn into_js(self) -> JsValue {
        super::interop::js_error(self)
    }
}
