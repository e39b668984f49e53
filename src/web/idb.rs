//! The IndexedDB backend (schema in `docs/storage.md`), on web-sys: rexie
//! cannot hook `versionchange`, and QUOTA_EXCEEDED needs the DOMException
//! name of an aborted transaction, so this small module talks to
//! IndexedDB directly through promise-wrapped requests.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DomException, IdbCursor, IdbCursorDirection, IdbDatabase, IdbFactory, IdbIndex,
    IdbIndexParameters, IdbKeyRange, IdbObjectStore, IdbObjectStoreParameters, IdbOpenDbRequest,
    IdbRequest, IdbTransaction, IdbTransactionMode, IdbVersionChangeEvent,
};

use super::request::Request;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::storage::{Storage, Transaction};
use crate::subject::KeyRange;

/// The IndexedDB version this library writes. A database at a higher
/// version was written by a newer, incompatible release.
pub const SCHEMA_VERSION: u32 = 1;
/// The object store holding the batches.
pub const STORE: &str = "batches";
/// Index on `[aggregate, lastSequence]`, unique.
pub const BY_AGGREGATE: &str = "aggregate";
/// Multi-entry index on `actions`.
pub const BY_ACTION: &str = "actions";

/// An open database shared by the store and its transactions.
pub struct Database {
    db: IdbDatabase,
    closed: Rc<RefCell<Option<String>>>,
    _on_version_change: Closure<dyn FnMut(IdbVersionChangeEvent)>,
}

impl Database {
    /// Opens (creating or upgrading) the database `name`.
    pub async fn open(name: &str) -> Result<Database> {
        let factory = factory()?;
        let request = factory
            .open_with_u32(name, SCHEMA_VERSION)
            .map_err(|e| storage_error(&e))?;
        let upgrade = Closure::<dyn FnMut(IdbVersionChangeEvent)>::new({
            let request = request.clone();
            move |event: IdbVersionChangeEvent| {
                if upgrade(&request, event.old_version()).is_err() {
                    // Aborting the upgrade makes the open request fail.
                    if let Some(tx) = request.transaction() {
                        let _ = tx.abort();
                    }
                }
            }
        });
        request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let result = wait(&request).await;
        request.set_onupgradeneeded(None);
        let db: IdbDatabase = match result {
            Ok(db) => db.unchecked_into(),
            Err(e) if exception_name(&e).as_deref() == Some("VersionError") => {
                return Err(Error::VersionMismatch {
                    name: name.to_owned(),
                    found: current_version(&factory, name).await,
                    supported: SCHEMA_VERSION,
                });
            }
            Err(e) => return Err(storage_error(&e)),
        };
        if !db.object_store_names().contains(STORE) {
            db.close();
            return Err(Error::Storage(format!(
                "database {name:?} exists but is not an eventstore-wasm database (no {STORE:?} object store)"
            )));
        }
        let closed = Rc::new(RefCell::new(None));
        // Another tab upgrades or deletes the database: step aside at once
        // instead of blocking it, and say so to later calls.
        let on_version_change = Closure::<dyn FnMut(IdbVersionChangeEvent)>::new({
            let closed = closed.clone();
            let db = db.clone();
            move |event: IdbVersionChangeEvent| {
                db.close();
                let why = match event.new_version() {
                    None => "another tab deleted the database",
                    Some(_) => "another tab upgraded the database",
                };
                closed.replace(Some(why.to_owned()));
            }
        });
        db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
        Ok(Database {
            db,
            closed,
            _on_version_change: on_version_change,
        })
    }

    /// Deletes the database `name`; other tabs' connections close themselves.
    pub async fn delete(name: &str) -> Result<()> {
        let request = factory()?
            .delete_database(name)
            .map_err(|e| storage_error(&e))?;
        wait(&request).await.map_err(|e| storage_error(&e))?;
        Ok(())
    }

    /// Closes the connection; later calls fail with `CLOSED`.
    pub fn close(&self) {
        self.closed.replace(Some("close() was called".to_owned()));
        self.db.close();
    }

    /// `CLOSED` once the connection is closed.
    pub fn check_open(&self) -> Result<()> {
        match self.closed.borrow().as_ref() {
            Some(why) => Err(Error::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// A transaction created now (its place in IndexedDB's order is fixed here).
    pub fn transaction(&self, mode: IdbTransactionMode) -> Result<IdbTx> {
        self.check_open()?;
        let tx = self
            .db
            .transaction_with_str_and_mode(STORE, mode)
            .map_err(|e| match exception_name(&e).as_deref() {
                Some("InvalidStateError") => Error::Closed("the connection is closing".into()),
                _ => storage_error(&e),
            })?;
        let store = tx.object_store(STORE).map_err(|e| storage_error(&e))?;
        // Only a write is awaited to the end; a read ends by itself.
        let done = (mode == IdbTransactionMode::Readwrite).then(|| {
            JsFuture::from(Promise::new(&mut |resolve, reject| {
                tx.set_oncomplete(Some(&resolve));
                tx.set_onabort(Some(&reject));
            }))
        });
        Ok(IdbTx { tx, store, done })
    }
}

fn upgrade(request: &IdbOpenDbRequest, old_version: f64) -> Result<(), JsValue> {
    let db: IdbDatabase = request.result()?.unchecked_into();
    if old_version < 1.0 {
        let params = IdbObjectStoreParameters::new();
        params.set_key_path(&JsValue::from_str("lastPosition"));
        let store = db.create_object_store_with_optional_parameters(STORE, &params)?;
        let unique = IdbIndexParameters::new();
        unique.set_unique(true);
        let key: Array = ["aggregate", "lastSequence"]
            .iter()
            .map(|s| JsValue::from_str(s))
            .collect();
        store.create_index_with_str_sequence_and_optional_parameters(
            BY_AGGREGATE,
            &key,
            &unique,
        )?;
        let multi = IdbIndexParameters::new();
        multi.set_multi_entry(true);
        store.create_index_with_str_and_optional_parameters(BY_ACTION, "actions", &multi)?;
    }
    Ok(())
}

/// The version of an existing database, for error messages.
async fn current_version(factory: &IdbFactory, name: &str) -> String {
    let Ok(request) = factory.open(name) else {
        return "unknown".into();
    };
    match wait(&request).await {
        Ok(db) => {
            let db: IdbDatabase = db.unchecked_into();
            let version = db.version();
            db.close();
            format!("{version}")
        }
        Err(_) => "unknown".into(),
    }
}

fn factory() -> Result<IdbFactory> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .ok()
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
        .ok_or_else(|| Error::Storage("IndexedDB is not available in this context".into()))
}

/// Waits for a request; `Ok(result)` or `Err(the request's DOMException)`.
async fn wait(request: &IdbRequest) -> Result<JsValue, JsValue> {
    Request::new(request.clone()).await
}

fn exception_name(e: &JsValue) -> Option<String> {
    e.dyn_ref::<DomException>().map(|d| d.name())
}

/// Maps a DOMException (or anything thrown) to the error codes of SPEC section 6.
pub fn storage_error(e: &JsValue) -> Error {
    match e.dyn_ref::<DomException>() {
        Some(d) if d.name() == "QuotaExceededError" => Error::QuotaExceeded(d.message()),
        Some(d) => Error::Storage(format!("{}: {}", d.name(), d.message())),
        None => Error::Storage(
            e.as_string()
                .unwrap_or_else(|| String::from(js_sys::JsString::from(e.clone()))),
        ),
    }
}

/// [`Storage`] over an open [`Database`].
#[derive(Clone)]
pub struct IdbStorage(pub Rc<Database>);

impl Storage for IdbStorage {
    type Tx = IdbTx;

    async fn read(&self) -> Result<IdbTx> {
        self.0.transaction(IdbTransactionMode::Readonly)
    }

    async fn write(&self) -> Result<IdbTx> {
        self.0.transaction(IdbTransactionMode::Readwrite)
    }
}

/// One IndexedDB transaction on the `batches` store.
pub struct IdbTx {
    tx: IdbTransaction,
    store: IdbObjectStore,
    /// Settles when a write transaction completes or aborts.
    done: Option<JsFuture>,
}

impl IdbTx {
    fn index(&self, name: &str) -> Result<IdbIndex> {
        self.store.index(name).map_err(|e| storage_error(&e))
    }

    /// Waits for a request of this transaction; a failed request means the
    /// transaction aborts, so its error is the transaction's error.
    async fn wait(&self, request: std::result::Result<IdbRequest, JsValue>) -> Result<JsValue> {
        let request = request.map_err(|e| storage_error(&e))?;
        wait(&request).await.map_err(|e| storage_error(&e))
    }
}

fn range(lower: &JsValue, upper: &JsValue, upper_open: bool) -> Result<IdbKeyRange> {
    IdbKeyRange::bound_with_lower_open_and_upper_open(lower, upper, false, upper_open)
        .map_err(|e| storage_error(&e))
}

/// The `actions` index range of a subject range.
fn action_range(key: &KeyRange) -> Result<IdbKeyRange> {
    match key {
        KeyRange::Exact(a) => {
            IdbKeyRange::only(&JsValue::from_str(a)).map_err(|e| storage_error(&e))
        }
        KeyRange::Prefix(_) => {
            let (lo, hi) = key.bounds();
            range(&lo.into(), &hi.into(), true)
        }
    }
}

fn pair(a: &str, b: f64) -> JsValue {
    Array::of2(&JsValue::from_str(a), &JsValue::from_f64(b)).into()
}

impl Transaction for IdbTx {
    async fn last_position(&self) -> Result<u64> {
        let cursor =
            self.wait(self.store.open_key_cursor_with_range_and_direction(
                &JsValue::NULL,
                IdbCursorDirection::Prev,
            ))
            .await?;
        match cursor.dyn_into::<IdbCursor>() {
            Ok(c) => c.key().map(|k| number(&k)).map_err(|e| storage_error(&e)),
            Err(_) => Ok(0),
        }
    }

    async fn heads(&self, aggregates: &[&str]) -> Result<Vec<u64>> {
        if aggregates.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.index(BY_AGGREGATE)?;
        // Issue every lookup first, then wait: IndexedDB pipelines them.
        let mut requests = Vec::with_capacity(aggregates.len());
        for a in aggregates {
            let r = range(&pair(a, 0.0), &pair(a, f64::INFINITY), false)?;
            requests
                .push(index.open_key_cursor_with_range_and_direction(&r, IdbCursorDirection::Prev));
        }
        let mut heads = Vec::with_capacity(aggregates.len());
        for request in requests {
            let cursor = self.wait(request).await?;
            heads.push(match cursor.dyn_into::<IdbCursor>() {
                Ok(c) => {
                    let key = c.key().map_err(|e| storage_error(&e))?;
                    number(&Array::from(&key).get(1))
                }
                Err(_) => 0,
            });
        }
        Ok(heads)
    }

    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        let r = range(
            &JsValue::from_f64(from as f64),
            &JsValue::from_f64(to as f64),
            false,
        )?;
        let all = self
            .wait(self.store.get_all_with_key_and_limit(&r, limit as u32))
            .await?;
        batches_from_js(&all)
    }

    async fn by_aggregate(&self, key: &KeyRange, from_sequence: u64) -> Result<Vec<Batch>> {
        let r = match key {
            KeyRange::Exact(a) => range(
                &pair(a, from_sequence as f64),
                &pair(a, f64::INFINITY),
                false,
            )?,
            KeyRange::Prefix(_) => {
                let (lo, hi) = key.bounds();
                range(
                    &Array::of1(&lo.into()).into(),
                    &Array::of1(&hi.into()).into(),
                    true,
                )?
            }
        };
        let all = self
            .wait(self.index(BY_AGGREGATE)?.get_all_with_key(&r))
            .await?;
        batches_from_js(&all)
    }

    async fn keys_by_action(&self, key: &KeyRange) -> Result<Vec<u64>> {
        let r = action_range(key)?;
        let keys = self
            .wait(self.index(BY_ACTION)?.get_all_keys_with_key(&r))
            .await?;
        Ok(Array::from(&keys).iter().map(|k| number(&k)).collect())
    }

    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>> {
        let requests: Vec<_> = keys
            .iter()
            .map(|k| self.store.get(&JsValue::from_f64(*k as f64)))
            .collect();
        let mut batches = Vec::with_capacity(keys.len());
        for request in requests {
            batches.push(batch_from_js(&self.wait(request).await?)?);
        }
        Ok(batches)
    }

    fn add(&mut self, batches: &[Batch]) -> Result<()> {
        for batch in batches {
            self.store
                .add(&batch_to_js(batch))
                .map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }

    fn put(&mut self, batches: &[Batch]) -> Result<()> {
        for batch in batches {
            self.store
                .put(&batch_to_js(batch))
                .map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        // An explicit commit saves waiting for the transaction to go idle.
        #[allow(deprecated)] // web-sys marks it so only because it is newer than the rest
        let _ = self.tx.commit();
        let Some(done) = self.done else {
            return Ok(());
        };
        match done.await {
            Ok(_) => Ok(()),
            Err(_) => Err(match self.tx.error() {
                Some(e) => storage_error(&e.into()),
                None => Error::Storage("the transaction was aborted".into()),
            }),
        }
    }
}

fn number(v: &JsValue) -> u64 {
    v.as_f64().unwrap_or(0.0) as u64
}

// Record field names are interned: read and written for every record.
fn get(obj: &JsValue, key: &'static str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(wasm_bindgen::intern(key))).unwrap_or(JsValue::UNDEFINED)
}

fn set(obj: &Object, key: &'static str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(wasm_bindgen::intern(key)), value);
}

/// The IndexedDB record of a batch (field names in `docs/storage.md`).
pub fn batch_to_js(b: &Batch) -> JsValue {
    let obj = Object::new();
    set(
        &obj,
        "lastPosition",
        &JsValue::from_f64(b.last_position as f64),
    );
    set(&obj, "aggregate", &JsValue::from_str(&b.aggregate));
    set(
        &obj,
        "firstSequence",
        &JsValue::from_f64(b.first_sequence as f64),
    );
    set(
        &obj,
        "lastSequence",
        &JsValue::from_f64(b.last_sequence as f64),
    );
    set(&obj, "createdAt", &JsValue::from_f64(b.created_at as f64));
    let actions: Array = b.actions.iter().map(|a| JsValue::from_str(a)).collect();
    set(&obj, "actions", &actions);
    set(&obj, "events", &JsValue::from_str(&b.events));
    obj.into()
}

/// Reads an array of batch records back.
fn batches_from_js(all: &JsValue) -> Result<Vec<Batch>> {
    Array::from(all).iter().map(|v| batch_from_js(&v)).collect()
}

/// Reads a batch record back.
pub fn batch_from_js(v: &JsValue) -> Result<Batch> {
    let text = |key: &'static str| {
        get(v, key)
            .as_string()
            .ok_or_else(|| Error::Storage(format!("corrupt record: {key} is not a string")))
    };
    let int = |key: &'static str| {
        get(v, key)
            .as_f64()
            .map(|n| n as u64)
            .ok_or_else(|| Error::Storage(format!("corrupt record: {key} is not a number")))
    };
    Batch {
        last_position: int("lastPosition")?,
        aggregate: text("aggregate")?,
        first_sequence: int("firstSequence")?,
        last_sequence: int("lastSequence")?,
        created_at: int("createdAt")?,
        actions: Array::from(&get(v, "actions"))
            .iter()
            .filter_map(|a| a.as_string())
            .collect(),
        events: text("events")?,
    }
    .check()
}
