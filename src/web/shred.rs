//! Crypto-shredding forget (docs/privacy.md, "Crypto-shredding forget"):
//! after a forget's transaction, which also wrote the aggregates it erased
//! payloads of under the `"shred"` key of the `sync` object store, every
//! such aggregate gets a new live key slot (its old ones are retired), its
//! surviving payloads, if any, are sealed again under it in one
//! transaction that moves the shred fence, and its retired slots are
//! destroyed. Then the entry is cleared. Shreds of one store run one at a
//! time (a Web Lock); open finishes a shred a closed tab left. (An
//! aggregate whose events are all forgotten keeps a live slot that seals
//! nothing until it is written again.)

use std::collections::BTreeSet;
use std::future::Future;

use super::idb::{IdbStorage, SHRED_KEY};
use crate::error::Result;
use crate::storage::{Storage, Transaction};

/// How many times [`keyed`] runs an operation again.
pub const KEYED_TRIES: usize = 8;

/// Runs `op`; when it failed for want of keys this connection's keyring
/// lacked (slots made or aggregates first written by another tab) or met
/// a moved shred fence, fetches them from the vault and runs it again, as
/// long as that fetched something (at most [`KEYED_TRIES`] times: a forget
/// elsewhere can cost one try for its new slot, one for the aggregate's
/// retired live slot and one for its fence, and two tabs forgetting at
/// once meet each other's).
pub async fn keyed<T, F, Fut>(storage: &IdbStorage, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // Keys an earlier operation lacked (one not retried here, such as a
    // sync step) are fetched first.
    if let Some(sealer) = storage.0.sealer().filter(|s| s.wants()) {
        sealer.refresh().await?;
    }
    let mut tries = 0;
    loop {
        let out = op().await;
        match (&out, storage.0.sealer()) {
            (Err(_), Some(sealer)) if tries < KEYED_TRIES => {
                if !sealer.refresh().await? {
                    return out;
                }
                tries += 1;
            }
            _ => return out,
        }
    }
}

/// The fence of a shred (see `IdbTx::check_fence`): in one transaction,
/// every batch of `aggregates` still holding a payload is sealed again
/// under its aggregate's live slot (given by the rotation before), and the
/// fence moves on, so that a write elsewhere that still seals under a
/// retired slot is undone and done again under the new one. Batches
/// committed before it are read here; writes after it see the fence.
/// Returns the aggregates' slots that writes committed before it recorded
/// as not bound yet (see `Sealer::pending_binds`): those still reserved
/// are destroyed with the retired ones.
async fn fence(storage: &IdbStorage, aggregates: &[String]) -> Result<BTreeSet<u32>> {
    let mut tx = storage.write().await?;
    let mut unbound = BTreeSet::new();
    for (_, json) in tx.binds_entries().await? {
        // A record that cannot be read names nothing to destroy; it does
        // not stop every forget from shredding.
        let Ok(pairs) = crate::seal::binds_entry(&json) else {
            continue;
        };
        for (aggregate, slot) in pairs {
            if aggregates.contains(&aggregate) {
                unbound.insert(slot);
            }
        }
    }
    let mut batches = Vec::new();
    for a in aggregates {
        for b in tx.by_aggregate(a, 1).await? {
            // Read records hold their text back until asked (`text`).
            let events = tx.text(&b)?.into_owned();
            if b.decode_text(&events)?.iter().any(|e| e.payload.is_some()) {
                batches.push(b.with_events(events));
            }
        }
    }
    tx.put(&batches)?;
    tx.bump_fence();
    tx.commit().await?;
    Ok(unbound)
}

/// Finishes the shred the `"shred"` entry lists, if any (see the module):
/// every listed aggregate gets a new live slot, the fence seals its
/// surviving payloads under it, then the old slots are destroyed (an
/// aggregate whose events are all forgotten has none to seal again).
/// `destroy: false` (a test hook) keeps the old keys.
pub async fn run(storage: &IdbStorage, destroy: bool) -> Result<()> {
    let Some(sealer) = storage.0.sealer() else {
        return Ok(());
    };
    if storage.0.sync_entry(SHRED_KEY).await?.is_undefined() {
        return Ok(());
    }
    // One shred of the store at a time: another's rotation would retire
    // the slot this one seals survivors under, and its destroy of
    // retired slots would take them. The entry is read again under the lock.
    let _lock = sealer.lock_shred().await?;
    let Some(text) = storage.0.sync_entry(SHRED_KEY).await?.as_string() else {
        return Ok(());
    };
    let aggregates = crate::seal::shred_entry(&text)?;
    sealer.rotate(&aggregates).await?;
    let unbound = keyed(storage, || fence(storage, &aggregates)).await?;
    if !destroy {
        return Ok(());
    }
    sealer.shred(&aggregates, &unbound).await?;
    storage.0.shredded(&aggregates).await
}
