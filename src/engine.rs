//! push, filter and forget over any [`Storage`]: the whole behaviour of SPEC
//! section 4, free of the browser so that it is tested natively.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::MaybeDone;

use crate::batch::{Batch, EventsJson, Page, Segment};
use crate::error::{Error, Result};
use crate::filter::{Access, Filter};
use crate::heads::HeadCache;
use crate::push::{self, PushEntry};
use crate::storage::{Storage, Transaction};
use crate::subject::KeyRange;

/// Batches read per storage request when scanning or fetching candidates.
pub const PAGE_BATCHES: usize = 256;
/// Events handed to a filter's sink at a time (bounds memory when streaming).
pub const PAGE_EVENTS: usize = 1000;

/// Appends the entries atomically; returns the stored batches and what
/// `published` made of them (the public events, in the caller's form),
/// called in the write transaction once the batches are added (nothing
/// for an empty call: `R::default()`).
///
/// When `cache` knows the log's end and every aggregate's head (as after
/// this store's own pushes), the push writes without reading anything: its
/// first record carries its first position under a unique index, so if
/// any other context has appended since, that record collides with the
/// other push's first one, the transaction aborts with nothing written,
/// and the push is done again the checked way. The checked way reads the
/// log's end and the heads the cache does not know inside the write
/// transaction (IndexedDB serializes those, across tabs).
pub async fn push<S: Storage, R: Default>(
    storage: &S,
    cache: &HeadCache,
    entries: &[PushEntry],
    created_at: u64,
    mut new_id: impl FnMut() -> String,
    mut published: impl FnMut(&S::Tx, &[Batch]) -> Result<R>,
) -> Result<(Vec<Batch>, R)> {
    if entries.is_empty() {
        return Ok((Vec::new(), R::default()));
    }
    push::check(entries)?;
    let aggregates = push::aggregates(entries);
    let mut tx = storage.write().await?;
    // The guess is taken once the transaction exists: earlier pushes of
    // this page have then settled and recorded what they wrote.
    if let Some((last, heads)) = cache.guess(&aggregates) {
        // A sequence mismatch on a guess is not reported: it is checked.
        if let Ok(batches) = push::sequence(entries, &heads, last, created_at, &mut new_id) {
            let guess = Guess::begin(storage);
            match write(tx, &batches, &mut published).await {
                Ok(events) => {
                    remember(cache, last, heads, &batches);
                    return Ok((batches, events));
                }
                Err(Error::Constraint(_)) => cache.clear(),
                Err(e) => return Err(e),
            }
            // The retry's transaction is created before any call made
            // after this push can create one: it keeps its place.
            drop(guess);
            tx = storage.write().await?;
        }
    }
    let unknown = cache.unknown(&aggregates);
    let (last, fetched) = futures::join!(tx.last_position(), tx.heads(&unknown));
    let (last, fetched) = (last?, zip(&unknown, fetched?));
    let heads = match cache.heads(last, &aggregates, &fetched) {
        Some(heads) => heads,
        None => {
            let rest: Vec<&str> = aggregates
                .iter()
                .copied()
                .filter(|a| !fetched.contains_key(*a))
                .collect();
            let mut heads = zip(&rest, tx.heads(&rest).await?);
            heads.extend(fetched);
            heads
        }
    };
    let batches = match push::sequence(entries, &heads, last, created_at, &mut new_id) {
        Ok(pushed) => pushed,
        Err(e) => {
            cache.record(last, last, heads);
            return Err(e);
        }
    };
    let events = write(tx, &batches, &mut published).await?;
    remember(cache, last, heads, &batches);
    Ok((batches, events))
}

/// Adds the batches, makes the caller's result of them, commits.
async fn write<T: Transaction, R>(
    mut tx: T,
    batches: &[Batch],
    published: &mut impl FnMut(&T, &[Batch]) -> Result<R>,
) -> Result<R> {
    tx.add(batches)?;
    let out = published(&tx, batches)?;
    tx.commit().await?;
    Ok(out)
}

/// Records in the cache what a committed push found (`heads`, when the log
/// ended at `last`) and wrote.
fn remember(cache: &HeadCache, last: u64, heads: HashMap<String, u64>, batches: &[Batch]) {
    let end = batches.last().map_or(last, |b| b.last_position);
    let written = batches
        .iter()
        .map(|b| (b.aggregate.clone(), b.last_sequence));
    cache.record(last, end, heads.into_iter().chain(written));
}

/// A guessed write in flight (see [`Storage::begin_guess`]); ends on drop.
struct Guess<'a, S: Storage>(&'a S);

impl<'a, S: Storage> Guess<'a, S> {
    fn begin(storage: &'a S) -> Self {
        storage.begin_guess();
        Guess(storage)
    }
}

impl<S: Storage> Drop for Guess<'_, S> {
    fn drop(&mut self) {
        self.0.end_guess();
    }
}

fn zip(aggregates: &[&str], heads: Vec<u64>) -> HashMap<String, u64> {
    aggregates
        .iter()
        .map(|a| a.to_string())
        .zip(heads)
        .collect()
}

/// Which part of the log a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Only events with a position above this one (0: from the start).
    pub after: u64,
    /// Scan the log from `after` on instead of using the indexes: cheaper
    /// when little has been appended since `after` (a live subscription).
    pub tail: bool,
}

/// Streams the matching events of `window`, in position order, to `sink`
/// in pages (at most about [`PAGE_EVENTS`] events each), with the
/// transaction they were read in (see [`page_json`]). Stops after `limit`.
pub async fn filter<S: Storage>(
    storage: &S,
    filter: &Filter,
    window: Window,
    sink: impl FnMut(&S::Tx, Vec<Segment>) -> Result<()>,
) -> Result<()> {
    let tx = storage.read().await?;
    read(&tx, filter, window, sink).await
}

/// Like [`filter`], and returns the log's last position in the snapshot
/// read, so that a caller can resume after it without missing or repeating
/// an event. (Both requests run side by side in the one transaction.)
pub async fn filter_to_end<S: Storage>(
    storage: &S,
    filter: &Filter,
    window: Window,
    sink: impl FnMut(&S::Tx, Vec<Segment>) -> Result<()>,
) -> Result<u64> {
    let tx = storage.read().await?;
    let (end, read) = futures::join!(tx.last_position(), read(&tx, filter, window, sink));
    read?;
    end
}

/// A page of [`filter`] as one JSON array of public events, whole batches
/// decoded from the text `tx` holds. (The browser expands whole batches in
/// JavaScript instead, without copying them into wasm.)
pub fn page_json<T: Transaction>(tx: &T, page: Vec<Segment>) -> Result<String> {
    let mut json = String::from("[");
    let mut append = |array: &str| {
        let inner = &array[1..array.len() - 1];
        if !inner.is_empty() {
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(inner);
        }
    };
    for segment in page {
        match segment {
            Segment::Events(events) => append(&events),
            Segment::Whole(batch) => {
                let text = tx.text(&batch)?;
                let mut events = EventsJson::new();
                for (i, event) in batch.decode_text(&text)?.iter().enumerate() {
                    events.push(&batch.event(i, event))?;
                }
                append(&events.take());
            }
        }
    }
    json.push(']');
    Ok(json)
}

/// The log's last position (0 when empty).
pub async fn last_position<S: Storage>(storage: &S) -> Result<u64> {
    storage.read().await?.last_position().await
}

async fn read<T: Transaction>(
    tx: &T,
    filter: &Filter,
    window: Window,
    mut sink: impl FnMut(&T, Vec<Segment>) -> Result<()>,
) -> Result<()> {
    let mut candidates = Candidates::start(tx, filter, window).await?;
    let mut remaining = filter.limit.unwrap_or(usize::MAX);
    let mut out = Page::new();
    'pages: while remaining > 0 {
        let Some(page) = candidates.next_page(tx).await? else {
            break;
        };
        for batch in page {
            let Some(matcher) = filter.for_batch(&batch) else {
                tx.release(&batch);
                continue;
            };
            let first = batch.first_position();
            let len = batch.len() as usize;
            if first > window.after && len <= remaining && matcher.takes_all(&batch) {
                remaining -= len;
                out.whole(batch);
            } else {
                let text = tx.text(&batch)?;
                for (i, event) in batch.decode_text(&text)?.iter().enumerate() {
                    if first + i as u64 > window.after && matcher.matches(&batch, i, event) {
                        out.push(&batch.event(i, event))?;
                        remaining -= 1;
                        if remaining == 0 {
                            break 'pages;
                        }
                    }
                }
            }
            if remaining == 0 {
                break 'pages;
            }
            if out.len() >= PAGE_EVENTS {
                sink(tx, out.take())?;
            }
        }
    }
    if !out.is_empty() {
        sink(tx, out.take())?;
    }
    Ok(())
}

/// Erases the payload of every matching event, keeping its metadata, in one
/// transaction. Returns how many events were newly erased, and their new
/// state (payload-free) as a JSON array, for subscribers.
pub async fn forget<S: Storage>(storage: &S, filter: &Filter) -> Result<(u64, String)> {
    if filter.limit.is_some() {
        return Err(Error::argument("forget does not take a `limit`"));
    }
    let mut tx = storage.write().await?;
    let mut candidates = Candidates::start(&tx, filter, Window::default()).await?;
    let mut erased = 0;
    let mut notice = EventsJson::new();
    while let Some(page) = candidates.next_page(&tx).await? {
        let mut changed = Vec::new();
        for batch in &page {
            let Some(matcher) = filter.for_batch(batch) else {
                tx.release(batch);
                continue;
            };
            let text = tx.text(batch)?;
            let mut events = batch.decode_text(&text)?;
            let before = erased;
            for (i, event) in events.iter_mut().enumerate() {
                if !event.forgotten && matcher.matches(batch, i, event) {
                    event.payload = None;
                    event.forgotten = true;
                    notice.push(&batch.event(i, event))?;
                    erased += 1;
                }
            }
            if erased > before {
                changed.push(Batch {
                    events: serde_json::to_string(&events)
                        .map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))?,
                    aggregate: batch.aggregate.clone(),
                    actions: batch.actions.clone(),
                    ..*batch
                });
            }
        }
        tx.put(&changed)?;
    }
    tx.commit().await?;
    Ok((erased, notice.take()))
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
        /// Read the key range and drop the non-candidates (one request for
        /// many batches) while candidates are dense; else one `get` each.
        dense: bool,
    },
}

/// Runs futures side by side; their outputs in order. (A few, always:
/// futures' own `join_all` brings a whole task queue for long lists.)
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<MaybeDone<F>>>> = futures
        .into_iter()
        .map(|f| Box::pin(futures::future::maybe_done(f)))
        .collect();
    futures::future::poll_fn(|cx| {
        let mut ready = true;
        for f in futures.iter_mut() {
            ready &= f.as_mut().poll(cx).is_ready();
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    futures
        .iter_mut()
        .filter_map(|f| f.as_mut().take_output())
        .collect()
}

/// One index lookup of [`Candidates::start`].
enum Lookup {
    /// The batches of one aggregate (a small set: read with their values).
    Batches(String, u64),
    /// Keys of the batches of the aggregates in a range (maybe many: read by page).
    AggregateKeys(KeyRange),
    /// Keys of the batches listing an action of the range (sparse index).
    ActionKeys(KeyRange),
}

enum Found {
    Batches(Vec<Batch>),
    Keys(Vec<u64>),
}

impl Lookup {
    async fn run<T: Transaction>(&self, tx: &T) -> Result<Found> {
        Ok(match self {
            Lookup::Batches(aggregate, from_sequence) => {
                Found::Batches(tx.by_aggregate(aggregate, *from_sequence).await?)
            }
            Lookup::AggregateKeys(range) => Found::Keys(tx.keys_by_aggregate(range).await?),
            Lookup::ActionKeys(range) => Found::Keys(tx.keys_by_action(range).await?),
        })
    }
}

/// Below this share of candidates among the batches of a key range, reading
/// them one by one beats reading the range.
const DENSE: f64 = 0.25;

impl Candidates {
    async fn start<T: Transaction>(tx: &T, filter: &Filter, window: Window) -> Result<Self> {
        let scan = Candidates::Scan {
            from: window.after + 1,
        };
        let Some(accesses) = filter.plan().filter(|_| !window.tail) else {
            return Ok(scan);
        };
        // Every lookup is issued at once: IndexedDB pipelines them.
        let mut lookups = Vec::new();
        for access in accesses {
            match access {
                Access::Aggregate {
                    range: KeyRange::Exact(aggregate),
                    from_sequence,
                } => lookups.push(Lookup::Batches(aggregate, from_sequence)),
                Access::Aggregate { range, .. } => lookups.push(Lookup::AggregateKeys(range)),
                Access::Action(range) => {
                    for owner in range.owners() {
                        lookups.push(match owner {
                            KeyRange::Exact(aggregate) => Lookup::Batches(aggregate, 0),
                            prefix @ KeyRange::Prefix(_) => Lookup::AggregateKeys(prefix),
                        });
                    }
                    lookups.push(Lookup::ActionKeys(range));
                }
                Access::Scan => return Ok(scan),
            }
        }
        let mut keys = HashSet::new();
        let mut loaded = HashMap::new();
        for found in join_all(lookups.iter().map(|l| l.run(tx)).collect()).await {
            match found? {
                Found::Batches(batches) => {
                    for batch in batches {
                        if batch.last_position > window.after {
                            keys.insert(batch.last_position);
                            loaded.insert(batch.last_position, batch);
                        } else {
                            tx.release(&batch);
                        }
                    }
                }
                Found::Keys(found) => keys.extend(found.into_iter().filter(|k| *k > window.after)),
            }
        }
        let mut keys: Vec<u64> = keys.into_iter().collect();
        keys.sort_unstable();
        // Dense guess: few positions between candidates. The first range
        // read is small and each read corrects the guess (see `next_page`).
        let span = match (keys.first(), keys.last()) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        };
        let dense = keys.len() > 16 && span <= 32 * keys.len() as u64;
        Ok(Candidates::Keys {
            keys,
            loaded,
            next: 0,
            dense,
        })
    }

    async fn next_page<T: Transaction>(&mut self, tx: &T) -> Result<Option<Vec<Batch>>> {
        match self {
            Candidates::Scan { from } => {
                let page = tx.scan(*from, u64::MAX, PAGE_BATCHES).await?;
                match page.last() {
                    None => Ok(None),
                    Some(last) => {
                        *from = last.last_position + 1;
                        Ok(Some(page))
                    }
                }
            }
            Candidates::Keys {
                keys,
                loaded,
                next,
                dense,
            } => {
                if *next >= keys.len() {
                    return Ok(None);
                }
                if *dense && loaded.is_empty() {
                    let last = keys[keys.len() - 1];
                    let limit = if *next == 0 {
                        PAGE_BATCHES / 4
                    } else {
                        PAGE_BATCHES
                    };
                    let range = tx.scan(keys[*next], last, limit).await?;
                    let end = range.last().map_or(last, |b| b.last_position);
                    let start = *next;
                    while *next < keys.len() && keys[*next] <= end {
                        *next += 1;
                    }
                    let wanted = &keys[start..*next];
                    *dense = wanted.len() as f64 >= DENSE * range.len() as f64;
                    let mut page = Vec::with_capacity(wanted.len());
                    for batch in range {
                        if wanted.binary_search(&batch.last_position).is_ok() {
                            page.push(batch);
                        } else {
                            tx.release(&batch);
                        }
                    }
                    return Ok(Some(page));
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
