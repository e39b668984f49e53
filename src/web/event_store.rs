//! The exported `EventStore` class.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function};
use wasm_bindgen::prelude::*;

use super::idb::{Database, IdbStorage};
use super::interop::{self, js_error};
use crate::engine;
use crate::error::{Error, Result};

/// An event store on one IndexedDB database. Open it with `EventStore.open(name)`.
#[wasm_bindgen]
pub struct EventStore {
    storage: IdbStorage,
}

#[wasm_bindgen]
impl EventStore {
    /// Opens the event store `name`, creating its IndexedDB database if needed.
    ///
    /// ```ts
    /// const store = await EventStore.open("my-app");
    /// ```
    pub async fn open(name: String) -> std::result::Result<EventStore, JsValue> {
        let db = Database::open(&name).await.map_err(js_error)?;
        Ok(EventStore {
            storage: IdbStorage(Rc::new(db)),
        })
    }

    /// Deletes the event store `name` and all its events. Open connections in
    /// other tabs close themselves.
    #[wasm_bindgen(js_name = delete)]
    pub async fn delete_store(name: String) -> std::result::Result<(), JsValue> {
        Database::delete(&name).await.map_err(js_error)
    }

    /// Appends events atomically: all entries in one transaction, or none.
    /// Resolves to the stored events in push order.
    #[wasm_bindgen(unchecked_return_type = "Event[]")]
    pub async fn push(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PushEntry[]")] entries: JsValue,
    ) -> std::result::Result<JsValue, JsValue> {
        self.push_inner(&entries).await.map_err(js_error)
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
        let filter = interop::filter(&filter).map_err(js_error)?;
        let reducer: Option<Function> = match reducer {
            r if r.is_undefined() || r.is_null() => None,
            r => Some(r.dyn_into().map_err(|r| {
                js_error(Error::argument(format!(
                    "the reducer must be a function, got {}",
                    super::interop::describe_value(&r)
                )))
            })?),
        };
        let thrown: RefCell<Option<JsValue>> = RefCell::new(None);
        let result = Array::new();
        let outcome = engine::filter(&self.storage, &filter, |page| {
            let events = parse(&page)?;
            match &reducer {
                None => {
                    for e in events.iter() {
                        result.push(&e);
                    }
                }
                Some(f) => {
                    for e in events.iter() {
                        if let Err(err) = f.call1(&JsValue::UNDEFINED, &e) {
                            thrown.replace(Some(err));
                            return Err(Error::argument("the reducer threw"));
                        }
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Some(err) = thrown.into_inner() {
            return Err(err);
        }
        outcome.map_err(js_error)?;
        Ok(match reducer {
            None => result.into(),
            Some(_) => JsValue::UNDEFINED,
        })
    }

    /// Erases the payload of every matching event, keeping its metadata.
    /// Resolves to the number of events newly erased.
    pub async fn forget(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Filter")] filter: JsValue,
    ) -> std::result::Result<f64, JsValue> {
        let filter = interop::filter(&filter).map_err(js_error)?;
        let erased = engine::forget(&self.storage, &filter)
            .await
            .map_err(js_error)?;
        Ok(erased as f64)
    }

    /// Closes the store; later calls reject with `CLOSED`.
    pub fn close(&self) {
        self.storage.0.close();
    }
}

impl EventStore {
    async fn push_inner(&self, entries: &JsValue) -> Result<JsValue> {
        let entries = interop::push_entries(entries)?;
        let count: usize = entries.iter().map(|e| e.commands.len()).sum();
        let now = js_sys::Date::now() as u64;
        let mut random = vec![0u8; count * 10];
        interop::random_bytes(&mut random)?;
        let mut chunks = random.chunks_exact(10);
        let new_id = || {
            let mut bytes = [0u8; 10];
            if let Some(c) = chunks.next() {
                bytes.copy_from_slice(c);
            }
            uuid::Builder::from_unix_timestamp_millis(now, &bytes)
                .into_uuid()
                .to_string()
        };
        let batches = engine::push(&self.storage, &entries, now, new_id).await?;
        parse(&engine::events_json(&batches)?).map(Into::into)
    }
}

fn parse(json: &str) -> Result<Array> {
    js_sys::JSON::parse(json)
        .map(|v| Array::from(&v))
        .map_err(|e| Error::Storage(format!("cannot decode events: {e:?}")))
}
