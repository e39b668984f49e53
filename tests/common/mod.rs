//! Helpers shared by the native tests: building pushes and running the
//! engine on the in-memory backend.
#![allow(dead_code, clippy::unwrap_used)]

use eventstore_wasm::batch::{Batch, Segment};
use eventstore_wasm::engine;
use eventstore_wasm::filter::{Filter, Query};
use eventstore_wasm::heads::HeadCache;
use eventstore_wasm::push::{Command, PushEntry};
use eventstore_wasm::storage::memory::MemoryStorage;
use eventstore_wasm::storage::Transaction;
use eventstore_wasm::subject::{Pattern, Subject};
use eventstore_wasm::Result;
use futures::executor::block_on;
use serde_json::value::RawValue;
use serde_json::Value;

pub fn entry(aggregate: &str, expected: Option<u64>, commands: &[(&str, &str)]) -> PushEntry {
    PushEntry {
        aggregate: Subject::parse(aggregate).unwrap(),
        expected_sequence: expected,
        commands: commands
            .iter()
            .map(|(action, payload)| Command {
                action: Subject::parse(action).unwrap(),
                revision: 1,
                payload: RawValue::from_string(payload.to_string()).unwrap(),
            })
            .collect(),
    }
}

pub struct Store {
    pub storage: MemoryStorage,
    pub cache: HeadCache,
    pub now: u64,
    /// Ids as the browser makes them (UUIDv7 of `now`); `false`: `id-N`,
    /// as events imported with ids made elsewhere.
    pub uuid_ids: bool,
    next_id: u64,
}

impl Store {
    pub fn new() -> Self {
        Store {
            storage: MemoryStorage::new(),
            cache: HeadCache::new(),
            now: 1_000,
            uuid_ids: true,
            next_id: 0,
        }
    }

    /// Another store on the same storage with its own head cache: another tab.
    pub fn other_tab(&self) -> Self {
        Store {
            storage: self.storage.clone(),
            cache: HeadCache::new(),
            now: self.now,
            uuid_ids: self.uuid_ids,
            next_id: 1_000_000,
        }
    }

    /// Pushes and returns the public events as JSON values.
    pub fn push(&mut self, entries: &[PushEntry]) -> Result<Vec<Value>> {
        let mut id = self.next_id;
        let (now, uuid_ids) = (self.now, self.uuid_ids);
        let (_, events) = block_on(engine::push(
            &self.storage,
            &self.cache,
            entries,
            self.now,
            || {
                id += 1;
                if uuid_ids {
                    let mut random = [0u8; 10];
                    random[2..].copy_from_slice(&id.to_be_bytes());
                    uuid::Builder::from_unix_timestamp_millis(now, &random)
                        .into_uuid()
                        .to_string()
                } else {
                    format!("id-{id}")
                }
            },
            |tx, batches| {
                let whole = batches.iter().cloned().map(Segment::Whole).collect();
                engine::page_json(tx, whole, false)
            },
        ))?;
        self.next_id = id;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        Ok(serde_json::from_str(&events).unwrap())
    }

    pub fn filter(&self, filter: &Filter) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        block_on(engine::filter(
            &self.storage,
            filter,
            engine::Window::default(),
            |tx, page| collect(&mut all, tx, page, filter.reverse),
        ))?;
        Ok(all)
    }

    pub fn count(&self, filter: &Filter) -> Result<u64> {
        block_on(engine::count(&self.storage, filter))
    }

    /// The event with this id, as a JSON value.
    pub fn get(&self, id: &str) -> Result<Option<Value>> {
        let mut all = Vec::new();
        let found = block_on(engine::get(&self.storage, id, |tx, page| {
            collect(&mut all, tx, page, false)
        }))?;
        assert_eq!(found, all.len() == 1);
        Ok(all.pop())
    }

    pub fn forget(&self, filter: &Filter) -> Result<u64> {
        self.forget_notice(filter).map(|(n, _)| n)
    }

    /// Forgets and returns the count and the erased events' new state.
    pub fn forget_notice(&self, filter: &Filter) -> Result<(u64, Vec<Value>)> {
        // Forget ids are unique everywhere (the browser draws UUIDs).
        static FORGETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (n, json) = block_on(engine::forget(&self.storage, filter, || {
            let k = FORGETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("forget-{k}")
        }))?;
        Ok((n, serde_json::from_str(&json).unwrap()))
    }

    /// Reads a window; returns the events and the snapshot's last position.
    pub fn window(&self, filter: &Filter, window: engine::Window) -> Result<(Vec<Value>, u64)> {
        let mut all = Vec::new();
        let end = block_on(engine::filter_to_end(
            &self.storage,
            filter,
            window,
            |tx, page| collect(&mut all, tx, page, filter.reverse),
        ))?;
        Ok((all, end))
    }

    pub fn records(&self) -> Vec<Batch> {
        block_on(self.storage.records())
    }
}

/// A filter sink that appends each page's events to `all`.
fn collect<T: Transaction>(
    all: &mut Vec<Value>,
    tx: &T,
    page: Vec<Segment>,
    reverse: bool,
) -> Result<()> {
    let events: Vec<Value> = serde_json::from_str(&engine::page_json(tx, page, reverse)?).unwrap();
    all.extend(events);
    Ok(())
}

/// One numeric field of every event, in order (`"position"`, `"sequence"`…).
pub fn numbers(events: &[Value], key: &str) -> Vec<u64> {
    events.iter().map(|e| e[key].as_u64().unwrap()).collect()
}

pub fn subjects(pattern: &str) -> Filter {
    query(Query {
        subjects: Some(Pattern::parse(pattern).unwrap()),
        ..Query::default()
    })
}

pub fn aggregate(pattern: &str) -> Filter {
    query(Query {
        aggregate: Some(Pattern::parse(pattern).unwrap()),
        ..Query::default()
    })
}

pub fn query(q: Query) -> Filter {
    Filter {
        queries: vec![q],
        ..Filter::default()
    }
}

/// The dotted action of an event value.
pub fn action(e: &Value) -> String {
    dotted(&e["action"])
}

pub fn dotted(tokens: &Value) -> String {
    tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(".")
}
