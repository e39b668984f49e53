//! Unfolded records: how a push is written (see `docs/storage.md`,
//! "Unfolded records and the fold").
//!
//! A push is written as one record (split past [`MAX_BATCH_BYTES`]) that
//! holds the batches of all its aggregates, so that its cost follows the
//! number of pushes, not of aggregates. Such a record is *unfolded*; a
//! background step *folds* it (one transaction: delete it, add its batches
//! as records of their own). Reads see the batches of unfolded records as
//! if they were folded: a backend keeps a [`Pending`] view of them per
//! transaction and merges it into every answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::batch::{Batch, MAX_BATCH_BYTES};
use crate::error::{Error, Result};
use crate::subject::KeyRange;

/// Batches folded per fold transaction, about: a fold holds back pushes
/// and reads of other tabs for that long (~0.1 ms per batch).
pub const FOLD_BUDGET: usize = 128;

/// One unfolded record: consecutive batches of one push.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfolded {
    /// The record's key: the last position of its last batch.
    pub key: u64,
    /// The push's first position, on the push's first record only (the
    /// unique `start` index).
    pub start: Option<u64>,
    /// The push's commit time.
    pub created_at: u64,
    /// Its batches, in position order; never empty.
    pub batches: Vec<Batch>,
}

/// A batch inside an unfolded record's `batches` text.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inner<'a> {
    last_position: u64,
    #[serde(borrow)]
    aggregate: std::borrow::Cow<'a, str>,
    first_sequence: u64,
    last_sequence: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    actions: Vec<String>,
    #[serde(borrow)]
    events: &'a RawValue,
}

impl Unfolded {
    /// The records of a push's batches (in position order): as few as fit
    /// [`MAX_BATCH_BYTES`] of events each, the first carrying `start`.
    pub fn chunk(batches: &[Batch]) -> Vec<Unfolded> {
        let mut records: Vec<Unfolded> = Vec::new();
        let mut size = 0;
        for batch in batches {
            let fits = size + batch.events.len() <= MAX_BATCH_BYTES;
            match records.last_mut() {
                // A record has one `createdAt`: batches written with
                // their own (pulled pages, imports) start a new record
                // where it changes.
                Some(open) if fits && open.created_at == batch.created_at => {
                    open.key = batch.last_position;
                    open.batches.push(batch.clone());
                    size += batch.events.len();
                }
                _ => {
                    size = batch.events.len();
                    records.push(Unfolded {
                        key: batch.last_position,
                        start: batch.starts_push.then(|| batch.first_position()),
                        created_at: batch.created_at,
                        batches: vec![batch.clone()],
                    });
                }
            }
        }
        records
    }

    /// The `batches` text of the record: a JSON array of its batches, each
    /// with its events as a JSON array (not a string).
    pub fn text(&self) -> Result<String> {
        let mut inner = Vec::with_capacity(self.batches.len());
        for b in &self.batches {
            let events: &RawValue = serde_json::from_str(&b.events)
                .map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))?;
            inner.push(Inner {
                last_position: b.last_position,
                aggregate: b.aggregate.as_str().into(),
                first_sequence: b.first_sequence,
                last_sequence: b.last_sequence,
                actions: b.actions.clone(),
                events,
            });
        }
        serde_json::to_string(&inner).map_err(|e| Error::Storage(format!("cannot encode: {e}")))
    }

    /// Reads a record back from its fields; checks that its batches are
    /// consecutive and end at its key, so that a damaged record is a
    /// `STORAGE` error.
    pub fn decode(key: u64, start: Option<u64>, created_at: u64, text: &str) -> Result<Self> {
        let corrupt = |why: String| Error::Storage(format!("corrupt unfolded record {key}: {why}"));
        let inner: Vec<Inner<'_>> =
            serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let mut batches = Vec::with_capacity(inner.len());
        for (i, b) in inner.into_iter().enumerate() {
            let batch = Batch {
                last_position: b.last_position,
                aggregate: b.aggregate.into_owned(),
                first_sequence: b.first_sequence,
                last_sequence: b.last_sequence,
                created_at,
                actions: b.actions,
                events: b.events.get().to_owned(),
                starts_push: i == 0 && start.is_some(),
            }
            .check()?;
            if let Some(prev) = batches.last().map(|p: &Batch| p.last_position) {
                if batch.first_position() != prev + 1 {
                    return Err(corrupt("batches are not consecutive".into()));
                }
            }
            batches.push(batch);
        }
        let first = batches.first().map(Batch::first_position);
        if batches.last().map(|b| b.last_position) != Some(key)
            || start.is_some_and(|s| Some(s) != first)
        {
            return Err(corrupt("batches do not end at its key".into()));
        }
        Ok(Unfolded {
            key,
            start,
            created_at,
            batches,
        })
    }
}

/// The unfolded records one transaction sees, indexed like the store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pending {
    records: BTreeMap<u64, Arc<Unfolded>>,
    /// Last position of each batch → (record key, index in the record).
    batches: BTreeMap<u64, (u64, usize)>,
    /// Each aggregate's head and batch keys (in position order), by
    /// aggregate: exact and prefix lookups without a pass over every batch.
    aggregates: BTreeMap<String, (u64, Vec<u64>)>,
    /// Keys of the batches listing foreign actions (usually none).
    with_actions: Vec<u64>,
}

impl Pending {
    pub fn new(records: impl IntoIterator<Item = Arc<Unfolded>>) -> Self {
        let mut p = Pending::default();
        for r in records {
            p.add(r);
        }
        p
    }

    /// This view moved on to the records of `keys` (in key order): those no
    /// longer listed (folded since) are dropped, new ones taken from
    /// `record`. Much cheaper than [`Pending::new`] when few records changed,
    /// as between the pages of a long read while the fold runs.
    pub fn updated(&self, keys: &[u64], record: impl Fn(u64) -> Option<Arc<Unfolded>>) -> Self {
        let mut p = self.clone();
        let listed: std::collections::BTreeSet<u64> = keys.iter().copied().collect();
        let gone: Vec<u64> = p.keys().filter(|k| !listed.contains(k)).collect();
        for key in gone {
            p.remove(key);
        }
        for &key in keys {
            if !p.records.contains_key(&key) {
                if let Some(r) = record(key) {
                    p.add(r);
                }
            }
        }
        p
    }

    fn add(&mut self, r: Arc<Unfolded>) {
        for (i, b) in r.batches.iter().enumerate() {
            self.batches.insert(b.last_position, (r.key, i));
            match self.aggregates.get_mut(b.aggregate.as_str()) {
                Some((head, keys)) => {
                    *head = (*head).max(b.last_sequence);
                    // Records usually come in key order: then this is a push.
                    let at = keys.partition_point(|k| *k < b.last_position);
                    keys.insert(at, b.last_position);
                }
                None => {
                    self.aggregates.insert(
                        b.aggregate.clone(),
                        (b.last_sequence, vec![b.last_position]),
                    );
                }
            }
            if !b.actions.is_empty() {
                let at = self.with_actions.partition_point(|k| *k < b.last_position);
                self.with_actions.insert(at, b.last_position);
            }
        }
        self.records.insert(r.key, r);
    }

    fn remove(&mut self, key: u64) {
        let Some(r) = self.records.remove(&key) else {
            return;
        };
        let gone = |k: &u64| {
            r.batches
                .binary_search_by_key(k, |b| b.last_position)
                .is_ok()
        };
        for b in &r.batches {
            self.batches.remove(&b.last_position);
        }
        self.with_actions.retain(|k| !gone(k));
        for b in &r.batches {
            let Some((head, keys)) = self.aggregates.get_mut(b.aggregate.as_str()) else {
                continue;
            };
            keys.retain(|k| !gone(k));
            // An aggregate's sequences grow with its positions: its head is
            // its last remaining batch's.
            match keys.last().and_then(|k| self.batches.get(k)) {
                Some(&(record, i)) => *head = self.records[&record].batches[i].last_sequence,
                None => {
                    self.aggregates.remove(b.aggregate.as_str());
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The unfolded records, in key order.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Unfolded>> {
        self.records.values()
    }

    /// Whether `key` is an unfolded record's key.
    pub fn is_record(&self, key: u64) -> bool {
        self.records.contains_key(&key)
    }

    /// The aggregate's last sequence in the unfolded records (0: none).
    pub fn head(&self, aggregate: &str) -> u64 {
        self.aggregates.get(aggregate).map_or(0, |a| a.0)
    }

    /// The keys of the unfolded records, in order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.records.keys().copied()
    }

    /// The batches of `aggregate` whose last sequence is at least `from_sequence`.
    pub fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Vec<Batch> {
        let Some((_, keys)) = self.aggregates.get(aggregate) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| self.batches.get(k).and_then(|at| self.batch(at)))
            .filter(|b| b.last_sequence >= from_sequence)
            .cloned()
            .collect()
    }

    /// The keys of the batches whose aggregate lies in `range`.
    pub fn keys_by_aggregate(&self, range: &KeyRange) -> Vec<u64> {
        let (lo, _) = range.bounds();
        self.aggregates
            .range(lo..)
            .take_while(|(a, _)| match range {
                KeyRange::Exact(e) => a.as_str() == e.as_str(),
                KeyRange::Prefix(p) => a.starts_with(p.as_str()),
            })
            .flat_map(|(_, (_, keys))| keys.iter().copied())
            .collect()
    }

    /// The keys of the batches listing an action in `range`.
    pub fn keys_by_action(&self, range: &KeyRange) -> Vec<u64> {
        self.with_actions
            .iter()
            .copied()
            .filter(|k| {
                self.batches
                    .get(k)
                    .and_then(|at| self.batch(at))
                    .is_some_and(|b| b.actions.iter().any(|a| range.contains(a)))
            })
            .collect()
    }

    fn batch(&self, at: &(u64, usize)) -> Option<&Batch> {
        self.records.get(&at.0).and_then(|r| r.batches.get(at.1))
    }

    /// The batch ending at `key`, if an unfolded record holds it.
    pub fn get(&self, key: u64) -> Option<Batch> {
        self.batches
            .get(&key)
            .and_then(|at| self.batch(at))
            .cloned()
    }

    /// The key of the unfolded record holding the batch ending at `key`.
    pub fn owner(&self, key: u64) -> Option<u64> {
        self.batches.get(&key).map(|at| at.0)
    }

    /// The batches with a last position in `from..=to`, in position order.
    pub fn range(&self, from: u64, to: u64) -> impl DoubleEndedIterator<Item = &Batch> {
        // An empty range when `from > to` (BTreeMap::range panics on those).
        let r = from..=to.max(from);
        let empty = from > to;
        self.batches
            .range(r)
            .filter(move |_| !empty)
            .filter_map(|(_, at)| self.batch(at))
    }

    /// The batches matching `keep`, in position order.
    pub fn batches_where(&self, keep: impl Fn(&Batch) -> bool) -> Vec<Batch> {
        self.range(0, u64::MAX)
            .filter(|b| keep(b))
            .cloned()
            .collect()
    }

    /// The keys of the batches matching `keep`.
    pub fn keys_where(&self, keep: impl Fn(&Batch) -> bool) -> Vec<u64> {
        self.range(0, u64::MAX)
            .filter(|b| keep(b))
            .map(|b| b.last_position)
            .collect()
    }

    /// Where a scan of `from..=to` (backwards when `reverse`) needs the
    /// store: the keys to read there (`None`: none, the batches near `from`
    /// are unfolded), and how far the merged page is complete when the
    /// store returns fewer records than asked (the far end of the nearest
    /// unfolded record in that direction, or the range's end). Reading only
    /// up to the nearest unfolded record keeps scans from reading unfolded
    /// records, whose batches are known here, again and again.
    pub fn store_range(&self, from: u64, to: u64, reverse: bool) -> (Option<(u64, u64)>, u64) {
        let span = |r: &Unfolded| {
            (
                r.batches.first().map_or(r.key, Batch::first_position),
                r.key,
            )
        };
        if !reverse {
            // The first record ending at or after `from`.
            match self.records.range(from..).next().map(|(_, r)| span(r)) {
                Some((first, last)) if first <= to => {
                    let store = (first > from).then(|| (from, first - 1));
                    (store, last.min(to))
                }
                _ => (Some((from, to)), to),
            }
        } else {
            // The last record starting at or before `to`.
            let covering = self.records.range(to..).next().map(|(_, r)| span(r));
            let nearest = match covering {
                Some((first, last)) if first <= to => Some((first, last)),
                _ => self.records.range(..to).next_back().map(|(_, r)| span(r)),
            };
            match nearest {
                Some((first, last)) if last >= from => {
                    let store = (last < to).then(|| ((last + 1).max(from), to));
                    (store, first.max(from))
                }
                _ => (Some((from, to)), from),
            }
        }
    }

    /// Merges a page the store returned for a scan of `from..=to` (its
    /// batches, unfolded records left out) with the unfolded batches.
    /// `reached`: the key of the store's last record in the page when it
    /// returned a full `limit` of records (the page is complete only up to
    /// there), `None` when it returned fewer.
    pub fn merge(
        &self,
        stored: Vec<Batch>,
        reached: Option<u64>,
        (from, to): (u64, u64),
        limit: usize,
        reverse: bool,
    ) -> Vec<Batch> {
        if self.is_empty() {
            return stored;
        }
        let (lo, hi) = match (reached, reverse) {
            (Some(k), false) => (from, k.min(to)),
            (Some(k), true) => (k.max(from), to),
            (None, _) => (from, to),
        };
        let mut all: BTreeMap<u64, Batch> =
            stored.into_iter().map(|b| (b.last_position, b)).collect();
        for b in self.range(lo, hi) {
            all.insert(b.last_position, b.clone());
        }
        if reverse {
            all.into_values().rev().take(limit).collect()
        } else {
            all.into_values().take(limit).collect()
        }
    }
}

/// What a backend's store returns for a scan of some keys: the batches of
/// the records read (unfolded records left out), how many records it read
/// and the key of the last one.
pub type StorePage = (Vec<Batch>, usize, Option<u64>);

/// A scan of `from..=to` (at most `limit` batches, the last ones when
/// `reverse`) over the store and the unfolded records of `pending`: the
/// store is read (`store(from, to, limit)`, which must read records in the
/// scan's direction) only between unfolded records, each unfolded record's
/// batches come from `pending`, and the scan goes on past them until
/// `limit` batches or the end of the range (callers take a short page for
/// the end).
pub async fn scan<F, Fut>(
    pending: &Pending,
    (mut from, mut to): (u64, u64),
    limit: usize,
    reverse: bool,
    mut store: F,
) -> Result<Vec<Batch>>
where
    F: FnMut(u64, u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<StorePage>>,
{
    if from > to || limit == 0 {
        return Ok(Vec::new());
    }
    if pending.is_empty() {
        return Ok(store(from, to, limit).await?.0);
    }
    let mut out = Vec::new();
    loop {
        let (range, bound) = pending.store_range(from, to, reverse);
        let want = limit - out.len();
        let (stored, reached) = match range {
            Some((a, b)) => {
                let (stored, read, last) = store(a, b, want).await?;
                (stored, last.filter(|_| read >= want))
            }
            None => (Vec::new(), None),
        };
        let complete = reached.unwrap_or(bound);
        out.extend(pending.merge(stored, Some(complete), (from, to), want, reverse));
        let end = if reverse {
            complete <= from
        } else {
            complete >= to
        };
        if out.len() >= limit || reached.is_some() || end {
            return Ok(out);
        }
        if reverse {
            to = complete - 1;
        } else {
            from = complete + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(last: u64, aggregate: &str, seqs: (u64, u64), starts: bool) -> Batch {
        let n = seqs.1 - seqs.0 + 1;
        let events: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"{aggregate}{i}","action":"{aggregate}.x","revision":1,"payload":{{"s":"a\"b"}}}}"#))
            .collect();
        Batch {
            last_position: last,
            aggregate: aggregate.into(),
            first_sequence: seqs.0,
            last_sequence: seqs.1,
            created_at: 7,
            actions: if starts {
                vec!["other.x".into()]
            } else {
                vec![]
            },
            events: format!("[{}]", events.join(",")),
            starts_push: starts,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        /// A view moved on to other records (some folded, some pushed) is
        /// the view built afresh from those records.
        #[test]
        fn an_updated_view_is_the_view_of_its_records(
            // Record i: batches over aggregates from a small set, so that
            // aggregates span records; `keep`/`take`: which records each
            // view lists.
            shapes in proptest::collection::vec(proptest::collection::vec(0..4u8, 1..4), 1..12),
            before in proptest::collection::vec(proptest::bool::ANY, 12),
            after in proptest::collection::vec(proptest::bool::ANY, 12),
        ) {
            let mut position = 0;
            let mut sequences = [0u64; 4];
            let records: Vec<Arc<Unfolded>> = shapes
                .iter()
                .map(|aggregates| {
                    let batches: Vec<Batch> = aggregates
                        .iter()
                        .map(|&a| {
                            position += 1;
                            sequences[a as usize] += 1;
                            let s = sequences[a as usize];
                            batch(position, &format!("g{a}"), (s, s), a == 3)
                        })
                        .collect();
                    Arc::new(Unfolded { key: position, start: None, created_at: 7, batches })
                })
                .collect();
            let view = |listed: &[bool]| -> Vec<Arc<Unfolded>> {
                records.iter().zip(listed).filter(|(_, l)| **l).map(|(r, _)| r.clone()).collect()
            };
            let old = Pending::new(view(&before));
            let wanted = view(&after);
            let keys: Vec<u64> = wanted.iter().map(|r| r.key).collect();
            let updated = old.updated(&keys, |k| records.iter().find(|r| r.key == k).cloned());
            proptest::prop_assert_eq!(updated, Pending::new(wanted));
        }
    }

    #[test]
    fn records_round_trip_and_split() {
        let batches = vec![batch(2, "a", (1, 2), true), batch(3, "b", (1, 1), false)];
        let records = Unfolded::chunk(&batches);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.key, r.start), (3, Some(1)));
        let back = Unfolded::decode(r.key, r.start, r.created_at, &r.text().unwrap()).unwrap();
        assert_eq!(&back, r);
        assert_eq!(back.batches, batches);
        // A record whose batches do not end at its key is corrupt.
        let err = Unfolded::decode(4, None, 7, &r.text().unwrap()).unwrap_err();
        assert_eq!(err.code(), "STORAGE");
        assert_eq!(
            Unfolded::decode(3, None, 7, "[").unwrap_err().code(),
            "STORAGE"
        );
        // Big pushes take several records; only the first carries `start`.
        let mut big = Vec::new();
        for i in 0..40u64 {
            let mut b = batch(i * 100 + 100, &format!("a{i}"), (1, 100), i == 0);
            b.events = format!(
                "[{}]",
                vec![r#"{"id":"x","action":"a.x","revision":1,"payload":"0123456789"}"#; 100]
                    .join(",")
            );
            big.push(b);
        }
        let records = Unfolded::chunk(&big);
        assert!(records.len() > 1);
        assert_eq!(records[0].start, Some(1));
        assert!(records[1..].iter().all(|r| r.start.is_none()));
        assert_eq!(
            records.iter().map(|r| r.batches.len()).sum::<usize>(),
            big.len()
        );
    }

    #[test]
    fn scans_read_the_store_only_outside_unfolded_records() {
        // Unfolded records over positions 4..=6 and 19..=20.
        let mut records =
            Unfolded::chunk(&[batch(5, "a", (3, 4), true), batch(6, "b", (1, 1), false)]);
        records.extend(Unfolded::chunk(&[batch(20, "c", (1, 2), true)]));
        let p = Pending::new(records.into_iter().map(Arc::new));
        // Forwards: the store up to the next unfolded record, complete to its end.
        assert_eq!(p.store_range(1, 30, false), (Some((1, 3)), 6));
        assert_eq!(p.store_range(4, 30, false), (None, 6));
        assert_eq!(p.store_range(5, 5, false), (None, 5));
        assert_eq!(p.store_range(7, 30, false), (Some((7, 18)), 20));
        assert_eq!(p.store_range(21, 30, false), (Some((21, 30)), 30));
        assert_eq!(p.store_range(1, 3, false), (Some((1, 3)), 3));
        // Backwards: the same from the other end.
        assert_eq!(p.store_range(1, 30, true), (Some((21, 30)), 19));
        assert_eq!(p.store_range(1, 19, true), (None, 19));
        assert_eq!(p.store_range(1, 18, true), (Some((7, 18)), 4));
        assert_eq!(p.store_range(1, 3, true), (Some((1, 3)), 1));
        assert_eq!(p.store_range(5, 5, true), (None, 5));
    }

    #[test]
    fn pending_merges_into_pages() {
        let r = Unfolded::chunk(&[batch(5, "a", (3, 4), true), batch(6, "b", (1, 1), false)]);
        let p = Pending::new(r.into_iter().map(Arc::new));
        assert_eq!((p.head("a"), p.head("b"), p.head("c")), (4, 1, 0));
        assert_eq!(p.owner(5), Some(6));
        assert!(p.is_record(6) && !p.is_record(5));
        let stored = vec![batch(2, "a", (1, 2), true), batch(9, "c", (1, 3), true)];
        let keys = |v: Vec<Batch>| v.iter().map(|b| b.last_position).collect::<Vec<_>>();
        assert_eq!(
            keys(p.merge(stored.clone(), None, (1, 9), 10, false)),
            [2, 5, 6, 9]
        );
        assert_eq!(
            keys(p.merge(stored.clone(), None, (1, 9), 2, false)),
            [2, 5]
        );
        // A full page of the store is complete only up to its last key.
        assert_eq!(
            keys(p.merge(vec![stored[0].clone()], Some(2), (1, 9), 1, false)),
            [2]
        );
        assert_eq!(
            keys(p.merge(vec![stored[1].clone()], Some(9), (1, 9), 1, true)),
            [9]
        );
        assert_eq!(keys(p.merge(vec![], None, (1, 9), 5, true)), [6, 5]);
    }
}
