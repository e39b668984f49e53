//! Import of an export (NDJSON, one event per line, as `store.export`
//! writes it): access and portability requests. Pure: over any
//! [`Storage`], tested natively; the browser edge streams the lines in.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::batch::StoredEvent;
use crate::error::{Error, Result};
use crate::heads::HeadCache;
use crate::push::{self, Given};
use crate::storage::{Storage, Transaction};
use crate::sync::local::{self, State};
use crate::sync::protocol::WireSubject;

/// Largest integer JavaScript holds exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

/// One exported event. Other fields (`position`, `remotePosition`) are
/// this store's own and are not imported.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    aggregate: WireSubject,
    action: WireSubject,
    revision: u16,
    sequence: u64,
    created_at: u64,
    #[serde(borrow)]
    payload: &'a RawValue,
    forgotten: bool,
}

fn bad(line: u64, message: impl std::fmt::Display) -> Error {
    Error::argument(format!("import, line {line}: {message}"))
}

/// Appends the events of `text` (whole NDJSON lines; the first is line
/// `first_line` of the import) in one transaction. Each aggregate's events
/// must continue its sequence (1, 2, 3… from its first line on), so an
/// export of whole aggregates imports as it was. Returns how many events
/// were added.
///
/// Heads come from `cache` when it knows them (as for a push: a wrong
/// guess fails on the appended `start` and is redone the checked way), so
/// an import reads each aggregate's head once, not once per call.
pub async fn import_lines<S: Storage>(
    storage: &S,
    cache: &HeadCache,
    text: &str,
    first_line: u64,
) -> Result<u64> {
    let mut lines = Vec::new();
    for (k, raw) in text.split('\n').enumerate() {
        let n = first_line + k as u64;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line<'_> = serde_json::from_str(raw).map_err(|e| bad(n, e))?;
        if line.id.is_empty()
            || line.id.len() > 128
            || !line.id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(bad(
                n,
                format!("id {:?} is not 1..=128 visible ASCII characters", line.id),
            ));
        }
        if line.sequence == 0 || line.sequence > MAX_SAFE || line.created_at > MAX_SAFE {
            return Err(bad(
                n,
                "sequence must be 1 or more, sequence and createdAt at most 2^53 - 1",
            ));
        }
        if line.forgotten && line.payload.get() != "null" {
            return Err(bad(n, "a forgotten event's payload must be null"));
        }
        lines.push((n, line));
    }
    if lines.is_empty() {
        return Ok(0);
    }
    match write(storage, cache, &lines, true).await {
        Err(Error::Constraint(_)) => {
            cache.clear();
            write(storage, cache, &lines, false).await
        }
        other => other,
    }
}

async fn write<S: Storage>(
    storage: &S,
    cache: &HeadCache,
    lines: &[(u64, Line<'_>)],
    guess: bool,
) -> Result<u64> {
    let mut tx = storage.write().await?;
    let mut aggregates: Vec<&str> = Vec::new();
    for (_, l) in lines {
        let a = l.aggregate.0.as_str();
        if !aggregates.contains(&a) {
            aggregates.push(a);
        }
    }
    let (last, known) = match cache.guess(&aggregates).filter(|_| guess) {
        Some(guessed) => guessed,
        None => {
            let (last, heads) = futures::join!(tx.last_position(), tx.heads(&aggregates));
            let heads = aggregates
                .iter()
                .map(|a| a.to_string())
                .zip(heads?)
                .collect();
            (last?, heads)
        }
    };
    let mut heads: HashMap<&str, u64> = aggregates
        .iter()
        .map(|a| (*a, known.get(*a).copied().unwrap_or(0)))
        .collect();
    let mut given = Vec::with_capacity(lines.len());
    for (n, l) in lines {
        let a = l.aggregate.0.as_str();
        let head = heads.entry(a).or_insert(0);
        if l.sequence != *head + 1 {
            return Err(bad(
                *n,
                format!(
                    "{a} #{} follows #{head}: an import needs each aggregate's events from sequence 1, \
                     without gaps, in order (export whole aggregates)",
                    l.sequence
                ),
            ));
        }
        *head = l.sequence;
        given.push(Given {
            aggregate: a,
            sequence: l.sequence,
            created_at: l.created_at,
            stored: StoredEvent {
                id: l.id.clone(),
                action: l.action.0.as_str().into(),
                revision: l.revision,
                payload: (!l.forgotten).then_some(l.payload),
                forgotten: l.forgotten,
                remote: None,
                sealed: None,
            },
        });
    }
    let batches = push::pack(&given, last)?;
    tx.append(&batches)?;
    tx.commit().await?;
    let end = batches.last().map_or(last, |b| b.last_position);
    cache.record(last, end, heads.iter().map(|(a, h)| (a.to_string(), *h)));
    Ok(given.len() as u64)
}

/// Marks the store as being imported into (`true`) or done. A store left
/// marked (the page closed during an import) refuses to open.
pub async fn mark_importing<S: Storage>(storage: &S, importing: bool) -> Result<()> {
    let mut tx = storage.write().await?;
    let mut state = State::load(&tx).await?.unwrap_or_default();
    state.importing = importing;
    local::save(&state, &mut tx)?;
    tx.commit().await
}

/// `STORAGE` if an import into this store did not finish.
pub async fn check_not_importing<S: Storage>(storage: &S, name: &str) -> Result<()> {
    match local::state(storage).await? {
        Some(state) if state.importing => Err(Error::Storage(format!(
            "an import into store {name:?} did not finish (the page closed during it): \
             delete the store (EventStore.delete) and import again"
        ))),
        _ => Ok(()),
    }
}
