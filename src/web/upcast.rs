//! Upcasting: functions registered at open that turn an old revision's
//! payload into a newer one, applied to every event a read hands out
//! (`filter`, `events`, `subscribe`, `get`), never to what `push` returns.
//!
//! The events are upcast in JavaScript, where they are made; which
//! upcasters apply to an action is asked of the core's [`Pattern`]
//! matcher once per distinct action and cached. A store without
//! upcasters does none of this.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use super::idb::IdbTx;
use super::interop::{self, Upcaster};
use crate::batch::Segment;
use crate::error::{Error, Result};
use crate::subject::Pattern;

/// The upcasters of one store.
pub struct Upcasters {
    state: JsValue,
}

impl Upcasters {
    /// `None` for an empty list: reads then skip upcasting entirely.
    pub fn new(list: Vec<Upcaster>) -> Option<Rc<Upcasters>> {
        if list.is_empty() {
            return None;
        }
        let entries = Array::new();
        for (i, u) in list.iter().enumerate() {
            let entry = Object::new();
            for (key, value) in [
                ("index", JsValue::from(i as u32)),
                ("action", JsValue::from_str(u.action.as_str())),
                ("from", JsValue::from_f64(u.from as f64)),
                ("to", JsValue::from_f64(u.to as f64)),
                ("upcast", u.upcast.clone().into()),
            ] {
                let _ = Reflect::set(&entry, &JsValue::from_str(key), &value);
            }
            entries.push(&entry);
        }
        let patterns: Vec<Pattern> = list.into_iter().map(|u| u.action).collect();
        let chain_of = Closure::<dyn Fn(String) -> Vec<u32>>::new(move |action: String| {
            patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| p.matches(&action))
                .map(|(i, _)| i as u32)
                .collect()
        });
        Some(Rc::new(Upcasters {
            state: interop::make_upcasters(&entries, &chain_of.into_js_value()),
        }))
    }

    /// Upcasts public events in place.
    pub fn apply(&self, events: &Array) -> std::result::Result<(), JsValue> {
        interop::upcast_events(events, &self.state)
    }
}

/// The public events of a page read in `tx`, upcast. An upcaster's error
/// is put in `thrown` (to reject with as it is) and stops the read.
pub fn page_events(
    tx: &IdbTx,
    page: Vec<Segment>,
    reverse: bool,
    upcasters: Option<&Upcasters>,
    thrown: &RefCell<Option<JsValue>>,
) -> Result<Array> {
    let events = tx.expand(page, reverse)?;
    upcast(&events, upcasters, thrown)?;
    Ok(events)
}

/// Upcasts `events`, if there are upcasters; see [`page_events`].
pub fn upcast(
    events: &Array,
    upcasters: Option<&Upcasters>,
    thrown: &RefCell<Option<JsValue>>,
) -> Result<()> {
    if let Some(u) = upcasters {
        if let Err(e) = u.apply(events) {
            thrown.replace(Some(e));
            return Err(Error::argument("an upcaster failed"));
        }
    }
    Ok(())
}
