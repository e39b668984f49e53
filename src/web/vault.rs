//! Encryption at rest, browser side (docs/privacy.md): the store's key
//! vault (`js/vault.js`, a file in OPFS) behind a [`Sealer`], which keeps
//! the connection's [`Keyring`] and seals and unseals events text for the
//! IndexedDB backend (`idb.rs`) synchronously.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::batch::{Opened, StoredEvent};
use crate::error::{Error, Result};
use crate::seal::{Keyring, NameHash, Suite, NONCE};

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
    #[derive(Clone)]
    pub type Vault;
    #[wasm_bindgen(method, catch)]
    async fn rotate(this: &Vault, aggregates: Array) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, js_name = loadAll, catch)]
    async fn load_all(this: &Vault) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    async fn reserve(this: &Vault, n: u32) -> std::result::Result<JsValue, JsValue>;
    /// An async method: it never throws, its promise rejects.
    #[wasm_bindgen(method)]
    fn bind(this: &Vault, pairs: Array) -> js_sys::Promise;
    #[wasm_bindgen(method, js_name = shred, catch)]
    async fn shred_retired(
        this: &Vault,
        aggregates: Array,
        options: &JsValue,
    ) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn owner(this: &Vault) -> Option<String>;
    #[wasm_bindgen(method, js_name = openOwners, catch)]
    async fn open_owners(this: &Vault) -> std::result::Result<JsValue, JsValue>;
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
/// Slots the first reservation asks for (beyond those needed); each
/// reservation after it asks for twice as many, up to [`RESERVE_MOST`].
const RESERVE_FIRST: u32 = 16;
const RESERVE_MOST: u32 = 256;
/// The most slots one `reserve` of the vault makes.
const RESERVE_CALL_MOST: u32 = 100_000;
/// The `sync` object store's keys of records of binds (see [`Sealer::pending_binds`]).
pub const BINDS_PREFIX: &str = "binds:";

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
    ring: Rc<RefCell<Keyring>>,
    /// Slots reserved in the vault (their keys in the keyring), for
    /// aggregates new to it: one is taken per such aggregate and bound to
    /// it in the background (see [`Sealer::ensure`]).
    pool: Rc<RefCell<Vec<u32>>>,
    /// How many slots the next reservation asks for.
    reserve_next: Cell<u32>,
    /// A reservation made in the background is under way (see [`Sealer::refill`]).
    refilling: Rc<Cell<bool>>,
    /// Slots taken from the pool whose bind the vault has not confirmed,
    /// with their aggregate: a write sealed under one records them all
    /// (see [`Sealer::pending_binds`]).
    unacked: Rc<RefCell<BTreeMap<u32, String>>>,
    /// Binds not sent to the vault yet (aggregate, slot, name hash): one
    /// `bind` is under way at a time, and those made meanwhile go in the
    /// next (see [`Sealer::bind_pool`]).
    binds: Rc<RefCell<Vec<(String, u32, NameHash)>>>,
    /// A `bind` is under way.
    binding: Rc<Cell<bool>>,
    /// The key of this connection's entry of those records in the `sync`
    /// object store: `binds:<owner token>`.
    binds_key: String,
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
    pub async fn open(
        name: &str,
        create: bool,
        suite: Suite,
    ) -> std::result::Result<Sealer, JsValue> {
        let options = js_sys::Object::new();
        Reflect::set(&options, &"create".into(), &JsValue::from_bool(create))?;
        let vault: Vault = vault_static("open", &Array::of2(&name.into(), &options))
            .await?
            .unchecked_into();
        // Without Web Locks the vault has no owner token: a random one
        // keys this connection's records of its binds all the same.
        let token = match vault.owner() {
            Some(token) => token,
            None => {
                let mut bytes = [0u8; 16];
                super::interop::random_bytes(&mut bytes).map_err(super::interop::js_error)?;
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        Ok(Sealer {
            vault,
            ring: Rc::new(RefCell::new(Keyring::with_suite(suite))),
            pool: Rc::default(),
            refilling: Rc::default(),
            reserve_next: Cell::new(RESERVE_FIRST),
            unacked: Rc::default(),
            binds: Rc::default(),
            binding: Rc::default(),
            binds_key: format!("{BINDS_PREFIX}{token}"),
            nonces: RefCell::new((Vec::new(), 0)),
            fence: Cell::new(0.0),
            moved: Cell::new(None),
        })
    }

    /// Loads every slot's key into the keyring, and the live slots by
    /// their aggregate's name hash (one vault round trip).
    pub async fn preload(&self) -> Result<()> {
        let all = self.vault.load_all().await.map_err(|e| vault_error(&e))?;
        apply_load(&mut self.ring.borrow_mut(), &all)
    }

    /// Destroys the retired slots of `aggregates` (their old keys, after
    /// [`Sealer::rotate`]), and of `slots` (theirs, recorded by writes
    /// before the vault bound them) those still reserved.
    pub async fn shred(&self, aggregates: &[String], slots: &BTreeSet<u32>) -> Result<()> {
        if aggregates.is_empty() && slots.is_empty() {
            return Ok(());
        }
        let list: Array = aggregates.iter().map(|a| JsValue::from_str(a)).collect();
        let options = js_sys::Object::new();
        let extra: Array = slots.iter().map(|s| JsValue::from(*s)).collect();
        Reflect::set(&options, &"slots".into(), &extra).map_err(|e| vault_error(&e))?;
        let done = self
            .vault
            .shred_retired(list, &options)
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

    /// `text` (a batch's events) with its payloads sealed under
    /// `aggregate`'s live key; the slot is added to `used` (see
    /// [`Sealer::pending_binds`]).
    pub fn seal(&self, aggregate: &str, text: &str, used: &mut BTreeSet<u32>) -> Result<String> {
        self.drain_destroyed();
        let ring = self.ring.borrow();
        let out = ring.seal(aggregate, text, &mut || self.nonce())?;
        used.extend(ring.sealing_slot(aggregate));
        Ok(out)
    }

    /// What a write sealed under `used` records with itself, under
    /// `binds:<owner token>` in the `sync` object store, when one of them
    /// is a reserved slot whose bind the vault has not confirmed: every
    /// such slot of this connection with its aggregate, as JSON
    /// `[[aggregate, slot], ...]`. A forget destroys the slots recorded
    /// for its aggregates, and a connection that finds the record of one
    /// gone (closed, crashed) finishes its binds (`recover_binds` at open), so a
    /// payload is never stored under a slot the vault cannot tie to its
    /// aggregate. `None`: nothing to record.
    pub fn pending_binds(&self, used: &BTreeSet<u32>) -> Result<Option<(String, String)>> {
        let unacked = self.unacked.borrow();
        if !used.iter().any(|s| unacked.contains_key(s)) {
            return Ok(None);
        }
        let pairs: Vec<(&str, u32)> = unacked.iter().map(|(s, a)| (a.as_str(), *s)).collect();
        let json = serde_json::to_string(&pairs)
            .map_err(|e| Error::Storage(format!("encryption: cannot record binds: {e}")))?;
        Ok(Some((self.binds_key.clone(), json)))
    }

    /// This connection's key of its records of binds.
    pub fn binds_key(&self) -> &str {
        &self.binds_key
    }

    /// The keys of the records of binds of the vaults of this store open
    /// anywhere (their owners' Web Locks), or `None` when that cannot be
    /// told. Asked before the records are read: a connection missing from
    /// it is gone (its last write is in what is read after) or opened
    /// after it (binding its records too is harmless: binds are idempotent).
    pub async fn open_binds_keys(&self) -> Option<HashSet<String>> {
        let list = self.vault.open_owners().await.ok()?;
        if list.is_null() || list.is_undefined() {
            return None;
        }
        Some(
            Array::from(&list)
                .iter()
                .filter_map(|t| t.as_string())
                .map(|t| format!("{BINDS_PREFIX}{t}"))
                .collect(),
        )
    }

    /// Finishes the binds a connection that is gone recorded (the JSON of
    /// its `binds:<token>` entry): each slot becomes its aggregate's, as
    /// the vault's `bind` does (idempotent).
    pub async fn bind_recorded(&self, json: &str) -> Result<()> {
        let pairs: Array = crate::seal::binds_entry(json)?
            .into_iter()
            .map(|(aggregate, slot)| {
                JsValue::from(Array::of2(
                    &JsValue::from_str(&aggregate),
                    &JsValue::from(slot),
                ))
            })
            .collect();
        if pairs.length() == 0 {
            return Ok(());
        }
        let found = wasm_bindgen_futures::JsFuture::from(self.vault.bind(pairs))
            .await
            .map_err(|e| vault_error(&e))?;
        learn_bound(&mut self.ring.borrow_mut(), &found, &HashMap::new())
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

    /// Learns `found`: `[[aggregate, slot, bytes], ...]` from `rotate`.
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
    /// keyring. One the vault had a live slot for when it was last loaded
    /// takes it; one new to it takes a reserved slot of the pool (a vault
    /// round trip only when the pool runs short), bound to it in the
    /// background while writes sealed under it record it with themselves
    /// (see [`Sealer::pending_binds`]). When the vault answers that the
    /// aggregate got a live slot elsewhere meanwhile, the reserved slot
    /// becomes a retired slot of it and this keyring seals under the other
    /// from then on (if the answer is still current, see `learn_bound`).
    pub async fn ensure<'a>(&self, aggregates: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.drain_destroyed();
        let mut seen = HashSet::new();
        let asked: Vec<&str> = aggregates.into_iter().filter(|a| seen.insert(*a)).collect();
        loop {
            let need: Vec<&str> = {
                let mut ring = self.ring.borrow_mut();
                asked.iter().copied().filter(|a| !ring.resolve(a)).collect()
            };
            if need.is_empty() {
                return Ok(());
            }
            let short = need.len().saturating_sub(self.pool.borrow().len());
            if short == 0 {
                self.bind_pool(&need)?;
                self.refill();
                return Ok(());
            }
            // Another ensure may take from the pool while this one waits: checked again.
            // At most what one `reserve` takes; a push needing more loops.
            let n = (short.min(RESERVE_CALL_MOST as usize) as u32).max(self.reserve_next.get());
            self.reserve_next.set((n * 2).min(RESERVE_MOST));
            let made = self.vault.reserve(n).await.map_err(|e| vault_error(&e))?;
            pool_in(&self.ring, &self.pool, &made)?;
        }
    }

    /// After a few reservations (a run of aggregates new to the vault, as
    /// an import or a first sync makes), the next one is made in the
    /// background once the pool falls under half of it, so that pushes
    /// seldom wait for one. (Not before: each connection leaves the slots
    /// it reserved and did not use in the vault, never to be used.)
    fn refill(&self) {
        let n = self.reserve_next.get();
        if n < RESERVE_FIRST * 4 || self.refilling.get() || self.pool.borrow().len() as u32 >= n / 2
        {
            return;
        }
        self.reserve_next.set((n * 2).min(RESERVE_MOST));
        self.refilling.set(true);
        let (vault, ring, pool, refilling) = (
            self.vault.clone(),
            self.ring.clone(),
            self.pool.clone(),
            self.refilling.clone(),
        );
        wasm_bindgen_futures::spawn_local(async move {
            // A failure is met again by the next reservation that is waited for.
            if let Ok(made) = vault.reserve(n).await {
                let _ = pool_in(&ring, &pool, &made);
            }
            refilling.set(false);
        });
    }

    /// Gives each of `need` a slot of the pool as its live slot, and sends
    /// their binds to the vault (see [`Sealer::ensure`]): one `bind` at a
    /// time, each with every bind made while the one before was under way
    /// (a push meeting new aggregates would otherwise cost the vault a
    /// write and a flush each; the slots stay recorded by writes until
    /// their `bind` is answered, so waiting changes no guarantee).
    fn bind_pool(&self, need: &[&str]) -> Result<()> {
        {
            let mut ring = self.ring.borrow_mut();
            let mut pool = self.pool.borrow_mut();
            let mut unacked = self.unacked.borrow_mut();
            let mut binds = self.binds.borrow_mut();
            for a in need {
                let Some(slot) = pool.pop() else { break };
                // The name's hash goes to the vault too: its worker need not compute it.
                let hash = crate::seal::name_hash(a);
                ring.set_live_hashed(a, hash, slot);
                // Unconfirmed from now on: recorded by every write sealed under it.
                unacked.insert(slot, (*a).to_owned());
                binds.push(((*a).to_owned(), slot, hash));
            }
        }
        if self.binding.replace(true) {
            return Ok(());
        }
        let (vault, ring, unacked, binds, binding) = (
            self.vault.clone(),
            self.ring.clone(),
            self.unacked.clone(),
            self.binds.clone(),
            self.binding.clone(),
        );
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let batch = std::mem::take(&mut *binds.borrow_mut());
                if batch.is_empty() {
                    binding.set(false);
                    return;
                }
                let pairs: Array = batch
                    .iter()
                    .map(|(a, slot, hash)| {
                        JsValue::from(Array::of3(
                            &JsValue::from_str(a),
                            &JsValue::from(*slot),
                            &Uint8Array::from(&hash[..]),
                        ))
                    })
                    .collect();
                let given: HashMap<String, u32> = batch
                    .iter()
                    .map(|(a, slot, _)| (a.clone(), *slot))
                    .collect();
                let answer = wasm_bindgen_futures::JsFuture::from(vault.bind(pairs)).await;
                let bound = match answer {
                    Ok(found) => learn_bound(&mut ring.borrow_mut(), &found, &given).is_ok(),
                    Err(_) => false,
                };
                if bound {
                    let mut unacked = unacked.borrow_mut();
                    for (_, slot, _) in &batch {
                        unacked.remove(slot);
                    }
                } else {
                    // Not bound (the vault failed, or was closed): writes keep
                    // recording these slots, whose binds a later connection
                    // finishes; no more is sealed under them here.
                    let mut ring = ring.borrow_mut();
                    for (_, slot, _) in &batch {
                        ring.retired(*slot);
                    }
                }
            }
        });
        Ok(())
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
    /// fence loads every slot again (the live ones changed); whether
    /// anything was fetched (the caller then does its work again).
    pub async fn refresh(&self) -> Result<bool> {
        let moved = self.moved.take();
        if let Some(value) = moved {
            // Live slots loaded from now on are at least as new as the
            // rotation that moved the fence (a shred rotates first). They
            // are loaded first, then swapped in at once with the fence's
            // value: meanwhile the keyring stays as it was (a write sealing
            // under a slot the shred retired is undone by the fence check),
            // and never knows no live slot at all, which would give an
            // aggregate that has one a reserved slot whose bind the vault
            // makes a retired slot, destroyed by the shred under way.
            let loaded = self
                .vault
                .load_all()
                .await
                .map_err(|e| vault_error(&e))
                .and_then(|all| {
                    let mut ring = self.ring.borrow_mut();
                    ring.forget_live();
                    apply_load(&mut ring, &all)
                });
            if let Err(e) = loaded {
                self.moved.set(Some(value));
                return Err(e);
            }
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

/// Applies a load of every slot (`loadAll`: `[[slot, bytes | null, hash |
/// null], ...]`) to `ring`: keys, destroyed slots, live slots by hash.
fn apply_load(ring: &mut Keyring, all: &JsValue) -> Result<()> {
    for entry in Array::from(all).iter() {
        let entry = Array::from(&entry);
        let Some(slot) = entry.get(0).as_f64().map(|s| s as u32) else {
            continue;
        };
        let key = entry.get(1);
        if key.is_null() {
            ring.destroyed(slot);
            continue;
        }
        ring.insert(slot, &Uint8Array::new(&key).to_vec())?;
        let hash = entry.get(2);
        if !hash.is_null() && !hash.is_undefined() {
            let mut h: NameHash = [0; 32];
            let bytes = Uint8Array::new(&hash);
            if bytes.length() as usize == h.len() {
                bytes.copy_to(&mut h);
                ring.set_live_hash(h, slot);
            }
        }
    }
    Ok(())
}

/// Learns the keys of the slots a reservation made (`[[slot, bytes], ...]`)
/// and adds them to the pool.
fn pool_in(ring: &RefCell<Keyring>, pool: &RefCell<Vec<u32>>, made: &JsValue) -> Result<()> {
    let mut ring = ring.borrow_mut();
    let mut pool = pool.borrow_mut();
    for entry in Array::from(made).iter() {
        let entry = Array::from(&entry);
        let Some(slot) = entry.get(0).as_f64().map(|s| s as u32) else {
            continue;
        };
        ring.insert(slot, &Uint8Array::new(&entry.get(1)).to_vec())?;
        pool.push(slot);
    }
    Ok(())
}

/// Learns the vault's answer to a bind, `[[aggregate, live slot, bytes |
/// null], ...]`: an aggregate that got a live slot elsewhere meanwhile
/// seals under that one from now on. Only while the answer is current:
/// an aggregate still sealing under the slot `given` for it (this
/// connection's binds), or without a live slot (binds recorded by others);
/// an answer overtaken by a refresh (another tab's shred) is dropped.
fn learn_bound(ring: &mut Keyring, found: &JsValue, given: &HashMap<String, u32>) -> Result<()> {
    for entry in Array::from(found).iter() {
        let entry = Array::from(&entry);
        let (Some(aggregate), Some(slot)) = (entry.get(0).as_string(), entry.get(1).as_f64())
        else {
            continue;
        };
        let slot = slot as u32;
        let mine = given.get(&aggregate).copied();
        if ring.live(&aggregate) != mine {
            continue;
        }
        if let Some(mine) = mine.filter(|m| *m != slot) {
            // The vault made it a retired slot of the aggregate.
            ring.retired(mine);
        }
        let key = entry.get(2);
        if !key.is_null() && !key.is_undefined() {
            ring.insert(slot, &Uint8Array::new(&key).to_vec())?;
        }
        if ring.opens(slot) {
            ring.set_live(&aggregate, slot);
        }
    }
    Ok(())
}

/// The store's shred lock, released when dropped (also when the shred
/// holding it is dropped unfinished, the store being closed).
pub struct ShredLock(js_sys::Function);

impl Drop for ShredLock {
    fn drop(&mut self) {
        let _ = self.0.call0(&JsValue::NULL);
    }
}
