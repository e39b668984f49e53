//! Crypto-shredding forget (docs/privacy.md, "Crypto-shredding forget"):
//! after a forget's transaction, which also wrote the aggregates it erased
//! payloads of under the `"shred"` key of the `sync` object store, every
//! such aggregate whose events are now all forgotten has its key slots
//! destroyed in the vault; one only partly forgotten gets a new slot, its
//! surviving payloads are sealed again under it in one transaction, and
//! its old slots are destroyed. Then the entry is cleared. Open finishes a
//! shred a closed tab left.

use std::future::Future;

use super::idb::{IdbStorage, SHRED_KEY};
use crate::error::Result;
use crate::storage::{Storage, Transaction};

/// Runs `op`; when it failed for want of keys this connection's keyring
/// lacked (slots made or aggregates first written by another tab), fetches
/// them from the vault and runs it again (twice at most).
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
            (Err(_), Some(sealer)) if tries < 2 => {
                if !sealer.refresh().await? {
                    return out;
                }
                tries += 1;
            }
            _ => return out,
        }
    }
}

/// Which of `aggregates` still hold a payload.
async fn survivors(storage: &IdbStorage, aggregates: &[String]) -> Result<Vec<bool>> {
    let tx = storage.read().await?;
    let mut out = Vec::with_capacity(aggregates.len());
    for a in aggregates {
        let mut any = false;
        for b in tx.by_aggregate(a, 1).await? {
            let text = tx.text(&b)?;
            any |= b.decode_text(&text)?.iter().any(|e| e.payload.is_some());
        }
        out.push(any);
    }
    Ok(out)
}

/// Seals the events of `aggregates` again (under their live slots), in one transaction.
async fn reseal(storage: &IdbStorage, aggregates: &[String]) -> Result<()> {
    let mut tx = storage.write().await?;
    let mut batches = Vec::new();
    for a in aggregates {
        for b in tx.by_aggregate(a, 1).await? {
            // Read records hold their text back until asked (`text`).
            let events = tx.text(&b)?.into_owned();
            batches.push(crate::batch::Batch { events, ..b });
        }
    }
    tx.put(&batches)?;
    tx.commit().await
}

/// Finishes the shred the `"shred"` entry lists, if any (see the module).
/// `destroy: false` (a test hook) rotates and seals again but keeps the old keys.
pub async fn run(storage: &IdbStorage, destroy: bool) -> Result<()> {
    let Some(sealer) = storage.0.sealer() else {
        return Ok(());
    };
    let Some(text) = storage.0.sync_entry(SHRED_KEY).await?.as_string() else {
        return Ok(());
    };
    let aggregates = crate::seal::shred_entry(&text)?;
    let alive = keyed(storage, || survivors(storage, &aggregates)).await?;
    let (partial, whole): (Vec<_>, Vec<_>) = aggregates.iter().zip(alive).partition(|(_, a)| *a);
    let partial: Vec<String> = partial.into_iter().map(|(a, _)| a.clone()).collect();
    let whole: Vec<String> = whole.into_iter().map(|(a, _)| a.clone()).collect();
    if !partial.is_empty() {
        sealer.rotate(&partial).await?;
        keyed(storage, || reseal(storage, &partial)).await?;
    }
    if !destroy {
        return Ok(());
    }
    sealer.shred(&whole, false).await?;
    sealer.shred(&partial, true).await?;
    storage.0.shredded(&aggregates).await
}
