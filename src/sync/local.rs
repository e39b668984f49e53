//! The device's side of sync over any [`Storage`], one transaction per
//! step: which events are pending, what a push answer settles, how a pull
//! page enters the local log, how a conflict is resolved, and the forgets
//! still to send. The browser edge (`web::sync`) only fetches, holds the
//! lock and calls these; native tests run them on `MemoryStorage`.
//!
//! What a device keeps (`docs/storage.md`, schema 4):
//! - each event's `remote` (its server position) in its batch, absent
//!   while pending;
//! - one sync [`State`] record: the server log it synced with, the pull
//!   cursor, the local position up to which nothing is pending, the number
//!   of events withdrawn from the log, forgets to send and parked conflicts.
//!
//! Invariants:
//! - an aggregate's pending events are the tail of its local sequence (a
//!   pulled event always has a lower sequence than every pending one, or
//!   meets one and is a conflict);
//! - the cursor is stored with the items applied, in one transaction, so a
//!   crash repeats a pull and never skips one; an item met again is a no-op
//!   (its event is found by aggregate and sequence and has the same id);
//! - a rebase or discard deletes the aggregate's pending events from their
//!   positions (those positions stay empty: [`State::withdrawn`] counts
//!   them) and appends the remote events, then the rebased ones, at the
//!   end, so position order keeps agreeing with sequence order.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{self, Settled};
use super::protocol::{
    ErrorCode, PullItem, PullResponse, PushRequest, PushResponse, WireEvent, WirePattern,
    WireQuery, WireRange, WireSubject,
};
use crate::batch::{Batch, EventsJson, StoredEvent};
use crate::engine::{uuid_v7_millis, PAGE_BATCHES};
use crate::error::{Error, Result};
use crate::heads::HeadCache;
use crate::push::{self, Given};
use crate::storage::{Storage, Transaction};
use crate::subject::{Pattern, Subject};

/// The sync state of a store, one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct State {
    /// The server log this store synced with (`None` before the first answer).
    pub log: Option<String>,
    /// Server position up to which pulled items were applied.
    pub cursor: u64,
    /// Local positions up to this one hold no pending event.
    pub settled: u64,
    /// Events withdrawn from the log by rebase or discard: their positions
    /// stay empty, so counts subtract them.
    pub withdrawn: u64,
    /// Forgets made here that the server has not answered yet.
    pub forgets: Vec<Outgoing>,
    /// Conflicts waiting for a decision (no `onConflict`): their pending
    /// events stay pending and unsent, the remote events wait here.
    pub parked: Vec<Parked>,
    /// An import into this store is under way (see `crate::portability`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub importing: bool,
}

/// A forget to send (`POST /v1/forget`), with its idempotency id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub id: String,
    pub queries: Vec<(String, u64, u64)>,
}

/// A conflict without a decision yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parked {
    pub aggregate: String,
    /// The remote events of the aggregate not in the local log, in sequence order.
    pub remote: Vec<WireEvent>,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        self.aggregate == other.aggregate
            && self
                .remote
                .iter()
                .map(|e| &e.id)
                .eq(other.remote.iter().map(|e| &e.id))
    }
}

impl State {
    /// The stored state, if this store ever synced.
    pub async fn load<T: Transaction>(tx: &T) -> Result<Option<State>> {
        match tx.sync_state().await? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Error::Storage(format!("corrupt sync state: {e}"))),
        }
    }

    fn save<T: Transaction>(&self, tx: &mut T) -> Result<()> {
        save(self, tx)
    }

    fn parked(&self, aggregate: &str) -> Option<&Parked> {
        self.parked.iter().find(|p| p.aggregate == aggregate)
    }

    /// The body of the forget `outgoing`.
    pub fn forget_body(&self, outgoing: &Outgoing) -> Result<String> {
        let queries: Vec<WireQuery> = outgoing
            .queries
            .iter()
            .map(|(aggregate, from, to)| {
                Ok(WireQuery {
                    aggregate: Some(WirePattern(Pattern::parse(aggregate)?)),
                    sequence: Some(WireRange {
                        from: Some(*from),
                        to: Some(*to),
                    }),
                    ..WireQuery::default()
                })
            })
            .collect::<Result<_>>()?;
        let body = serde_json::json!({
            "log": self.log, "id": outgoing.id, "filter": { "queries": queries },
        });
        Ok(body.to_string())
    }
}

/// Writes the state in `tx`.
pub fn save<T: Transaction>(state: &State, tx: &mut T) -> Result<()> {
    let json = serde_json::to_string(state)
        .map_err(|e| Error::Storage(format!("cannot encode sync state: {e}")))?;
    tx.put_sync_state(&json)
}

/// The state, or `None` if this store never synced (read transaction).
pub async fn state<S: Storage>(storage: &S) -> Result<Option<State>> {
    State::load(&storage.read().await?).await
}

/// Starts or resumes syncing with the server log `log`: creates the state
/// on first contact; another log than the stored one is `LOG_MISMATCH`
/// (the server was reset or replaced: two logs are never mixed).
pub async fn begin<S: Storage>(storage: &S, log: &str) -> Result<State> {
    let mut tx = storage.write().await?;
    let mut state = State::load(&tx).await?.unwrap_or_default();
    match &state.log {
        Some(known) if known != log => return Err(mismatch(known, log)),
        Some(_) => return Ok(state),
        None => state.log = Some(log.to_owned()),
    }
    state.save(&mut tx)?;
    tx.commit().await?;
    Ok(state)
}

fn mismatch(known: &str, found: &str) -> Error {
    Error::Sync(format!(
        "LOG_MISMATCH: this store synced with server log {known:?}, the server now has log \
         {found:?} (its database was reset or replaced); sync stopped, nothing was mixed"
    ))
}

/// A pending event of [`pending`]: where it is stored.
#[derive(Debug, Clone)]
struct Location {
    key: u64,
    index: usize,
}

/// Pending events read for pushing, in local order.
#[derive(Debug, Default)]
pub struct Pending {
    pub events: Vec<WireEvent>,
    where_: HashMap<String, Location>,
    /// Local positions up to this one hold no pending event once all of
    /// `events` are synced.
    settles_to: u64,
    /// How many of `events` answers have synced so far.
    synced: usize,
}

impl Pending {
    /// The push bodies (at most the protocol's limits each), in order.
    pub fn bodies(&self, log: Option<&str>) -> Result<Vec<String>> {
        client::pushes(&self.events)
            .into_iter()
            .map(|range| {
                serde_json::to_string(&PushRequest {
                    log: log.map(str::to_owned),
                    events: self.events[range].to_vec(),
                })
                .map_err(|e| Error::Sync(format!("cannot encode push: {e}")))
            })
            .collect()
    }
}

/// Reads the pending events, oldest first, up to about `max` (whole
/// batches), skipping the aggregates of parked conflicts.
pub async fn pending<S: Storage>(storage: &S, max: usize) -> Result<Pending> {
    let tx = storage.read().await?;
    let state = State::load(&tx).await?.unwrap_or_default();
    let last = tx.last_position().await?;
    let mut out = Pending {
        settles_to: state.settled,
        ..Pending::default()
    };
    let mut blocked = false;
    let mut from = state.settled + 1;
    while from <= last && out.events.len() < max {
        let page = tx.scan(from, last, PAGE_BATCHES).await?;
        let Some(end) = page.last().map(|b| b.last_position) else {
            break;
        };
        for batch in &page {
            let text = tx.text(batch)?;
            let events = batch.decode_text(&text)?;
            let parked = state.parked(&batch.aggregate).is_some();
            for (i, e) in events.iter().enumerate() {
                if e.remote.is_some() {
                    continue;
                }
                if parked {
                    blocked = true;
                    continue;
                }
                out.where_.insert(
                    e.id.to_string(),
                    Location {
                        key: batch.last_position,
                        index: i,
                    },
                );
                out.events.push(wire(batch, i, e)?);
            }
            if !blocked {
                out.settles_to = batch.last_position;
            }
            if out.events.len() >= max {
                break;
            }
        }
        from = end + 1;
    }
    Ok(out)
}

/// With nothing pending up to where [`pending`] looked (events pulled
/// back, or none pushed), moves the settled mark there, so that later
/// looks start after it.
pub async fn advance<S: Storage>(storage: &S, pending: &Pending) -> Result<()> {
    if !pending.events.is_empty() {
        return Ok(());
    }
    let mut tx = storage.write().await?;
    let Some(mut state) = State::load(&tx).await? else {
        return Ok(());
    };
    if pending.settles_to <= state.settled {
        return Ok(());
    }
    state.settled = pending.settles_to;
    state.save(&mut tx)?;
    tx.commit().await
}

/// The wire form of the `i`-th event of `batch`.
fn wire(batch: &Batch, i: usize, e: &StoredEvent<'_>) -> Result<WireEvent> {
    let payload = match e.payload {
        Some(p) if !e.forgotten => p.to_owned(),
        _ => null(),
    };
    Ok(WireEvent {
        id: e.id.to_string(),
        aggregate: WireSubject(Subject::parse(&batch.aggregate)?),
        action: WireSubject(Subject::parse(&e.action)?),
        revision: e.revision,
        sequence: batch.first_sequence + i as u64,
        created_at: batch.created_at,
        payload,
        forgotten: e.forgotten,
        position: None,
    })
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!())
}

/// What one push answer did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Events now synced.
    pub synced: u64,
    /// Aggregates that moved on remotely (pull, then resolve).
    pub conflicts: Vec<String>,
    /// Events refused (FORBIDDEN, ...): the error to report.
    pub refused: Option<Error>,
}

/// Applies a push answer (its HTTP status and body) for the events of
/// `pending`: synced events get their `remote`; the rest stay pending.
/// With `last` (the answer of the round's last push, all synced), the
/// settled mark moves past them.
pub async fn settle<S: Storage>(
    storage: &S,
    pending: &mut Pending,
    status: u16,
    answer: &PushResponse,
    new_id: &mut impl FnMut() -> String,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut marks: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for (id, settled) in client::settle(status, answer) {
        match settled {
            Settled::Synced { position, .. } => {
                if let Some(at) = pending.where_.get(&id) {
                    marks.entry(at.key).or_default().push((at.index, position));
                    outcome.synced += 1;
                }
            }
            Settled::Conflict => {
                if let Some(e) = pending.events.iter().find(|e| e.id == id) {
                    let a = e.aggregate.0.as_str().to_owned();
                    if !outcome.conflicts.contains(&a) {
                        outcome.conflicts.push(a);
                    }
                }
            }
            Settled::Again => {}
            Settled::Refused(code) => {
                outcome
                    .refused
                    .get_or_insert_with(|| refused(status, code, answer));
            }
        }
    }
    if status >= 400 && outcome.refused.is_none() && status != 409 {
        outcome.refused = Some(refused(status, ErrorCode::Internal, answer));
    }
    let mut tx = storage.write().await?;
    let mut state = State::load(&tx).await?.unwrap_or_default();
    let keys: Vec<u64> = marks.keys().copied().collect();
    let batches = tx.get(&keys).await?;
    let mut changed = Vec::new();
    let mut erased = Vec::new();
    for batch in &batches {
        let text = tx.text(batch)?;
        let mut events = batch.decode_text(&text)?;
        for (index, position) in &marks[&batch.last_position] {
            let Some(e) = events.get_mut(*index) else {
                continue;
            };
            e.remote = Some(*position);
            // Forgotten here while its push was in flight: the server may
            // hold the payload; forget it there too.
            if e.forgotten {
                erased.push((
                    batch.aggregate.clone(),
                    batch.first_sequence + *index as u64,
                ));
            }
        }
        changed.push(rewritten(batch, &events)?);
    }
    tx.put(&changed)?;
    queue_forgets(&mut state, erased, new_id);
    pending.synced += outcome.synced as usize;
    let all = pending.synced >= pending.events.len();
    if all && pending.settles_to > state.settled {
        state.settled = pending.settles_to;
    }
    state.save(&mut tx)?;
    tx.commit().await?;
    Ok(outcome)
}

fn refused(status: u16, code: ErrorCode, answer: &PushResponse) -> Error {
    let message = answer
        .error
        .as_ref()
        .map_or_else(String::new, |e| e.message.clone());
    Error::Sync(format!(
        "push refused: HTTP {status} {}: {message}",
        code.as_str()
    ))
}

/// A batch with its events replaced.
fn rewritten(batch: &Batch, events: &[StoredEvent<'_>]) -> Result<Batch> {
    Ok(Batch {
        events: serde_json::to_string(events)
            .map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))?,
        aggregate: batch.aggregate.clone(),
        actions: batch.actions.clone(),
        ..*batch
    })
}

/// Adds forgets of these (aggregate, sequence) events to the outbox: one
/// query per run of sequences, 1,000 queries per forget.
pub fn queue_forgets(
    state: &mut State,
    mut erased: Vec<(String, u64)>,
    new_id: &mut impl FnMut() -> String,
) {
    erased.sort();
    let mut queries: Vec<(String, u64, u64)> = Vec::new();
    for (aggregate, sequence) in erased {
        match queries.last_mut() {
            Some((a, _, to)) if *a == aggregate && *to == sequence => *to += 1,
            _ => queries.push((aggregate, sequence, sequence + 1)),
        }
    }
    for chunk in queries.chunks(1000) {
        state.forgets.push(Outgoing {
            id: new_id(),
            queries: chunk.to_vec(),
        });
    }
}

/// Marks the forget `id` as answered.
pub async fn forget_sent<S: Storage>(storage: &S, id: &str) -> Result<()> {
    let mut tx = storage.write().await?;
    let Some(mut state) = State::load(&tx).await? else {
        return Ok(());
    };
    state.forgets.retain(|f| f.id != id);
    state.save(&mut tx)?;
    tx.commit().await
}

/// A conflict met while pulling: the remote events of `aggregate` from
/// `remote[0].sequence` on, against the device's pending ones.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub aggregate: String,
    pub pending: Vec<WireEvent>,
    pub remote: Vec<WireEvent>,
}

/// What a pull page did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Events added to the local log.
    pub added: u64,
    /// Events that became synced (their own, pulled back).
    pub synced: u64,
    /// The newly forgotten events, public JSON (for subscribers' `onForget`).
    pub erased: String,
    /// The page stopped at a conflict: resolve it, then pull again.
    pub conflict: Option<Conflict>,
    /// The stored cursor.
    pub cursor: u64,
}

/// A change to a stored event.
#[derive(Debug, Clone, Copy, Default)]
struct Change {
    remote: Option<u64>,
    erase: bool,
}

/// Applies a pull answer to the local log, in one transaction (see the
/// module's invariants). Stops at the first conflict.
///
/// Like a push (`engine::push`), it takes the log's end and the heads from
/// `cache` when it knows them all, without reading them: its first record
/// carries `start`, so if anything was appended since, the write fails and
/// is done again the checked way. A fresh device pulling a long log thus
/// reads each aggregate's head once, not once per page.
pub async fn apply_pull<S: Storage>(
    storage: &S,
    cache: &HeadCache,
    page: &PullResponse,
) -> Result<Applied> {
    match apply_once(storage, cache, page, true).await {
        Err(Error::Constraint(_)) => {
            cache.clear();
            apply_once(storage, cache, page, false).await
        }
        other => other,
    }
}

async fn apply_once<S: Storage>(
    storage: &S,
    cache: &HeadCache,
    page: &PullResponse,
    guess: bool,
) -> Result<Applied> {
    let mut tx = storage.write().await?;
    let mut state = State::load(&tx).await?.unwrap_or_default();
    if let Some(known) = &state.log {
        if *known != page.log {
            return Err(mismatch(known, &page.log));
        }
    }
    let mut aggregates: Vec<&str> = Vec::new();
    for item in &page.items {
        if let PullItem::Event(e) = item {
            let a = e.aggregate.0.as_str();
            if !aggregates.contains(&a) {
                aggregates.push(a);
            }
        }
    }
    let (last, known) = match cache.guess(&aggregates).filter(|_| guess) {
        Some(guessed) => guessed,
        None => {
            let unknown = cache.unknown(&aggregates);
            let (last, fetched) = futures::join!(tx.last_position(), tx.heads(&unknown));
            let (last, fetched) = (last?, fetched?);
            let fetched: HashMap<String, u64> =
                unknown.iter().map(|a| a.to_string()).zip(fetched).collect();
            match cache.heads(last, &aggregates, &fetched) {
                Some(heads) => (last, heads),
                None => {
                    let all = tx.heads(&aggregates).await?;
                    let heads = aggregates.iter().map(|a| a.to_string()).zip(all).collect();
                    (last, heads)
                }
            }
        }
    };
    let mut heads: HashMap<&str, u64> = aggregates
        .iter()
        .map(|a| (*a, known.get(*a).copied().unwrap_or(0)))
        .collect();
    let mut appended: Vec<&WireEvent> = Vec::new();
    let mut changes: BTreeMap<u64, (Batch, BTreeMap<usize, Change>)> = BTreeMap::new();
    let mut applied = Applied::default();
    let mut cursor = state.cursor;
    let mut notice = EventsJson::new();
    'items: for (k, item) in page.items.iter().enumerate() {
        match item {
            PullItem::Event(e) => {
                let a = e.aggregate.0.as_str();
                if let Some(p) = state.parked.iter_mut().find(|p| p.aggregate == a) {
                    if !p.remote.iter().any(|r| r.id == e.id) {
                        p.remote.push(e.clone());
                    }
                    cursor = e.position.unwrap_or(cursor);
                    continue;
                }
                let head = heads.get(a).copied().unwrap_or(0);
                if e.sequence == head + 1 {
                    appended.push(e);
                    heads.insert(a, e.sequence);
                } else if e.sequence > head + 1 {
                    return Err(Error::Sync(format!(
                        "pulled event {:?} of {a} has sequence {}, but this device holds {a} \
                         only up to {head}: the server skipped events",
                        e.id, e.sequence
                    )));
                } else {
                    let (batch, index) = locate(&tx, &changes, a, e.sequence).await?;
                    let text = tx.text(&batch)?;
                    let events = batch.decode_text(&text)?;
                    let local = &events[index];
                    if local.id != e.id {
                        if local.remote.is_some() {
                            return Err(Error::Sync(format!(
                                "pulled event {:?} is {a} #{}, which this device holds as \
                                 synced event {:?}: the server's log differs from this store's",
                                e.id, e.sequence, local.id
                            )));
                        }
                        let pending = pending_of(&tx, a, e.sequence).await?;
                        let remote = page.items[k..]
                            .iter()
                            .filter_map(|i| match i {
                                PullItem::Event(r) if r.aggregate.0.as_str() == a => {
                                    Some(r.clone())
                                }
                                _ => None,
                            })
                            .collect();
                        applied.conflict = Some(Conflict {
                            aggregate: a.to_owned(),
                            pending,
                            remote,
                        });
                        break 'items;
                    }
                    let change = Change {
                        remote: (local.remote != e.position).then_some(e.position).flatten(),
                        erase: e.forgotten && !local.forgotten,
                    };
                    if change.remote.is_some() || change.erase {
                        if change.erase {
                            let mut gone = local.clone();
                            gone.payload = None;
                            gone.forgotten = true;
                            gone.remote = e.position;
                            notice.push(&batch.event(index, &gone))?;
                        }
                        if change.remote.is_some() && local.remote.is_none() {
                            applied.synced += 1;
                        }
                        let key = batch.last_position;
                        drop(events);
                        let slot = changes
                            .entry(key)
                            .or_insert_with(|| (batch, BTreeMap::new()));
                        let c = slot.1.entry(index).or_default();
                        c.remote = change.remote.or(c.remote);
                        c.erase |= change.erase;
                    }
                }
                cursor = e.position.unwrap_or(cursor);
            }
            PullItem::Forget(f) => {
                for id in &f.events {
                    let Some((batch, index)) = find_id(&tx, &changes, id).await? else {
                        continue;
                    };
                    let text = tx.text(&batch)?;
                    let events = batch.decode_text(&text)?;
                    if events[index].forgotten {
                        continue;
                    }
                    let mut gone = events[index].clone();
                    gone.payload = None;
                    gone.forgotten = true;
                    notice.push(&batch.event(index, &gone))?;
                    let key = batch.last_position;
                    drop(events);
                    let slot = changes
                        .entry(key)
                        .or_insert_with(|| (batch, BTreeMap::new()));
                    slot.1.entry(index).or_default().erase = true;
                }
                cursor = f.position;
            }
        }
    }
    if applied.conflict.is_none() {
        cursor = cursor.max(page.cursor);
    }
    let mut puts = Vec::new();
    for (batch, edits) in changes.values() {
        if edits.values().any(|c| c.erase) {
            tx.forgot(&batch.aggregate);
        }
        let text = tx.text(batch)?;
        let mut events = batch.decode_text(&text)?;
        for (index, change) in edits {
            let e = &mut events[*index];
            if let Some(r) = change.remote {
                e.remote = Some(r);
            }
            if change.erase {
                e.payload = None;
                e.forgotten = true;
            }
        }
        puts.push(rewritten(batch, &events)?);
    }
    tx.put(&puts)?;
    let given: Vec<Given<'_>> = appended.iter().map(|e| given(e, e.position)).collect();
    let adds = push::pack(&given, last)?;
    tx.append(&adds)?;
    applied.added = given.len() as u64;
    applied.erased = notice.take();
    state.cursor = cursor;
    applied.cursor = cursor;
    let end = adds.last().map_or(last, |b| b.last_position);
    if state.settled >= last {
        // Nothing was pending, and pulled events are synced.
        state.settled = end;
    }
    state.save(&mut tx)?;
    tx.commit().await?;
    let heads: Vec<(String, u64)> = heads.iter().map(|(a, h)| (a.to_string(), *h)).collect();
    cache.record(last, end, heads);
    Ok(applied)
}

/// A wire event as an event to append, with `remote` set (or not).
fn given(e: &WireEvent, remote: Option<u64>) -> Given<'_> {
    Given {
        aggregate: e.aggregate.0.as_str(),
        sequence: e.sequence,
        created_at: e.created_at,
        stored: StoredEvent {
            id: e.id.as_str().into(),
            action: e.action.0.as_str().into(),
            revision: e.revision,
            payload: (!e.forgotten).then_some(&*e.payload),
            forgotten: e.forgotten,
            remote,
            sealed: None,
        },
    }
}

/// The batch holding `aggregate` #`sequence` (a changed copy if this
/// transaction changed it already) and the event's index in it.
async fn locate<T: Transaction>(
    tx: &T,
    changes: &BTreeMap<u64, (Batch, BTreeMap<usize, Change>)>,
    aggregate: &str,
    sequence: u64,
) -> Result<(Batch, usize)> {
    let found = tx.by_aggregate(aggregate, sequence).await?;
    let batch = found
        .into_iter()
        .filter(|b| b.first_sequence <= sequence && sequence <= b.last_sequence)
        .min_by_key(|b| b.last_position)
        .ok_or_else(|| Error::Storage(format!("no stored batch holds {aggregate} #{sequence}")))?;
    let batch = match changes.get(&batch.last_position) {
        Some((held, _)) => held.clone(),
        None => filled(tx, batch)?,
    };
    let index = (sequence - batch.first_sequence) as usize;
    Ok((batch, index))
}

/// The batch with its events text in it, so that it can be read again
/// (a backend may hand the text out only once; see `Transaction::text`).
fn filled<T: Transaction>(tx: &T, batch: Batch) -> Result<Batch> {
    let events = tx.text(&batch)?.into_owned();
    Ok(Batch { events, ..batch })
}

/// The batch holding the event `id` and its index, if this store holds it.
async fn find_id<T: Transaction>(
    tx: &T,
    changes: &BTreeMap<u64, (Batch, BTreeMap<usize, Change>)>,
    id: &str,
) -> Result<Option<(Batch, usize)>> {
    let mut candidates = match uuid_v7_millis(id) {
        Some(ms) => tx.by_created_at(ms).await?,
        None => Vec::new(),
    };
    if candidates.is_empty() && uuid_v7_millis(id).is_none() {
        // An id made elsewhere: look through the log, a page at a time.
        let last = tx.last_position().await?;
        let mut from = 1;
        while from <= last {
            let page = tx.scan(from, last, PAGE_BATCHES).await?;
            let Some(end) = page.last().map(|b| b.last_position) else {
                break;
            };
            candidates.extend(page);
            from = end + 1;
        }
    }
    for batch in candidates {
        if !tx.text_contains(&batch, id)? {
            continue;
        }
        let text = tx.text(&batch)?;
        let events = batch.decode_text(&text)?;
        if let Some(index) = events.iter().position(|e| e.id == id) {
            drop(events);
            let text = text.into_owned();
            let batch = match changes.get(&batch.last_position) {
                Some((held, _)) => held.clone(),
                None => Batch {
                    events: text,
                    ..batch
                },
            };
            return Ok(Some((batch, index)));
        }
    }
    Ok(None)
}

/// The pending events of `aggregate` from `sequence` on (read transaction).
pub async fn pending_events<S: Storage>(
    storage: &S,
    aggregate: &str,
    sequence: u64,
) -> Result<Vec<WireEvent>> {
    pending_of(&storage.read().await?, aggregate, sequence).await
}

/// The pending events of `aggregate` from `sequence` on, in sequence order.
async fn pending_of<T: Transaction>(
    tx: &T,
    aggregate: &str,
    sequence: u64,
) -> Result<Vec<WireEvent>> {
    let mut batches = tx.by_aggregate(aggregate, sequence).await?;
    batches.sort_by_key(|b| b.first_sequence);
    let mut out = Vec::new();
    for batch in &batches {
        let text = tx.text(batch)?;
        let events = batch.decode_text(&text)?;
        for (i, e) in events.iter().enumerate() {
            if batch.first_sequence + i as u64 >= sequence && e.remote.is_none() {
                out.push(wire(batch, i, e)?);
            }
        }
    }
    Ok(out)
}

/// What to do with a conflict's pending events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Re-sequence them after the remote events, keeping ids and payloads.
    Rebase,
    /// Drop them from the local log.
    Discard,
    /// Keep them pending and unsent; the remote events wait (no `onConflict`).
    Park,
}

/// What a resolution did, for subscribers.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The events taken out of their positions (public JSON, as they were).
    pub withdrawn: String,
    /// Events appended (remote, then rebased).
    pub added: u64,
}

/// Resolves a conflict on `aggregate` whose remote events are `remote`
/// (from the first one the device lacks), in one transaction: takes the
/// aggregate's pending events from their positions and appends the
/// remote events, then (rebase) the pending ones re-sequenced after them.
pub async fn resolve<S: Storage>(
    storage: &S,
    cache: &HeadCache,
    aggregate: &str,
    remote: &[WireEvent],
    decision: Decision,
) -> Result<Resolved> {
    let mut tx = storage.write().await?;
    let mut state = State::load(&tx).await?.unwrap_or_default();
    if decision == Decision::Park {
        if state.parked(aggregate).is_none() {
            state.parked.push(Parked {
                aggregate: aggregate.to_owned(),
                remote: remote.to_vec(),
            });
        }
        state.save(&mut tx)?;
        tx.commit().await?;
        return Ok(Resolved::default());
    }
    let Some(from) = remote.first().map(|e| e.sequence) else {
        return Ok(Resolved::default());
    };
    let last = tx.last_position().await?;
    let mut batches = tx.by_aggregate(aggregate, from).await?;
    batches.sort_by_key(|b| b.first_sequence);
    let mut withdrawn = EventsJson::new();
    let mut kept = Vec::new();
    let mut deleted = Vec::new();
    let mut pending: Vec<WireEvent> = Vec::new();
    for batch in &batches {
        let text = tx.text(batch)?;
        let events = batch.decode_text(&text)?;
        let cut = from.saturating_sub(batch.first_sequence) as usize;
        for (i, e) in events.iter().enumerate().skip(cut) {
            if e.remote.is_some() {
                return Err(Error::Sync(format!(
                    "cannot resolve the conflict on {aggregate}: its event #{} is synced",
                    batch.first_sequence + i as u64
                )));
            }
            withdrawn.push(&batch.event(i, e))?;
            pending.push(wire(batch, i, e)?);
        }
        deleted.push(batch.last_position);
        if cut > 0 {
            // The synced head of the batch stays where it is.
            let head = &events[..cut];
            kept.push(Batch {
                last_position: batch.first_position() + cut as u64 - 1,
                last_sequence: batch.first_sequence + cut as u64 - 1,
                ..rewritten(batch, head)?
            });
        }
    }
    let remote_head = remote.last().map_or(from - 1, |e| e.sequence);
    let rebased = match decision {
        Decision::Rebase => super::rules::rebase(&pending, remote_head),
        _ => Vec::new(),
    };
    let mut appended: Vec<Given<'_>> = remote.iter().map(|e| given(e, e.position)).collect();
    appended.extend(rebased.iter().map(|e| given(e, None)));
    tx.delete(&deleted)?;
    tx.add(&kept)?;
    tx.append(&push::pack(&appended, last)?)?;
    state.withdrawn += pending.len() as u64;
    state.parked.retain(|p| p.aggregate != aggregate);
    state.save(&mut tx)?;
    // Heads and the log's end change here without a push: what this page
    // knew is stale (other pages' guesses fail on the appended `start`).
    cache.clear();
    tx.commit().await?;
    Ok(Resolved {
        withdrawn: withdrawn.take(),
        added: appended.len() as u64,
    })
}

/// What [`counts`] reads, in one read transaction.
#[derive(Debug)]
pub struct Counts {
    /// Events not yet synced.
    pub pending: u64,
    /// Of those, the ones held by parked conflicts.
    pub conflicts: u64,
    /// The log's last position.
    pub last: u64,
    /// The sync state, if the store ever synced.
    pub state: Option<State>,
}

/// How many events are pending, and how many of them are held by parked
/// conflicts, with the log's end (one read transaction).
pub async fn counts<S: Storage>(storage: &S) -> Result<Counts> {
    let tx = storage.read().await?;
    let (state, last) = futures::join!(State::load(&tx), tx.last_position());
    let last = last?;
    let Some(state) = state? else {
        return Ok(Counts {
            pending: last,
            conflicts: 0,
            last,
            state: None,
        });
    };
    let (mut pending, mut conflicts) = (0, 0);
    let mut from = state.settled + 1;
    while from <= last {
        let page = tx.scan(from, last, PAGE_BATCHES).await?;
        let Some(end) = page.last().map(|b| b.last_position) else {
            break;
        };
        for batch in &page {
            let text = tx.text(batch)?;
            let n = batch
                .decode_text(&text)?
                .iter()
                .filter(|e| e.remote.is_none())
                .count() as u64;
            pending += n;
            if state.parked(&batch.aggregate).is_some() {
                conflicts += n;
            }
        }
        from = end + 1;
    }
    Ok(Counts {
        pending,
        conflicts,
        last,
        state: Some(state),
    })
}
