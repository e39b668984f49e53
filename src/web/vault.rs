//! Encryption at rest, browser side (docs/privacy.md): the store's key
//! vault (`js/vault.js`, a file in OPFS) behind a [`Sealer`], which keeps
//! the connection's [`Keyring`] and seals and unseals events text for the
//! IndexedDB backend (`idb.rs`) synchronously.

use std::cell::{Cell, RefCell};

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::batch::{Opened, StoredEvent};
use crate::error::{Error, Result};
use crate::seal::{Keyring, NONCE};

// The `Vault` class of js/vault.js is handed over by the package's entry
// (`__setVault`, js/index.js) rather than imported by the glue: one module
// instance of vault.js per page, the one the package ships.
thread_local! {
    static VAULT_CLASS: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

/// Gives the wasm side the `Vault` class of js/vault.js (js/index.js calls
/// it once the module is loaded; tests call it themselves).
#[wasm_bindgen(js_name = __setVault, skip_typescript)]
pub fn set_vault(class: JsValue) {
    VAULT_CLASS.with(|c| c.replace(Some(class)));
}

/// Calls the static method `method` of the `Vault` class.
async fn vault_static(method: &str, args: &Array) -> std::result::Result<JsValue, JsValue> {
    let class = VAULT_CLASS.with(|c| c.borrow().clone()).ok_or_else(|| {
        super::interop::js_error(Error::Storage(
            "vault: the key vault module (vault.js) is not loaded: import the package's entry (index.js), not its glue".into(),
        ))
    })?;
    let f: js_sys::Function = Reflect::get(&class, &method.into())?.dyn_into()?;
    let promise: js_sys::Promise = f.apply(&class, args)?.dyn_into()?;
    wasm_bindgen_futures::JsFuture::from(promise).await
}

#[wasm_bindgen]
extern "C" {
    /// An instance of `Vault` of js/vault.js.
    pub type Vault;
    #[wasm_bindgen(method, js_name = keysFor, catch)]
    async fn keys_for(
        this: &Vault,
        aggregates: Array,
        options: &JsValue,
    ) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    async fn rotate(this: &Vault, aggregates: Array) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, js_name = allKeys, catch)]
    async fn all_keys(this: &Vault) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, js_name = shred, catch)]
    async fn shred_retired(
        this: &Vault,
        aggregates: Array,
    ) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, js_name = lockShred, catch)]
    async fn lock_shred(this: &Vault) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, js_name = takeDestroyed)]
    fn take_destroyed(this: &Vault) -> Array;
    #[wasm_bindgen(method, js_name = takeRetired)]
    fn take_retired(this: &Vault) -> Array;
    #[wasm_bindgen(method)]
    fn close(this: &Vault);
}

/// Nonces drawn from `crypto.getRandomValues` per call, at most.
const NONCES_PER_DRAW: usize = 512;

/// A vault error (a JS Error with a SPEC `code`) as the core's error.
fn vault_error(e: &JsValue) -> Error {
    let message = Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    let code = Reflect::get(e, &"code".into())
        .ok()
        .and_then(|c| c.as_string());
    match code.as_deref() {
        Some("CLOSED") => Error::Closed(message),
        Some("QUOTA_EXCEEDED") => Error::QuotaExceeded(message),
        _ => Error::Storage(message),
    }
}

/// The keys of one encrypted store's connection.
pub struct Sealer {
    vault: Vault,
    ring: RefCell<Keyring>,
    /// Random bytes for nonces and how many are used.
    nonces: RefCell<(Vec<u8>, usize)>,
    /// The store's shred fence (the `"fence"` entry of the `sync` store)
    /// as of the keyring's live slots: a write transaction commits only
    /// while the entry still holds it (see `docs/privacy.md`, "Fence").
    fence: Cell<f64>,
    /// The entry's newer value, seen by a write that was undone for it:
    /// the next [`Sealer::refresh`] asks the vault for live slots again.
    moved: Cell<Option<f64>>,
}

impl Sealer {
    /// Opens the key vault of store `name` (`create`: made when missing).
    /// Rejects with the vault's own error (`DATA_LOST` when missing,
    /// `STORAGE` where OPFS sync access handles cannot be used).
    pub async fn open(name: &str, create: bool) -> std::result::Result<Sealer, JsValue> {
        let options = js_sys::Object::new();
        Reflect::set(&options, &"create".into(), &JsValue::from_bool(create))?;
        let vault: Vault = vault_static("open", &Array::of2(&name.into(), &options))
            .await?
            .unchecked_into();
        Ok(Sealer {
            vault,
            ring: RefCell::new(Keyring::new()),
            nonces: RefCell::new((Vec::new(), 0)),
            fence: Cell::new(0.0),
            moved: Cell::new(None),
        })
    }

    /// Loads every slot's key into the keyring (one vault round trip).
    pub async fn preload(&self) -> Result<()> {
        let all = self.vault.all_keys().await.map_err(|e| vault_error(&e))?;
        let map: js_sys::Map = all.unchecked_into();
        let mut ring = self.ring.borrow_mut();
        let mut out = Ok(());
        map.for_each(&mut |value, key| {
            let Some(slot) = key.as_f64() else { return };
            if value.is_null() {
                ring.destroyed(slot as u32);
            } else if let Err(e) = ring.insert(slot as u32, &Uint8Array::new(&value).to_vec()) {
                out = Err(e);
            }
        });
        out
    }

    /// Destroys the retired slots of `aggregates` (their old keys, after
    /// [`Sealer::rotate`]).
    pub async fn shred(&self, aggregates: &[String]) -> Result<()> {
        if aggregates.is_empty() {
            return Ok(());
        }
        let list: Array = aggregates.iter().map(|a| JsValue::from_str(a)).collect();
        let done = self
            .vault
            .shred_retired(list)
            .await
            .map_err(|e| vault_error(&e))?;
        let mut ring = self.ring.borrow_mut();
        for s in Array::from(&done).iter().filter_map(|s| s.as_f64()) {
            ring.destroyed(s as u32);
        }
        Ok(())
    }

    /// Takes the store's shred lock (see `lockShred` in js/vault.js),
    /// held until the guard is dropped.
    pub async fn lock_shred(&self) -> Result<ShredLock> {
        let release = self.vault.lock_shred().await.map_err(|e| vault_error(&e))?;
        Ok(ShredLock(release.unchecked_into()))
    }

    /// Removes the key vault of store `name` (overwritten with zeros
    /// first), if there is one. Where OPFS cannot be used there is none;
    /// a vault that cannot be overwritten is a `STORAGE` error (its keys
    /// would stay on disk).
    pub async fn delete(name: &str) -> Result<()> {
        // Without the vault module (the glue used without the package's
        // entry) no store could have been encrypted.
        if VAULT_CLASS.with(|c| c.borrow().is_none()) {
            return Ok(());
        }
        match vault_static("delete", &Array::of1(&name.into())).await {
            Ok(_) => Ok(()),
            Err(e)
                if Reflect::get(&e, &"reason".into())
                    .ok()
                    .and_then(|r| r.as_string())
                    .as_deref()
                    == Some("unsupported") =>
            {
                Ok(())
            }
            Err(e) => Err(vault_error(&e)),
        }
    }

    /// Drops the keys other tabs and workers destroyed, and stops sealing
    /// under the slots they retired.
    fn drain_destroyed(&self) {
        let gone = self.vault.take_destroyed();
        let retired = self.vault.take_retired();
        if gone.length() > 0 || retired.length() > 0 {
            let mut ring = self.ring.borrow_mut();
            for s in gone.iter().filter_map(|s| s.as_f64()) {
                ring.destroyed(s as u32);
            }
            for s in retired.iter().filter_map(|s| s.as_f64()) {
                ring.retired(s as u32);
            }
        }
    }

    fn nonce(&self) -> Result<[u8; NONCE]> {
        let mut nonces = self.nonces.borrow_mut();
        let (bytes, used) = &mut *nonces;
        if *used + NONCE > bytes.len() {
            bytes.resize(NONCE * NONCES_PER_DRAW, 0);
            super::interop::random_bytes(bytes)?;
            *used = 0;
        }
        let mut n = [0u8; NONCE];
        n.copy_from_slice(&bytes[*used..*used + NONCE]);
        // Never handed out twice.
        bytes[*used..*used + NONCE].fill(0);
        *used += NONCE;
        Ok(n)
    }

    /// `text` (a batch's events) with its payloads sealed under `aggregate`'s live key.
    pub fn seal(&self, aggregate: &str, text: &str) -> Result<String> {
        self.drain_destroyed();
        self.ring
            .borrow()
            .seal(aggregate, text, &mut || self.nonce())
    }

    /// `text` with its sealed payloads opened (see [`Keyring::unseal`]).
    pub fn unseal(&self, text: &str) -> Result<String> {
        self.drain_destroyed();
        self.ring.borrow().unseal(text)
    }

    /// The payload of `event` (decoded from sealed text) opened (see
    /// [`Keyring::open`]); per event, so without draining destroyed slots:
    /// [`Sealer::matching`] did that for its text.
    pub fn open_event(&self, event: &StoredEvent<'_>) -> Result<Opened> {
        self.ring.borrow().open(event)
    }

    /// A record's sealed text is about to be decoded for matching: slots
    /// destroyed elsewhere are dropped first (once per record, not per
    /// event opened).
    pub fn matching(&self) {
        self.drain_destroyed();
    }

    /// Learns `found`: `[[aggregate, slot, bytes], ...]` from `keysFor` or `rotate`.
    fn learn_live(&self, found: &JsValue) -> Result<()> {
        let map: js_sys::Map = found.clone().unchecked_into();
        let mut ring = self.ring.borrow_mut();
        let mut out = Ok(());
        map.for_each(&mut |value, key| {
            let (Some(aggregate), Some(slot)) = (
                key.as_string(),
                Reflect::get(&value, &"slot".into())
                    .ok()
                    .and_then(|s| s.as_f64()),
            ) else {
                return;
            };
            let bytes = Reflect::get(&value, &"key".into())
                .map(|k| Uint8Array::new(&k).to_vec())
                .unwrap_or_default();
            if let Err(e) = ring.insert(slot as u32, &bytes) {
                out = Err(e);
            }
            ring.set_live(&aggregate, slot as u32);
        });
        out
    }

    /// Makes sure every aggregate of `aggregates` has its live key in the
    /// keyring: one vault round trip for those unknown (creating their
    /// slots), none when all are known.
    pub async fn ensure<'a>(&self, aggregates: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.drain_destroyed();
        let missing: Array = {
            let ring = self.ring.borrow();
            let mut seen = std::collections::HashSet::new();
            aggregates
                .into_iter()
                .filter(|a| ring.live(a).is_none() && seen.insert(*a))
                .map(JsValue::from_str)
                .collect()
        };
        if missing.length() == 0 {
            return Ok(());
        }
        let options = js_sys::Object::new();
        let _ = Reflect::set(&options, &"create".into(), &JsValue::TRUE);
        let found = self
            .vault
            .keys_for(missing, &options)
            .await
            .map_err(|e| vault_error(&e))?;
        self.learn_live(&found)
    }

    /// The shred fence the keyring's live slots are valid at.
    pub fn fence(&self) -> f64 {
        self.fence.get()
    }

    /// The keyring's live slots are valid at fence `value` (read before
    /// they were loaded, or written by this connection's own shred).
    pub fn set_fence(&self, value: f64) {
        self.fence.set(value);
    }

    /// A write found the fence at `value`, not at [`Sealer::fence`]: a
    /// shred elsewhere rotated keys this connection may still seal under.
    pub fn fence_moved(&self, value: f64) {
        self.moved.set(Some(value));
    }

    /// Whether a seal or unseal lacked a key, or a write met a moved
    /// fence, since the last refresh.
    pub fn wants(&self) -> bool {
        self.moved.get().is_some() || self.ring.borrow().wants()
    }

    /// Fetches what the last seals and unseals lacked, and after a moved
    /// fence forgets every live slot (asked of the vault again by the
    /// next [`Sealer::ensure`] or seal); whether anything was (the caller
    /// then does its work again).
    pub async fn refresh(&self) -> Result<bool> {
        let moved = self.moved.take();
        if let Some(value) = moved {
            // Live slots fetched from now on are at least as new as the
            // rotation that moved the fence (a shred rotates first).
            self.ring.borrow_mut().forget_live();
            self.fence.set(value);
        }
        let wanted = self.ring.borrow().take_wanted();
        if wanted.is_empty() {
            return Ok(moved.is_some());
        }
        if !wanted.aggregates.is_empty() {
            self.ensure(wanted.aggregates.iter().map(String::as_str))
                .await?;
        }
        if !wanted.slots.is_empty() {
            // Every slot, not only those met: a read that lacked one key
            // (records of other tabs' new aggregates) likely lacks more,
            // and would otherwise learn them one try at a time.
            self.preload().await?;
            let ring = self.ring.borrow();
            if let Some(slot) = wanted.slots.iter().find(|s| !ring.knows(**s)) {
                return Err(Error::Storage(format!(
                    "encryption: key slot {slot} is not in the store's key vault (the vault does not belong to this database, or it was replaced)"
                )));
            }
        }
        Ok(true)
    }

    /// New live slots for `aggregates` (their live ones are retired).
    pub async fn rotate(&self, aggregates: &[String]) -> Result<()> {
        let list: Array = aggregates.iter().map(|a| JsValue::from_str(a)).collect();
        let made = self.vault.rotate(list).await.map_err(|e| vault_error(&e))?;
        self.learn_live(&made)
    }

    /// Ends the vault's worker.
    pub fn close(&self) {
        self.vault.close();
    }
}

/// The store's shred lock, released when dropped (also when the shred
/// holding it is dropped unfinished, the store being closed).
pub struct ShredLock(js_sys::Function);

impl Drop for ShredLock {
    fn drop(&mut self) {
        let _ = self.0.call0(&JsValue::NULL);
    }
}
