//! The storage seam: what the engine needs from a backend. IndexedDB in the
//! browser (`web::idb`), [`memory::MemoryStorage`] for native tests.
//!
//! A backend stores [`Batch`]es keyed by their last position, with three
//! indexes: `aggregate` on `(aggregate, lastSequence)` (unique), `actions`
//! on each action of the batch its aggregate does not own (multi-entry,
//! sparse: see [`crate::subject::owns`]) and `createdAt` (for `get`).
//! Pushes are written as unfolded records ([`crate::log`]), which every
//! read method sees as the batches they hold.

use std::borrow::Cow;

use crate::batch::{Batch, Opened, StoredEvent};
use crate::error::Result;
use crate::subject::KeyRange;

pub mod memory;

/// A backend: hands out transactions. Write transactions are serialized
/// (IndexedDB does this across tabs for overlapping scopes).
#[allow(async_fn_in_trait)]
pub trait Storage {
    type Tx: Transaction;
    /// A read-only transaction.
    async fn read(&self) -> Result<Self::Tx>;
    /// A read-write transaction; nothing it writes is visible before `commit`.
    async fn write(&self) -> Result<Self::Tx>;
    /// A push writes on a guess (see `engine::push`) until
    /// [`Storage::end_guess`]: meanwhile new transactions wait, so that if
    /// the guess fails, its retry still comes before every call made after
    /// the push. A backend without concurrent callers needs nothing.
    fn begin_guess(&self) {}
    /// Ends [`Storage::begin_guess`].
    fn end_guess(&self) {}
}

/// One transaction.
#[allow(async_fn_in_trait)]
pub trait Transaction {
    /// The log's last position, 0 when empty.
    async fn last_position(&self) -> Result<u64>;
    /// Current sequence of each aggregate, 0 for unknown ones.
    async fn heads(&self, aggregates: &[&str]) -> Result<Vec<u64>>;
    /// Up to `limit` batches with a last position in `from..=to`, in position order.
    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>>;
    /// Up to `limit` batches with a last position in `from..=to`, in
    /// descending position order: the log read backwards.
    async fn scan_back(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>>;
    /// The batches of `aggregate` whose last sequence is at least
    /// `from_sequence`, in any order.
    async fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Result<Vec<Batch>>;
    /// The batches written at `created_at` (ms), in any order: where an
    /// event whose UUIDv7 id carries that time is.
    async fn by_created_at(&self, created_at: u64) -> Result<Vec<Batch>>;
    /// Keys (last positions) of the batches whose aggregate lies in `range`;
    /// in any order.
    async fn keys_by_aggregate(&self, range: &KeyRange) -> Result<Vec<u64>>;
    /// Keys (last positions) of the batches listing an action in `range` in
    /// their (sparse) `actions`; in any order, possibly repeated.
    async fn keys_by_action(&self, range: &KeyRange) -> Result<Vec<u64>>;
    /// The batches with these keys, in the same order.
    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>>;
    /// The events text of a batch this transaction read. A backend may
    /// leave it out of [`Batch::events`] when reading, so that batches
    /// read whole can be handed out without copying (see
    /// [`crate::engine::page_json`]); the default is the batch's own text.
    fn text<'a>(&self, batch: &'a Batch) -> Result<Cow<'a, str>> {
        Ok(Cow::Borrowed(&batch.events))
    }
    /// The events text of a batch this transaction read, for picking
    /// some of its events: an encrypted store leaves payloads sealed
    /// (`StoredEvent::sealed`), to be opened by [`Transaction::open`] for
    /// the events picked only. The default is [`Transaction::text`].
    fn text_to_match<'a>(&self, batch: &'a Batch) -> Result<Cow<'a, str>> {
        self.text(batch)
    }
    /// The payload of `event`, decoded from [`Transaction::text_to_match`],
    /// opened if it is sealed.
    fn open(&self, _event: &StoredEvent<'_>) -> Result<Opened> {
        Ok(Opened::Clear)
    }
    /// Whether the events text of a batch this transaction read contains
    /// `needle` (a cheap test before decoding; a backend may answer it
    /// without copying the text).
    fn text_contains(&self, batch: &Batch, needle: &str) -> Result<bool> {
        Ok(batch.events.contains(needle))
    }
    /// Says that a batch this transaction read will not be used (its held
    /// text, if any, can go).
    fn release(&self, _batch: &Batch) {}
    /// Says that this transaction erased payloads of `aggregate` (a forget,
    /// here or pulled by sync): an encrypted store shreds its key after
    /// the commit (docs/privacy.md, "Crypto-shredding forget").
    fn forgot(&mut self, _aggregate: &str) {}
    /// The sync state (JSON, see `crate::sync::local`), if this store ever synced.
    async fn sync_state(&self) -> Result<Option<String>>;
    /// Replaces the sync state.
    fn put_sync_state(&mut self, json: &str) -> Result<()>;
    /// Removes the batches with these keys (a sync conflict withdrawing
    /// pending events).
    fn delete(&mut self, keys: &[u64]) -> Result<()>;
    /// Adds new batches; fails if a key is taken.
    fn add(&mut self, batches: &[Batch]) -> Result<()>;
    /// Replaces existing batches (same keys). A batch of an unfolded record
    /// folds that record (see [`crate::log`]).
    fn put(&mut self, batches: &[Batch]) -> Result<()>;
    /// Writes the batches of one push as unfolded records
    /// ([`crate::log::Unfolded::chunk`]); fails if a key or the push's
    /// `start` is taken.
    fn append(&mut self, batches: &[Batch]) -> Result<()>;
    /// Folds the oldest unfolded records, whole, into batches of their own
    /// (at least one record if there is any, then while fewer than about
    /// `budget` batches were written); returns how many records it folded.
    async fn fold(&mut self, budget: usize) -> Result<usize>;
    /// Commits; resolves once the writes are durable as far as the backend promises.
    async fn commit(self) -> Result<()>;
}
