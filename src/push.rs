//! Sequencing a push: checks each entry's `expectedSequence` against the
//! aggregate's head, assigns sequences and positions, and packs the events
//! into [`Batch`]es (SPEC section 4, `push`).

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::batch::{Batch, StoredEvent, MAX_BATCH_BYTES};
use crate::error::{Error, Result};
use crate::subject::{owns, Subject};

/// Largest revision a command may carry.
pub const MAX_REVISION: u16 = u16::MAX;

/// One command of a push entry.
#[derive(Debug, Clone)]
pub struct Command {
    pub action: Subject,
    pub revision: u16,
    /// The payload's JSON text (`null` when the caller gave none).
    pub payload: Box<RawValue>,
}

/// One entry of a push: commands for one aggregate.
#[derive(Debug, Clone)]
pub struct PushEntry {
    pub aggregate: Subject,
    /// The aggregate's sequence the caller saw; 0 = must not exist yet.
    pub expected_sequence: Option<u64>,
    pub commands: Vec<Command>,
}

/// The distinct aggregates of a push, in first-seen order: whose heads a
/// push must read.
pub fn aggregates(entries: &[PushEntry]) -> Vec<&str> {
    let mut seen = Vec::new();
    for entry in entries {
        let a = entry.aggregate.as_str();
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    seen
}

/// Checks what can be checked before touching storage: every entry has
/// commands.
pub fn check(entries: &[PushEntry]) -> Result<()> {
    match entries.iter().position(|e| e.commands.is_empty()) {
        None => Ok(()),
        Some(i) => Err(Error::argument(format!(
            "push entry {i} (aggregate {}) has no commands",
            entries[i].aggregate
        ))),
    }
}

/// Turns a push into batches.
///
/// Expects entries that passed [`check`]. `heads` maps each aggregate of the push to its current sequence (0 for a
/// new aggregate); `last_position` is the log's last position. Fails with
/// `SEQUENCE_MISMATCH` before building anything if an entry's expectation
/// does not hold at its point of the call.
pub fn sequence(
    entries: &[PushEntry],
    heads: &HashMap<String, u64>,
    last_position: u64,
    created_at: u64,
    mut new_id: impl FnMut() -> String,
) -> Result<Vec<Batch>> {
    let mut heads = heads.clone();
    let mut position = last_position;
    let mut batches = Vec::new();
    for entry in entries {
        let aggregate = entry.aggregate.as_str();
        let head = heads.entry(aggregate.to_owned()).or_insert(0);
        if let Some(expected) = entry.expected_sequence {
            if expected != *head {
                return Err(Error::SequenceMismatch {
                    aggregate: aggregate.to_owned(),
                    expected,
                    actual: *head,
                });
            }
        }
        let mut open: Option<Open> = None;
        for command in &entry.commands {
            *head += 1;
            position += 1;
            let stored = StoredEvent {
                id: new_id().into(),
                action: command.action.as_str().into(),
                revision: command.revision,
                payload: Some(&command.payload),
                forgotten: false,
                remote: None,
                sealed: None,
            };
            let json = serde_json::to_string(&stored)
                .map_err(|e| Error::argument(format!("cannot encode event: {e}")))?;
            if open
                .as_ref()
                .is_some_and(|o| o.json.len() + json.len() > MAX_BATCH_BYTES)
            {
                if let Some(o) = open.take() {
                    batches.push(o.finish(aggregate, created_at));
                }
            }
            let o = open.get_or_insert_with(|| Open::new(*head));
            o.add(json, aggregate, command.action.as_str(), *head, position);
        }
        if let Some(o) = open.take() {
            batches.push(o.finish(aggregate, created_at));
        }
    }
    if let Some(first) = batches.first_mut() {
        first.starts_push = true;
    }
    Ok(batches)
}

/// An event to append as it is (pulled from a sync server, or rebased):
/// its aggregate, sequence and commit time are given, not assigned.
#[derive(Debug, Clone)]
pub struct Given<'a> {
    pub aggregate: &'a str,
    pub sequence: u64,
    pub created_at: u64,
    pub stored: StoredEvent<'a>,
}

/// Packs given events into batches appended after `last_position`, in
/// order: consecutive events of one aggregate with consecutive sequences
/// and one commit time share a batch (split past [`MAX_BATCH_BYTES`]),
/// and the first batch carries the write's `start` (see `engine::push`).
pub fn pack(events: &[Given<'_>], last_position: u64) -> Result<Vec<Batch>> {
    let mut batches = Vec::new();
    let mut open: Option<(Open, &str, u64)> = None;
    for (k, e) in events.iter().enumerate() {
        let json = serde_json::to_string(&e.stored)
            .map_err(|err| Error::argument(format!("cannot encode event: {err}")))?;
        let fits = open.as_ref().is_some_and(|(o, aggregate, created_at)| {
            *aggregate == e.aggregate
                && *created_at == e.created_at
                && o.last_sequence + 1 == e.sequence
                && o.json.len() + json.len() <= MAX_BATCH_BYTES
        });
        if !fits {
            if let Some((o, aggregate, created_at)) = open.take() {
                batches.push(o.finish(aggregate, created_at));
            }
        }
        let (o, _, _) =
            open.get_or_insert_with(|| (Open::new(e.sequence), e.aggregate, e.created_at));
        let position = last_position + 1 + k as u64;
        o.add(json, e.aggregate, &e.stored.action, e.sequence, position);
    }
    if let Some((o, aggregate, created_at)) = open.take() {
        batches.push(o.finish(aggregate, created_at));
    }
    if let Some(first) = batches.first_mut() {
        first.starts_push = true;
    }
    Ok(batches)
}

/// The batch being filled.
struct Open {
    json: String,
    /// The actions not owned by the aggregate (the sparse `actions` index).
    actions: Vec<String>,
    first_sequence: u64,
    last_sequence: u64,
    last_position: u64,
}

impl Open {
    fn new(first_sequence: u64) -> Self {
        Open {
            json: String::from("["),
            actions: Vec::new(),
            first_sequence,
            last_sequence: first_sequence,
            last_position: 0,
        }
    }

    fn add(&mut self, json: String, aggregate: &str, action: &str, sequence: u64, position: u64) {
        if self.json.len() > 1 {
            self.json.push(',');
        }
        self.json.push_str(&json);
        if !owns(aggregate, action) && !self.actions.iter().any(|a| a == action) {
            self.actions.push(action.to_owned());
        }
        self.last_sequence = sequence;
        self.last_position = position;
    }

    fn finish(mut self, aggregate: &str, created_at: u64) -> Batch {
        self.json.push(']');
        Batch {
            last_position: self.last_position,
            aggregate: aggregate.to_owned(),
            first_sequence: self.first_sequence,
            last_sequence: self.last_sequence,
            created_at,
            actions: self.actions,
            events: self.json,
            starts_push: false,
        }
    }
}
