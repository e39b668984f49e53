//! An in-memory [`Storage`] for native tests: same semantics as IndexedDB
//! (serialized writers, all-or-nothing commit), no persistence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::lock::{Mutex, OwnedMutexGuard};

use super::{Storage, Transaction};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::log::{Pending, StorePage, Unfolded};
use crate::subject::KeyRange;

/// The in-memory backend. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    data: Arc<Mutex<Data>>,
    /// Batches handed out by reads, as IndexedDB would have read them.
    reads: Arc<AtomicUsize>,
}

/// The stored records: batches and unfolded records share one key space.
#[derive(Debug, Clone, Default)]
struct Data {
    batches: BTreeMap<u64, Batch>,
    unfolded: BTreeMap<u64, Arc<Unfolded>>,
    /// The sync state.
    sync: Option<String>,
}

impl Data {
    /// Every batch, unfolded ones included: what reads see.
    fn view(&self) -> BTreeMap<u64, Batch> {
        let mut all = self.batches.clone();
        for r in self.unfolded.values() {
            for b in &r.batches {
                all.insert(b.last_position, b.clone());
            }
        }
        all
    }

    fn taken(&self, key: u64) -> bool {
        self.batches.contains_key(&key) || self.unfolded.contains_key(&key)
    }

    /// The unique `start` index: one push per first position.
    fn starts(&self, start: u64) -> bool {
        self.batches
            .values()
            .any(|b| b.starts_push && b.first_position() == start)
            || self.unfolded.values().any(|r| r.start == Some(start))
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many batches reads have returned so far: what a query cost.
    pub fn batches_read(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// Every stored batch, those of unfolded records included, for tests
    /// that inspect the raw records.
    pub async fn records(&self) -> Vec<Batch> {
        self.data.lock().await.view().into_values().collect()
    }

    /// The unfolded records, for tests of the fold.
    pub async fn unfolded(&self) -> Vec<Unfolded> {
        let data = self.data.lock().await;
        data.unfolded.values().map(|r| (**r).clone()).collect()
    }
}

/// A write of a transaction, applied at commit.
enum Op {
    Add(Batch),
    Put(Batch),
    Append(Unfolded),
    Delete(u64),
}

/// A transaction on [`MemoryStorage`]: holds the lock; writes are applied at commit.
pub struct MemoryTx {
    data: OwnedMutexGuard<Data>,
    /// What reads see (the batches, unfolded ones included).
    view: BTreeMap<u64, Batch>,
    pending: Pending,
    /// Unfolded records folded by this transaction.
    folded: HashSet<u64>,
    ops: Vec<Op>,
    sync_written: Option<String>,
    reads: Arc<AtomicUsize>,
}

impl MemoryTx {
    fn counted(&self, batches: Vec<Batch>) -> Vec<Batch> {
        self.reads.fetch_add(batches.len(), Ordering::Relaxed);
        batches
    }

    /// The stored records with keys in `from..=to`, as IndexedDB reads them
    /// (at most `limit`, backwards when `reverse`): their batches, unfolded
    /// records left out, how many records were read and the last key.
    fn store_page(&self, from: u64, to: u64, limit: usize, reverse: bool) -> StorePage {
        let mut keys: Vec<u64> = self
            .data
            .batches
            .range(from..=to)
            .map(|(k, _)| *k)
            .chain(self.data.unfolded.range(from..=to).map(|(k, _)| *k))
            .collect();
        keys.sort_unstable();
        if reverse {
            keys.reverse();
        }
        keys.truncate(limit);
        let batches = keys
            .iter()
            .filter_map(|k| self.data.batches.get(k).cloned())
            .collect();
        (batches, keys.len(), keys.last().copied())
    }

    /// Folds the unfolded record `key`, replacing its batches by those of
    /// `replaced` with the same keys.
    fn fold_record(&mut self, key: u64, replaced: &HashMap<u64, &Batch>) -> usize {
        let Some(record) = self.data.unfolded.get(&key).cloned() else {
            return 0;
        };
        self.folded.insert(key);
        self.ops.push(Op::Delete(key));
        for b in &record.batches {
            let b = replaced.get(&b.last_position).map_or(b, |r| *r);
            self.ops.push(Op::Add(b.clone()));
        }
        record.batches.len()
    }
}

impl Storage for MemoryStorage {
    type Tx = MemoryTx;

    async fn read(&self) -> Result<MemoryTx> {
        self.write().await
    }

    async fn write(&self) -> Result<MemoryTx> {
        let data = self.data.clone().lock_owned().await;
        Ok(MemoryTx {
            view: data.view(),
            pending: Pending::new(data.unfolded.values().cloned()),
            data,
            folded: HashSet::new(),
            ops: Vec::new(),
            sync_written: None,
            reads: self.reads.clone(),
        })
    }
}

impl Transaction for MemoryTx {
    async fn last_position(&self) -> Result<u64> {
        Ok(self.view.keys().next_back().copied().unwrap_or(0))
    }

    async fn heads(&self, aggregates: &[&str]) -> Result<Vec<u64>> {
        Ok(aggregates
            .iter()
            .map(|a| {
                self.view
                    .values()
                    .filter(|b| b.aggregate == *a)
                    .map(|b| b.last_sequence)
                    .max()
                    .unwrap_or(0)
            })
            .collect())
    }

    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        let page = crate::log::scan(&self.pending, (from, to), limit, false, |a, b, n| {
            std::future::ready(Ok(self.store_page(a, b, n, false)))
        });
        Ok(self.counted(page.await?))
    }

    async fn scan_back(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        let page = crate::log::scan(&self.pending, (from, to), limit, true, |a, b, n| {
            std::future::ready(Ok(self.store_page(a, b, n, true)))
        });
        Ok(self.counted(page.await?))
    }

    async fn by_created_at(&self, created_at: u64) -> Result<Vec<Batch>> {
        Ok(self.counted(
            self.view
                .values()
                .filter(|b| b.created_at == created_at)
                .cloned()
                .collect(),
        ))
    }

    async fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Result<Vec<Batch>> {
        Ok(self.counted(
            self.view
                .values()
                .filter(|b| b.aggregate == aggregate && b.last_sequence >= from_sequence)
                .cloned()
                .collect(),
        ))
    }

    async fn keys_by_aggregate(&self, range: &KeyRange) -> Result<Vec<u64>> {
        Ok(self
            .view
            .values()
            .filter(|b| range.contains(&b.aggregate))
            .map(|b| b.last_position)
            .collect())
    }

    async fn keys_by_action(&self, range: &KeyRange) -> Result<Vec<u64>> {
        Ok(self
            .view
            .values()
            .filter(|b| b.actions.iter().any(|a| range.contains(a)))
            .map(|b| b.last_position)
            .collect())
    }

    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>> {
        let batches = keys
            .iter()
            .map(|k| {
                self.view
                    .get(k)
                    .cloned()
                    .ok_or_else(|| Error::Storage(format!("no batch with key {k}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.counted(batches))
    }

    async fn sync_state(&self) -> Result<Option<String>> {
        Ok(self.data.sync.clone())
    }

    fn put_sync_state(&mut self, json: &str) -> Result<()> {
        self.sync_written = Some(json.to_owned());
        Ok(())
    }

    fn delete(&mut self, keys: &[u64]) -> Result<()> {
        for &key in keys {
            // A batch of an unfolded record: the record is folded first.
            match self.pending.owner(key) {
                Some(record) if !self.folded.contains(&record) => {
                    self.fold_record(record, &HashMap::new());
                }
                _ => {}
            }
            self.ops.push(Op::Delete(key));
        }
        Ok(())
    }

    fn add(&mut self, batches: &[Batch]) -> Result<()> {
        self.ops.extend(batches.iter().cloned().map(Op::Add));
        Ok(())
    }

    fn put(&mut self, batches: &[Batch]) -> Result<()> {
        let replaced: HashMap<u64, &Batch> = batches.iter().map(|b| (b.last_position, b)).collect();
        for b in batches {
            match self.pending.owner(b.last_position) {
                Some(record) if !self.folded.contains(&record) => {
                    self.fold_record(record, &replaced);
                }
                _ => self.ops.push(Op::Put(b.clone())),
            }
        }
        Ok(())
    }

    fn append(&mut self, batches: &[Batch]) -> Result<()> {
        self.ops
            .extend(Unfolded::chunk(batches).into_iter().map(Op::Append));
        Ok(())
    }

    async fn fold(&mut self, budget: usize) -> Result<usize> {
        let keys: Vec<u64> = self.data.unfolded.keys().copied().collect();
        let (mut written, mut folded) = (0, 0);
        for key in keys {
            if folded > 0 && written >= budget {
                break;
            }
            written += self.fold_record(key, &HashMap::new());
            folded += 1;
        }
        Ok(folded)
    }

    async fn commit(mut self) -> Result<()> {
        let mut next = (*self.data).clone();
        for op in self.ops.drain(..) {
            match op {
                Op::Add(batch) => {
                    if next.taken(batch.last_position) {
                        return Err(Error::Constraint(format!(
                            "ConstraintError: key {} already exists",
                            batch.last_position
                        )));
                    }
                    let start = batch.first_position();
                    if batch.starts_push && next.starts(start) {
                        return Err(Error::Constraint(format!(
                            "ConstraintError: a push already starts at position {start}"
                        )));
                    }
                    let clash = next.batches.values().any(|b| {
                        b.aggregate == batch.aggregate && b.last_sequence == batch.last_sequence
                    });
                    if clash {
                        return Err(Error::Constraint(format!(
                            "ConstraintError: aggregate {} already has sequence {}",
                            batch.aggregate, batch.last_sequence
                        )));
                    }
                    next.batches.insert(batch.last_position, batch);
                }
                Op::Put(batch) => {
                    next.batches.insert(batch.last_position, batch);
                }
                Op::Append(record) => {
                    if next.taken(record.key) {
                        return Err(Error::Constraint(format!(
                            "ConstraintError: key {} already exists",
                            record.key
                        )));
                    }
                    if let Some(start) = record.start.filter(|s| next.starts(*s)) {
                        return Err(Error::Constraint(format!(
                            "ConstraintError: a push already starts at position {start}"
                        )));
                    }
                    // As IndexedDB stores it: one `createdAt` per record.
                    let mut record = record;
                    for b in &mut record.batches {
                        b.created_at = record.created_at;
                    }
                    next.unfolded.insert(record.key, Arc::new(record));
                }
                Op::Delete(key) => {
                    next.unfolded.remove(&key);
                    next.batches.remove(&key);
                }
            }
        }
        if let Some(state) = self.sync_written.take() {
            next.sync = Some(state);
        }
        *self.data = next;
        Ok(())
    }
}
