//! An in-memory [`Storage`] for native tests: same semantics as IndexedDB
//! (serialized writers, all-or-nothing commit), no persistence.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::lock::{Mutex, OwnedMutexGuard};

use super::{Storage, Transaction};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::subject::KeyRange;

/// The in-memory backend. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    batches: Arc<Mutex<BTreeMap<u64, Batch>>>,
    /// The sync state (changed only under the `batches` lock).
    sync: Arc<std::sync::Mutex<Option<String>>>,
    /// Batches handed out by reads, as IndexedDB would have read them.
    reads: Arc<AtomicUsize>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many batches reads have returned so far: what a query cost.
    pub fn batches_read(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// Every stored batch, for tests that inspect the raw records.
    pub async fn records(&self) -> Vec<Batch> {
        self.batches.lock().await.values().cloned().collect()
    }
}

/// A transaction on [`MemoryStorage`]: holds the lock; writes are applied at commit.
pub struct MemoryTx {
    data: OwnedMutexGuard<BTreeMap<u64, Batch>>,
    pending: Vec<Op>,
    sync: Arc<std::sync::Mutex<Option<String>>>,
    sync_written: Option<String>,
    reads: Arc<AtomicUsize>,
}

/// A write, applied at commit in order.
enum Op {
    Add(Batch),
    Put(Batch),
    Delete(u64),
}

impl MemoryTx {
    fn counted(&self, batches: Vec<Batch>) -> Vec<Batch> {
        self.reads.fetch_add(batches.len(), Ordering::Relaxed);
        batches
    }
}

impl Storage for MemoryStorage {
    type Tx = MemoryTx;

    async fn read(&self) -> Result<MemoryTx> {
        self.write().await
    }

    async fn write(&self) -> Result<MemoryTx> {
        Ok(MemoryTx {
            data: self.batches.clone().lock_owned().await,
            pending: Vec::new(),
            sync: self.sync.clone(),
            sync_written: None,
            reads: self.reads.clone(),
        })
    }
}

impl Transaction for MemoryTx {
    async fn last_position(&self) -> Result<u64> {
        Ok(self.data.keys().next_back().copied().unwrap_or(0))
    }

    async fn heads(&self, aggregates: &[&str]) -> Result<Vec<u64>> {
        Ok(aggregates
            .iter()
            .map(|a| {
                self.data
                    .values()
                    .filter(|b| b.aggregate == *a)
                    .map(|b| b.last_sequence)
                    .max()
                    .unwrap_or(0)
            })
            .collect())
    }

    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self.counted(
            self.data
                .range(from..=to)
                .take(limit)
                .map(|(_, b)| b.clone())
                .collect(),
        ))
    }

    async fn scan_back(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self.counted(
            self.data
                .range(from..=to)
                .rev()
                .take(limit)
                .map(|(_, b)| b.clone())
                .collect(),
        ))
    }

    async fn by_created_at(&self, created_at: u64) -> Result<Vec<Batch>> {
        Ok(self.counted(
            self.data
                .values()
                .filter(|b| b.created_at == created_at)
                .cloned()
                .collect(),
        ))
    }

    async fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Result<Vec<Batch>> {
        Ok(self.counted(
            self.data
                .values()
                .filter(|b| b.aggregate == aggregate && b.last_sequence >= from_sequence)
                .cloned()
                .collect(),
        ))
    }

    async fn keys_by_aggregate(&self, range: &KeyRange) -> Result<Vec<u64>> {
        Ok(self
            .data
            .values()
            .filter(|b| range.contains(&b.aggregate))
            .map(|b| b.last_position)
            .collect())
    }

    async fn keys_by_action(&self, range: &KeyRange) -> Result<Vec<u64>> {
        Ok(self
            .data
            .values()
            .filter(|b| b.actions.iter().any(|a| range.contains(a)))
            .map(|b| b.last_position)
            .collect())
    }

    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>> {
        let batches = keys
            .iter()
            .map(|k| {
                self.data
                    .get(k)
                    .cloned()
                    .ok_or_else(|| Error::Storage(format!("no batch with key {k}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.counted(batches))
    }

    async fn sync_state(&self) -> Result<Option<String>> {
        Ok(self
            .sync
            .lock()
            .map_err(|_| Error::Storage("poisoned".into()))?
            .clone())
    }

    fn put_sync_state(&mut self, json: &str) -> Result<()> {
        self.sync_written = Some(json.to_owned());
        Ok(())
    }

    fn delete(&mut self, keys: &[u64]) -> Result<()> {
        self.pending.extend(keys.iter().map(|k| Op::Delete(*k)));
        Ok(())
    }

    fn add(&mut self, batches: &[Batch]) -> Result<()> {
        self.pending
            .extend(batches.iter().map(|b| Op::Add(b.clone())));
        Ok(())
    }

    fn put(&mut self, batches: &[Batch]) -> Result<()> {
        self.pending
            .extend(batches.iter().map(|b| Op::Put(b.clone())));
        Ok(())
    }

    async fn commit(mut self) -> Result<()> {
        let mut next = self.data.clone();
        for op in self.pending.drain(..) {
            let (batch, is_new) = match op {
                Op::Delete(key) => {
                    next.remove(&key);
                    continue;
                }
                Op::Add(batch) => (batch, true),
                Op::Put(batch) => (batch, false),
            };
            if is_new && next.contains_key(&batch.last_position) {
                return Err(Error::Constraint(format!(
                    "ConstraintError: key {} already exists",
                    batch.last_position
                )));
            }
            // The unique `start` index: one push per first position.
            let start = batch.first_position();
            if batch.starts_push
                && next.values().any(|b| {
                    b.last_position != batch.last_position
                        && b.starts_push
                        && b.first_position() == start
                })
            {
                return Err(Error::Constraint(format!(
                    "ConstraintError: a push already starts at position {start}"
                )));
            }
            let clash = next.values().any(|b| {
                b.last_position != batch.last_position
                    && b.aggregate == batch.aggregate
                    && b.last_sequence == batch.last_sequence
            });
            if clash {
                return Err(Error::Constraint(format!(
                    "ConstraintError: aggregate {} already has sequence {}",
                    batch.aggregate, batch.last_sequence
                )));
            }
            next.insert(batch.last_position, batch);
        }
        *self.data = next;
        if let Some(state) = self.sync_written.take() {
            *self
                .sync
                .lock()
                .map_err(|_| Error::Storage("poisoned".into()))? = Some(state);
        }
        Ok(())
    }
}
