//! push, filter and forget over any [`Storage`]: the whole behaviour of SPEC
//! section 4, free of the browser so that it is tested natively.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::MaybeDone;

use crate::batch::{Batch, Event, EventsJson, Page, Segment};
use crate::error::{Error, Result};
use crate::filter::{Access, Filter, Range};
use crate::heads::HeadCache;
use crate::push::{self, PushEntry};
use crate::storage::{Storage, Transaction};
use crate::subject::KeyRange;
use crate::sync::local::{self, State};

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
    tx.append(batches)?;
    let out = published(&tx, batches)?;
    tx.commit().await?;
    Ok(out)
}

/// Folds the oldest unfolded records (about `budget` batches, at least one
/// record) in one write transaction: their batches become records of their
/// own and the unfolded records are deleted, all or nothing (see
/// [`crate::log`]). Returns how many records were folded (0: none left).
pub async fn fold<S: Storage>(storage: &S, budget: usize) -> Result<usize> {
    let mut tx = storage.write().await?;
    let folded = tx.fold(budget).await?;
    tx.commit().await?;
    Ok(folded)
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
    /// Only events with a position below this one (`None`: to the end):
    /// where a backwards read resumes.
    pub before: Option<u64>,
    /// Scan the log from `after` on instead of using the indexes: cheaper
    /// when little has been appended since `after` (a live subscription).
    pub tail: bool,
}

/// Streams the matching events of `window`, in position order (descending
/// with `filter.reverse`), to `sink` in pages (at most about
/// [`PAGE_EVENTS`] events each), with the transaction they were read in
/// (see [`page_json`]). Stops after `limit`.
pub async fn filter<S: Storage>(
    storage: &S,
    filter: &Filter,
    window: Window,
    mut sink: impl FnMut(&S::Tx, Vec<Segment>) -> Result<()>,
) -> Result<()> {
    let tx = storage.read().await?;
    read(&tx, filter, window, &mut sink).await
}

/// Like [`filter`], and returns the log's last position in the snapshot
/// read, so that a caller can resume after it without missing or repeating
/// an event. (Both requests run side by side in the one transaction.)
pub async fn filter_to_end<S: Storage>(
    storage: &S,
    filter: &Filter,
    window: Window,
    mut sink: impl FnMut(&S::Tx, Vec<Segment>) -> Result<()>,
) -> Result<u64> {
    let tx = storage.read().await?;
    let (end, read) = futures::join!(tx.last_position(), read(&tx, filter, window, &mut sink));
    read?;
    end
}

/// How many events match `filter` (at most its `limit`), without making
/// public events: a batch whose events all match is counted from its
/// metadata, others are decoded but never encoded. Without queries the
/// count is the log's last position (positions have no gaps), and for one
/// aggregate (and a sequence range) it follows from the aggregate's head.
pub async fn count<S: Storage>(storage: &S, filter: &Filter) -> Result<u64> {
    let tx = storage.read().await?;
    let limit = filter.limit.map_or(u64::MAX, |l| l as u64);
    if filter.queries.is_empty() {
        // Positions have no gaps but those a sync conflict withdrew.
        let (last, state) = futures::join!(tx.last_position(), State::load(&tx));
        let withdrawn = state?.map_or(0, |s| s.withdrawn);
        return Ok(last?.saturating_sub(withdrawn).min(limit));
    }
    // One aggregate by sequence only: its sequences have no gaps either.
    if let [q] = filter.queries.as_slice() {
        let exact = q.aggregate.as_ref().and_then(|p| match p.key_range() {
            Some(KeyRange::Exact(a)) => Some(a),
            _ => None,
        });
        if let (Some(aggregate), None, true, true) = (
            exact,
            &q.subjects,
            q.created_at == Range::default(),
            q.position == Range::default(),
        ) {
            let head = tx.heads(&[aggregate.as_str()]).await?;
            let end = head.first().map_or(1, |h| h + 1);
            let from = q.sequence.from.unwrap_or(1).max(1);
            let to = q.sequence.to.unwrap_or(u64::MAX).min(end);
            return Ok(to.saturating_sub(from).min(limit));
        }
    }
    let mut counter = Counter(0);
    walk(&tx, filter, Window::default(), &mut counter).await?;
    Ok(counter.0)
}

/// Hands the event with this `id` to `sink` (a page of one event, made
/// with the transaction it was read in) and returns `true`; `false` when
/// there is none.
///
/// Ids made by `push` are UUIDv7s whose timestamp is the push's
/// `createdAt`: the batches written in that millisecond (the `createdAt`
/// index) hold it. Only an id that is not a UUIDv7, or is not found
/// there (an event stored with an id made elsewhere), costs a scan of the
/// log.
pub async fn get<S: Storage>(
    storage: &S,
    id: &str,
    mut sink: impl FnMut(&S::Tx, Vec<Segment>) -> Result<()>,
) -> Result<bool> {
    if id.is_empty() {
        return Ok(false);
    }
    let tx = storage.read().await?;
    let mut found = Page::new();
    if let Some(ms) = uuid_v7_millis(id) {
        let batches = tx.by_created_at(ms).await?;
        find(&tx, batches, id, &mut found)?;
    }
    let mut from = 1;
    while found.is_empty() {
        let page = tx.scan(from, u64::MAX, PAGE_BATCHES).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        from = last.last_position + 1;
        find(&tx, page, id, &mut found)?;
    }
    sink(&tx, found.take())?;
    Ok(true)
}

/// The milliseconds of a UUIDv7 (its first 48 bits), `None` for any other string.
/// (Read by hand: the `uuid` parser weighs a few KiB of wasm.)
pub fn uuid_v7_millis(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    let shaped = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shaped || b[14] != b'7' {
        return None;
    }
    // The first 48 bits: "xxxxxxxx-xxxx".
    let hex = |s: &[u8]| {
        s.iter().try_fold(0u64, |n, c| {
            Some(n * 16 + u64::from((*c as char).to_digit(16)?))
        })
    };
    Some(hex(&b[..8])? << 16 | hex(&b[9..13])?)
}

/// Puts the event `id` of `batches` into `found`, if there.
fn find<T: Transaction>(tx: &T, batches: Vec<Batch>, id: &str, found: &mut Page) -> Result<()> {
    // The id appears verbatim in the text unless JSON escapes it.
    let plain = !id.bytes().any(|c| c == b'"' || c == b'\\' || c < b' ');
    for batch in batches {
        if !found.is_empty() || (plain && !tx.text_contains(&batch, id)?) {
            tx.release(&batch);
            continue;
        }
        let text = tx.text_to_match(&batch)?;
        let events = batch.decode_text(&text)?;
        if let Some(i) = events.iter().position(|e| e.id == id) {
            let opened = tx.open(&events[i])?;
            found.push(&batch.event(i, &opened.apply(&events[i])))?;
        }
    }
    Ok(())
}

/// A page of [`filter`] as one JSON array of public events, whole batches
/// decoded from the text `tx` holds (in descending order when `reverse`,
/// as the read that made the page). (The browser expands whole batches in
/// JavaScript instead, without copying them into wasm.)
pub fn page_json<T: Transaction>(tx: &T, page: Vec<Segment>, reverse: bool) -> Result<String> {
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
                let decoded = batch.decode_text(&text)?;
                for i in in_order(decoded.len(), reverse) {
                    events.push(&batch.event(i, &decoded[i]))?;
                }
                append(&events.take());
            }
        }
    }
    json.push(']');
    Ok(json)
}

/// `0..len`, backwards when `reverse`.
fn in_order(len: usize, reverse: bool) -> impl Iterator<Item = usize> {
    (0..len).map(move |k| if reverse { len - 1 - k } else { k })
}

/// The log's last position (0 when empty).
pub async fn last_position<S: Storage>(storage: &S) -> Result<u64> {
    storage.read().await?.last_position().await
}

/// Where a read puts what it finds.
trait Out<T> {
    /// Every event of a batch, all matching.
    fn whole(&mut self, tx: &T, batch: Batch) -> Result<()>;
    /// One matching event.
    fn event(&mut self, event: &Event<'_>) -> Result<()>;
    /// Called between batches: hands out a full page.
    fn page_done(&mut self, _tx: &T) -> Result<()> {
        Ok(())
    }
    /// Called at the end.
    fn finish(&mut self, _tx: &T) -> Result<()> {
        Ok(())
    }
}

/// Collects pages of public events for a sink.
struct Collect<'a, T> {
    page: Page,
    sink: &'a mut dyn FnMut(&T, Vec<Segment>) -> Result<()>,
}

impl<T> Out<T> for Collect<'_, T> {
    fn whole(&mut self, _tx: &T, batch: Batch) -> Result<()> {
        self.page.whole(batch);
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) -> Result<()> {
        self.page.push(event)
    }

    fn page_done(&mut self, tx: &T) -> Result<()> {
        if self.page.len() >= PAGE_EVENTS {
            (self.sink)(tx, self.page.take())?;
        }
        Ok(())
    }

    fn finish(&mut self, tx: &T) -> Result<()> {
        if !self.page.is_empty() {
            (self.sink)(tx, self.page.take())?;
        }
        Ok(())
    }
}

/// Counts, making no events.
struct Counter(u64);

impl<T: Transaction> Out<T> for Counter {
    fn whole(&mut self, tx: &T, batch: Batch) -> Result<()> {
        self.0 += batch.len();
        tx.release(&batch);
        Ok(())
    }

    fn event(&mut self, _event: &Event<'_>) -> Result<()> {
        self.0 += 1;
        Ok(())
    }
}

/// One read loop for every sink (not one copy of it per sink: wasm size).
async fn read<T: Transaction>(
    tx: &T,
    filter: &Filter,
    window: Window,
    sink: &mut dyn FnMut(&T, Vec<Segment>) -> Result<()>,
) -> Result<()> {
    let mut out = Collect {
        page: Page::new(),
        sink,
    };
    walk(tx, filter, window, &mut out).await
}

/// The positions `[lo, hi)` a read of `filter` in `window` covers.
fn bounds(filter: &Filter, window: Window) -> (u64, u64) {
    let (from, to) = filter.positions();
    let lo = from.max(window.after.saturating_add(1));
    let hi = to.min(window.before.unwrap_or(u64::MAX));
    (lo, hi)
}

/// The read loop of [`filter`] and [`count`]: candidates page by page,
/// each checked on its metadata, then whole or event by event.
async fn walk<T: Transaction>(
    tx: &T,
    filter: &Filter,
    window: Window,
    out: &mut dyn Out<T>,
) -> Result<()> {
    let (lo, hi) = bounds(filter, window);
    let mut remaining = filter.limit.unwrap_or(usize::MAX);
    if lo >= hi || remaining == 0 {
        return Ok(());
    }
    let reverse = filter.reverse;
    let mut candidates = Candidates::start(tx, filter, window.tail, lo, hi).await?;
    'pages: while remaining > 0 {
        let Some(page) = candidates.next_page(tx, remaining).await? else {
            break;
        };
        for batch in page {
            if remaining == 0 {
                tx.release(&batch);
                continue;
            }
            let Some(matcher) = filter.for_batch(&batch) else {
                tx.release(&batch);
                continue;
            };
            let first = batch.first_position();
            let len = batch.len() as usize;
            if first >= lo
                && batch.last_position < hi
                && len <= remaining
                && matcher.takes_all(&batch)
            {
                remaining -= len;
                out.whole(tx, batch)?;
            } else {
                // An encrypted store opens the payloads of the events taken only.
                let text = tx.text_to_match(&batch)?;
                let events = batch.decode_text(&text)?;
                for i in in_order(events.len(), reverse) {
                    let position = first + i as u64;
                    if position >= lo && position < hi && matcher.matches(&batch, i, &events[i]) {
                        let opened = tx.open(&events[i])?;
                        out.event(&batch.event(i, &opened.apply(&events[i])))?;
                        remaining -= 1;
                        if remaining == 0 {
                            break;
                        }
                    }
                }
            }
            out.page_done(tx)?;
        }
        if remaining == 0 {
            break 'pages;
        }
    }
    out.finish(tx)
}

/// Erases the payload of every matching event, keeping its metadata, in one
/// transaction. Returns how many events were newly erased, and their new
/// state (payload-free) as a JSON array, for subscribers. In a store that
/// syncs, the erased events the server holds are queued, in the same
/// transaction, as forgets to send (ids from `new_id`); pending ones are
/// pushed without their payload.
pub async fn forget<S: Storage>(
    storage: &S,
    filter: &Filter,
    mut new_id: impl FnMut() -> String,
) -> Result<(u64, String)> {
    if filter.limit.is_some() {
        return Err(Error::argument("forget does not take a `limit`"));
    }
    if filter.reverse {
        return Err(Error::argument("forget does not take `reverse`"));
    }
    let mut tx = storage.write().await?;
    let (lo, hi) = bounds(filter, Window::default());
    let mut candidates = Candidates::start(&tx, filter, false, lo, hi).await?;
    let mut erased = 0;
    let mut notice = EventsJson::new();
    let mut state = State::load(&tx).await?;
    let mut synced = Vec::new();
    while let Some(page) = candidates.next_page(&tx, usize::MAX).await? {
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
                    if event.remote.is_some() {
                        synced.push((batch.aggregate.clone(), batch.first_sequence + i as u64));
                    }
                }
            }
            if erased > before {
                tx.forgot(&batch.aggregate);
                changed.push(
                    batch.with_events(
                        serde_json::to_string(&events)
                            .map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))?,
                    ),
                );
            }
        }
        tx.put(&changed)?;
    }
    if let Some(state) = state.as_mut().filter(|_| !synced.is_empty()) {
        local::queue_forgets(state, synced, &mut new_id);
        local::save(state, &mut tx)?;
    }
    tx.commit().await?;
    Ok((erased, notice.take()))
}

/// The batches that may hold matches, page by page in position order
/// (descending for a reverse read): from the indexes when every query has
/// a literal prefix, else a scan.
enum Candidates {
    Scan(Scan),
    Keys {
        /// Candidate keys in read order.
        keys: Vec<u64>,
        loaded: HashMap<u64, Batch>,
        next: usize,
        /// Read the key range and drop the non-candidates (one request for
        /// many batches) while candidates are dense; else one `get` each.
        dense: bool,
        reverse: bool,
    },
}

/// The log read in key order, forwards from `next` or backwards from `next`
/// down to `lo`.
struct Scan {
    next: u64,
    lo: u64,
    /// Forwards, the read ends at the first batch starting at or after `hi`.
    hi: u64,
    reverse: bool,
    done: bool,
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

/// How many batches to read for a page when `want` events are still
/// wanted: each batch holds at least one event, so a small `limit` reads
/// few batches first.
fn page_size(want: usize) -> usize {
    want.clamp(1, PAGE_BATCHES)
}

impl Scan {
    /// A scan of the positions `[lo, hi)`. Backwards, it starts at the batch
    /// holding position `hi - 1` (the first key at or after it).
    async fn start<T: Transaction>(tx: &T, lo: u64, hi: u64, reverse: bool) -> Result<Self> {
        let mut next = if reverse { u64::MAX } else { lo };
        if reverse && hi < u64::MAX {
            if let Some(top) = tx.scan(hi - 1, u64::MAX, 1).await?.first() {
                next = top.last_position;
                tx.release(top);
            }
        }
        Ok(Scan {
            next,
            lo,
            hi,
            reverse,
            done: false,
        })
    }

    async fn next_page<T: Transaction>(
        &mut self,
        tx: &T,
        want: usize,
    ) -> Result<Option<Vec<Batch>>> {
        if self.done || (self.reverse && self.next < self.lo) {
            return Ok(None);
        }
        let size = page_size(want);
        if self.reverse {
            let page = tx.scan_back(self.lo, self.next, size).await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            self.done = page.len() < size || last.last_position <= self.lo;
            self.next = last.last_position - 1;
            return Ok(Some(page));
        }
        // Forwards: the batches ending before `hi`, then the one holding
        // position `hi - 1` if it ends at or after `hi`.
        let to = self.hi.saturating_sub(1);
        let mut page = if self.next <= to {
            tx.scan(self.next, to, size).await?
        } else {
            Vec::new()
        };
        if let Some(last) = page.last() {
            self.next = last.last_position + 1;
            if page.len() == size {
                return Ok(Some(page));
            }
        }
        self.done = true;
        if self.hi < u64::MAX && page.last().is_none_or(|b| b.last_position < to) {
            for batch in tx.scan(self.next.max(self.hi), u64::MAX, 1).await? {
                if batch.first_position() < self.hi {
                    page.push(batch);
                } else {
                    tx.release(&batch);
                }
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

impl Candidates {
    /// The candidates of the positions `[lo, hi)`; `tail` scans whatever
    /// the plan (see [`Window::tail`]).
    async fn start<T: Transaction>(
        tx: &T,
        filter: &Filter,
        tail: bool,
        lo: u64,
        hi: u64,
    ) -> Result<Self> {
        let reverse = filter.reverse;
        let Some(accesses) = filter.plan().filter(|_| !tail) else {
            return Ok(Candidates::Scan(Scan::start(tx, lo, hi, reverse).await?));
        };
        // Every lookup is issued at once: IndexedDB pipelines them.
        // Backwards, an aggregate's batches are found by key, so that only
        // those read before the limit is reached are fetched.
        let batches = |aggregate: String, from_sequence: u64| {
            if reverse {
                Lookup::AggregateKeys(KeyRange::Exact(aggregate))
            } else {
                Lookup::Batches(aggregate, from_sequence)
            }
        };
        let mut lookups = Vec::new();
        for access in accesses {
            match access {
                Access::Aggregate {
                    range: KeyRange::Exact(aggregate),
                    from_sequence,
                } => lookups.push(batches(aggregate, from_sequence)),
                Access::Aggregate { range, .. } => lookups.push(Lookup::AggregateKeys(range)),
                Access::Action(range) => {
                    for owner in range.owners() {
                        lookups.push(match owner {
                            KeyRange::Exact(aggregate) => batches(aggregate, 0),
                            prefix @ KeyRange::Prefix(_) => Lookup::AggregateKeys(prefix),
                        });
                    }
                    lookups.push(Lookup::ActionKeys(range));
                }
                Access::Scan => {
                    return Ok(Candidates::Scan(Scan::start(tx, lo, hi, reverse).await?))
                }
            }
        }
        let mut keys = HashSet::new();
        let mut loaded = HashMap::new();
        for found in join_all(lookups.iter().map(|l| l.run(tx)).collect()).await {
            match found? {
                Found::Batches(batches) => {
                    for batch in batches {
                        keys.insert(batch.last_position);
                        loaded.insert(batch.last_position, batch);
                    }
                }
                Found::Keys(found) => keys.extend(found),
            }
        }
        let mut keys: Vec<u64> = keys.into_iter().filter(|k| *k >= lo).collect();
        keys.sort_unstable();
        // Batches are disjoint runs of positions: of the keys at or after
        // `hi`, only the first can hold a position below it.
        let past = keys.partition_point(|k| *k < hi);
        keys.truncate((past + 1).min(keys.len()));
        loaded.retain(|key, batch| {
            let keep = keys.binary_search(key).is_ok();
            if !keep {
                tx.release(batch);
            }
            keep
        });
        // Dense guess: few positions between candidates. The first range
        // read is small and each read corrects the guess (see `next_page`).
        let span = match (keys.first(), keys.last()) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        };
        let dense = keys.len() > 16 && span <= 32 * keys.len() as u64;
        if reverse {
            keys.reverse();
        }
        Ok(Candidates::Keys {
            keys,
            loaded,
            next: 0,
            dense,
            reverse,
        })
    }

    /// The next page of candidates; `want`: events still wanted.
    async fn next_page<T: Transaction>(
        &mut self,
        tx: &T,
        want: usize,
    ) -> Result<Option<Vec<Batch>>> {
        match self {
            Candidates::Scan(scan) => scan.next_page(tx, want).await,
            Candidates::Keys {
                keys,
                loaded,
                next,
                dense,
                reverse,
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
                    }
                    .min(page_size(want));
                    let range = if *reverse {
                        tx.scan_back(last, keys[*next], limit).await?
                    } else {
                        tx.scan(keys[*next], last, limit).await?
                    };
                    let end = range.last().map_or(last, |b| b.last_position);
                    let start = *next;
                    let before_end = |k: u64| if *reverse { k >= end } else { k <= end };
                    while *next < keys.len() && before_end(keys[*next]) {
                        *next += 1;
                    }
                    let wanted = &keys[start..*next];
                    *dense = wanted.len() as f64 >= DENSE * range.len() as f64;
                    let mut page = Vec::with_capacity(wanted.len());
                    for batch in range {
                        let key = batch.last_position;
                        let found = if *reverse {
                            wanted.binary_search_by(|k| key.cmp(k))
                        } else {
                            wanted.binary_search(&key)
                        };
                        if found.is_ok() {
                            page.push(batch);
                        } else {
                            tx.release(&batch);
                        }
                    }
                    return Ok(Some(page));
                }
                let size = if *reverse {
                    page_size(want)
                } else {
                    PAGE_BATCHES
                };
                let end = (*next + size).min(keys.len());
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
