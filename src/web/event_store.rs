//! The exported `EventStore` class.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function};
use wasm_bindgen::prelude::*;

use super::idb::{Database, IdbStorage};
use super::interop::{self, js_error};
use super::live::Live;
use super::upcast::{self, Upcasters};
use crate::engine::{self, Window};
use crate::error::{Error, Result};
use crate::heads::HeadCache;

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
"#)]
extern "C" {
    #[wasm_bindgen(js_name = pagedEvents)]
    fn paged_events(fetch_page: &JsValue, limit: f64) -> JsValue;
}

/// An event store on one IndexedDB database. Open it with `EventStore.open(name)`.
#[wasm_bindgen]
pub struct EventStore {
    storage: IdbStorage,
    heads: HeadCache,
    live: Rc<Live>,
    upcasters: Option<Rc<Upcasters>>,
}

#[wasm_bindgen]
impl EventStore {
    /// Opens the event store `name`, creating its IndexedDB database if needed.
    /// `options.upcasters` turn old revisions' payloads into current ones
    /// on every read.
    ///
    /// ```ts
    /// const store = await EventStore.open("my-app", {
    ///   upcasters: [{ action: "user.*.added", from: 1, to: 2, upcast: (p) => ({ ...p, tags: [] }) }],
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
        Ok(EventStore {
            live: Live::new(&name, storage.clone(), upcasters.clone()),
            heads: HeadCache::new(),
            storage,
            upcasters,
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
        self.storage.0.check_open().map_err(js_error)?;
        let filter = interop::filter(&filter).map_err(js_error)?;
        let reducer: Option<Function> = match reducer {
            r if r.is_undefined() || r.is_null() => None,
            r => Some(interop::function(&r, interop::At::root("the reducer")).map_err(js_error)?),
        };
        let thrown: RefCell<Option<JsValue>> = RefCell::new(None);
        let mut pages: Vec<Array> = Vec::new();
        let upcasters = self.upcasters.as_deref();
        let outcome = engine::filter(&self.storage, &filter, Window::default(), |tx, page| {
            let events = upcast::page_events(tx, page, filter.reverse, upcasters, &thrown)?;
            match &reducer {
                None => pages.push(events),
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
        let (erased, events) = engine::forget(&self.storage, &filter)
            .await
            .map_err(js_error)?;
        if erased > 0 {
            self.live.forgot(&parse(&events).map_err(js_error)?);
        }
        Ok(erased as f64)
    }

    /// Delivers every stored event matching `filter` after
    /// `options.fromPosition` (default 0, the start; `"end"`: live only), in
    /// position order, then each new matching event as it is committed here,
    /// in another tab or in a worker. Exactly once, in order, no gap.
    /// `options.onForget(events)` receives already delivered events whose
    /// payload was erased since; `options.onError(error)` is told why a
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
        let unsubscribe = self.live.subscribe(
            filter,
            on_event,
            options.start,
            options.on_forget,
            options.on_error,
        );
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
                    let outcome = engine::filter(&storage, &filter, window, |tx, page| {
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
                    .await;
                    if let Some(e) = thrown.into_inner() {
                        return Err(e);
                    }
                    outcome.map_err(js_error)?;
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
        let mut event = JsValue::NULL;
        let outcome = engine::get(&self.storage, &id, |tx, page| {
            event = upcast::page_events(tx, page, false, upcasters, &thrown)?.get(0);
            Ok(())
        })
        .await;
        if let Some(e) = thrown.into_inner() {
            return Err(e);
        }
        outcome.map_err(js_error)?;
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
        let n = engine::count(&self.storage, &filter)
            .await
            .map_err(js_error)?;
        Ok(n as f64)
    }

    /// Closes the store: ends its subscriptions; later calls reject with `CLOSED`.
    pub fn close(&self) {
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
    async fn push_inner(&self, entries: &JsValue) -> Result<JsValue> {
        self.storage.0.check_open()?;
        let entries = interop::push_entries(entries)?;
        let count: usize = entries.iter().map(|e| e.commands.len()).sum();
        let now = js_sys::Date::now() as u64;
        // Random bits for every id of the push, drawn in one call. A push
        // redone after a failed guess (see `engine::push`) takes the same
        // bits again: the ids of the aborted attempt were never stored.
        let mut random = vec![0u8; count * 10];
        interop::random_bytes(&mut random)?;
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
        let (batches, events) = engine::push(
            &self.storage,
            &self.heads,
            &entries,
            now,
            new_id,
            |tx, _| tx.added_events(),
        )
        .await?;
        if !batches.is_empty() {
            self.live.committed();
        }
        Ok(events.into())
    }
}

fn parse(json: &str) -> Result<Array> {
    js_sys::JSON::parse(json)
        .map(|v| Array::from(&v))
        .map_err(|e| Error::Storage(format!("cannot decode events: {e:?}")))
}
