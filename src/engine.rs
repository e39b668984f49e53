//! push, filter and forget over any [`Storage`]: the whole behaviour of SPEC
//! section 4, free of the browser so that it is tested natively.

use std::collections::{HashMap, HashSet};

use crate::batch::{Batch, EventsJson};
use crate::error::{Error, Result};
use crate::filter::{Access, Filter};
use crate::push::{self, PushEntry};
use crate::storage::{Storage, Transaction};

/// Batches read per storage request when scanning or fetching candidates.
pub const PAGE_BATCHES: usize = 256;
/// Events handed to a filter's sink at a time (bounds memory when streaming).
pub const PAGE_EVENTS: usize = 1000;

/// Appends the entries atomically and returns the stored batches.
pub async fn push<S: Storage>(
    storage: &S,
    entries: &[PushEntry],
    created_at: u64,
    new_id: impl FnMut() -> String,
) -> Result<Vec<Batch>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = storage.write().await?;
    let aggregates = push::aggregates(entries);
    let (last, heads) = futures::join!(tx.last_position(), tx.heads(&aggregates));
    let heads: HashMap<String, u64> = aggregates
        .iter()
        .map(|a| a.to_string())
        .zip(heads?)
        .collect();
    let batches = push::sequence(entries, &heads, last?, created_at, new_id)?;
    tx.add(&batches)?;
    tx.commit().await?;
    Ok(batches)
}

/// The public events of freshly pushed batches, as one JSON array.
pub fn events_json(batches: &[Batch]) -> Result<String> {
    let mut out = EventsJson::new();
    for batch in batches {
        for (i, event) in batch.decode()?.iter().enumerate() {
            out.push(&batch.event(i, event))?;
        }
    }
    Ok(out.take())
}

/// Streams the matching events, in position order, to `sink` in pages of
/// JSON arrays (at most about [`PAGE_EVENTS`] each). Stops after `limit`.
pub async fn filter<S: Storage>(
    storage: &S,
    filter: &Filter,
    mut sink: impl FnMut(String) -> Result<()>,
) -> Result<()> {
    let tx = storage.read().await?;
    let mut candidates = Candidates::start(&tx, filter).await?;
    let mut remaining = filter.limit.unwrap_or(usize::MAX);
    let mut out = EventsJson::new();
    'pages: while remaining > 0 {
        let Some(page) = candidates.next_page(&tx).await? else {
            break;
        };
        for batch in page.iter().filter(|b| filter.may_match(b)) {
            for (i, event) in batch.decode()?.iter().enumerate() {
                if filter.matches(batch, i, event) {
                    out.push(&batch.event(i, event))?;
                    remaining -= 1;
                    if remaining == 0 {
                        break 'pages;
                    }
                }
            }
        }
        if out.len() >= PAGE_EVENTS {
            sink(out.take())?;
        }
    }
    if !out.is_empty() {
        sink(out.take())?;
    }
    Ok(())
}

/// Erases the payload of every matching event, keeping its metadata, in one
/// transaction. Returns how many events were newly erased.
pub async fn forget<S: Storage>(storage: &S, filter: &Filter) -> Result<u64> {
    if filter.limit.is_some() {
        return Err(Error::argument("forget does not take a `limit`"));
    }
    let mut tx = storage.write().await?;
    let mut candidates = Candidates::start(&tx, filter).await?;
    let mut erased = 0;
    while let Some(page) = candidates.next_page(&tx).await? {
        let mut changed = Vec::new();
        for batch in page.iter().filter(|b| filter.may_match(b)) {
            let mut events = batch.decode()?;
            let mut touched = false;
            for (i, event) in events.iter_mut().enumerate() {
                if !event.forgotten && filter.matches(batch, i, event) {
                    event.payload = None;
                    event.forgotten = true;
                    touched = true;
                    erased += 1;
                }
            }
            if touched {
                let json = serde_json::to_string(&events)
                    .map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))?;
                changed.push(Batch {
                    events: json,
                    ..batch.clone()
                });
            }
        }
        tx.put(&changed)?;
    }
    tx.commit().await?;
    Ok(erased)
}

/// The batches that may hold matches, page by page in position order:
/// from the indexes when every query has a literal prefix, else a scan.
enum Candidates {
    Scan {
        from: u64,
    },
    Keys {
        keys: Vec<u64>,
        loaded: HashMap<u64, Batch>,
        next: usize,
    },
}

impl Candidates {
    async fn start<T: Transaction>(tx: &T, filter: &Filter) -> Result<Self> {
        let Some(accesses) = filter.plan() else {
            return Ok(Candidates::Scan { from: 0 });
        };
        let mut keys = HashSet::new();
        let mut loaded = HashMap::new();
        for access in accesses {
            match access {
                Access::Aggregate {
                    range,
                    from_sequence,
                } => {
                    for batch in tx.by_aggregate(&range, from_sequence).await? {
                        keys.insert(batch.last_position);
                        loaded.insert(batch.last_position, batch);
                    }
                }
                Access::Action(range) => keys.extend(tx.keys_by_action(&range).await?),
                Access::Scan => return Ok(Candidates::Scan { from: 0 }),
            }
        }
        let mut keys: Vec<u64> = keys.into_iter().collect();
        keys.sort_unstable();
        Ok(Candidates::Keys {
            keys,
            loaded,
            next: 0,
        })
    }

    async fn next_page<T: Transaction>(&mut self, tx: &T) -> Result<Option<Vec<Batch>>> {
        match self {
            Candidates::Scan { from } => {
                let page = tx.scan(*from, PAGE_BATCHES).await?;
                match page.last() {
                    None => Ok(None),
                    Some(last) => {
                        *from = last.last_position + 1;
                        Ok(Some(page))
                    }
                }
            }
            Candidates::Keys { keys, loaded, next } => {
                if *next >= keys.len() {
                    return Ok(None);
                }
                let end = (*next + PAGE_BATCHES).min(keys.len());
                let page_keys = &keys[*next..end];
                *next = end;
                let missing: Vec<u64> = page_keys
                    .iter()
                    .copied()
                    .filter(|k| !loaded.contains_key(k))
                    .collect();
                let mut fetched = tx.get(&missing).await?.into_iter();
                let mut page = Vec::with_capacity(page_keys.len());
                for key in page_keys {
                    match loaded.remove(key) {
                        Some(batch) => page.push(batch),
                        None => page.extend(fetched.next()),
                    }
                }
                Ok(Some(page))
            }
        }
    }
}
