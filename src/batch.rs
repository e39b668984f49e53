//! The storage record and the event codec.
//!
//! Events are stored in *batches*: the consecutive events of one aggregate
//! written by one push entry (split when the JSON grows past
//! [`MAX_BATCH_BYTES`]). A batch is one IndexedDB record, keyed by the
//! position of its last event. See `docs/storage.md`.

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

use crate::error::{Error, Result};

/// Batches are split before their events' JSON exceeds this many bytes, so
/// that Chromium keeps each record inline (it moves values over 64 KiB into
/// separate blob files).
pub const MAX_BATCH_BYTES: usize = 48 * 1024;

/// One storage record: consecutive events of one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Position of the last event: the record's key.
    pub last_position: u64,
    /// Dotted aggregate subject.
    pub aggregate: String,
    /// Sequence of the first event.
    pub first_sequence: u64,
    /// Sequence of the last event.
    pub last_sequence: u64,
    /// Commit time shared by the events, ms since the epoch.
    pub created_at: u64,
    /// The distinct dotted actions of the events that do not start with the
    /// aggregate's tokens (the sparse `actions` index; see
    /// [`crate::subject::owns`]). Usually empty. Records written before this
    /// rule list every action, which is still correct, only larger.
    pub actions: Vec<String>,
    /// The events as a JSON array of [`StoredEvent`].
    pub events: String,
    /// The first batch of its push: its record carries `start`, its first
    /// position, under a unique index, so that two pushes that both
    /// believe the log ends at the same place cannot both commit (see
    /// `engine::push`).
    pub starts_push: bool,
}

/// An event as stored inside a batch: what is not implied by the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    pub revision: u16,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    /// An encrypted store's payload as stored (`crate::seal`), in its
    /// place: in text read for matching
    /// ([`crate::storage::Transaction::text_to_match`]), opened by
    /// [`crate::storage::Transaction::open`] once the event is picked.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
    /// The sync server's position once the event is synced (accepted or
    /// pulled); absent while pending and in stores that never synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<u64>,
}

/// The payload of an event decoded with its payload still sealed, opened
/// ([`crate::storage::Transaction::open`]).
#[derive(Debug)]
pub enum Opened {
    /// The event was not sealed: it is read as decoded.
    Clear,
    /// The payload's plaintext.
    Payload(Box<RawValue>),
    /// Its key was destroyed (crypto-shredded): the event reads as forgotten.
    Forgotten,
}

impl Opened {
    /// `event` as read: its payload in the clear.
    pub fn apply<'s>(&'s self, event: &'s StoredEvent<'s>) -> Cow<'s, StoredEvent<'s>> {
        match self {
            Opened::Clear => Cow::Borrowed(event),
            Opened::Payload(raw) => Cow::Owned(StoredEvent {
                payload: Some(raw),
                sealed: None,
                ..event.clone()
            }),
            Opened::Forgotten => Cow::Owned(StoredEvent {
                payload: None,
                sealed: None,
                forgotten: true,
                ..event.clone()
            }),
        }
    }
}

impl Batch {
    /// The same batch (key, aggregate, sequences, time, actions) holding
    /// `events` as its events text: a rewrite (forget) or another form of
    /// the same events (sealed, opened).
    pub fn with_events(&self, events: String) -> Batch {
        Batch {
            events,
            aggregate: self.aggregate.clone(),
            actions: self.actions.clone(),
            ..*self
        }
    }

    /// Number of events in the batch.
    pub fn len(&self) -> u64 {
        (self.last_sequence + 1).saturating_sub(self.first_sequence)
    }

    /// Whether the batch is empty (never, for a stored batch).
    pub fn is_empty(&self) -> bool {
        self.last_sequence < self.first_sequence
    }

    /// Position of the first event.
    pub fn first_position(&self) -> u64 {
        (self.last_position + 1).saturating_sub(self.len())
    }

    /// Checks the invariants of a record read from storage, so that a
    /// damaged or foreign record is a `STORAGE` error and never a panic.
    pub fn check(self) -> Result<Self> {
        if self.first_sequence == 0
            || self.last_sequence < self.first_sequence
            || self.last_position < self.len()
        {
            return Err(Error::Storage(format!(
                "corrupt batch {}: sequences {}..={} do not fit",
                self.last_position, self.first_sequence, self.last_sequence
            )));
        }
        Ok(self)
    }

    /// Decodes the events from `text`, this batch's events as the backend
    /// holds them (see [`crate::storage::Transaction::text`]).
    pub fn decode_text<'t>(&self, text: &'t str) -> Result<Vec<StoredEvent<'t>>> {
        let events: Vec<StoredEvent<'t>> = serde_json::from_str(text)
            .map_err(|e| Error::Storage(format!("corrupt batch {}: {e}", self.last_position)))?;
        if events.len() as u64 != self.len() {
            return Err(Error::Storage(format!(
                "corrupt batch {}: {} events for sequences {}..={}",
                self.last_position,
                events.len(),
                self.first_sequence,
                self.last_sequence
            )));
        }
        Ok(events)
    }

    /// The public view of the `index`-th event.
    pub fn event<'a>(&'a self, index: usize, stored: &'a StoredEvent<'_>) -> Event<'a> {
        debug_assert!(
            stored.sealed.is_none(),
            "an event handed out with its payload still sealed (Transaction::open was skipped)"
        );
        Event {
            aggregate: &self.aggregate,
            stored,
            sequence: self.first_sequence + index as u64,
            position: self.first_position() + index as u64,
            created_at: self.created_at,
        }
    }
}

/// The public view of an event (SPEC section 3), serialized with camelCase
/// names and subjects as token arrays.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub aggregate: &'a str,
    pub stored: &'a StoredEvent<'a>,
    pub sequence: u64,
    pub position: u64,
    pub created_at: u64,
}

struct Tokens<'a>(&'a str);

impl Serialize for Tokens<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for token in self.0.split('.') {
            seq.serialize_element(token)?;
        }
        seq.end()
    }
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 10)?;
        s.serialize_field("id", &self.stored.id)?;
        s.serialize_field("aggregate", &Tokens(self.aggregate))?;
        s.serialize_field("action", &Tokens(&self.stored.action))?;
        s.serialize_field("revision", &self.stored.revision)?;
        s.serialize_field("sequence", &self.sequence)?;
        s.serialize_field("position", &self.position)?;
        s.serialize_field("createdAt", &self.created_at)?;
        s.serialize_field("payload", &self.stored.payload)?;
        s.serialize_field("forgotten", &self.stored.forgotten)?;
        s.serialize_field("remotePosition", &self.stored.remote)?;
        s.end()
    }
}

/// The IndexedDB records of `batches` as one JSON array (field names in
/// `docs/storage.md`), to cross into JavaScript in one piece.
pub fn records_json(batches: &[Batch]) -> Result<String> {
    serde_json::to_string(batches).map_err(|e| Error::Storage(format!("cannot encode batch: {e}")))
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let sparse = self.actions.is_empty();
        let fields = 6 + usize::from(!sparse) + usize::from(self.starts_push);
        let mut s = serializer.serialize_struct("Batch", fields)?;
        s.serialize_field("lastPosition", &self.last_position)?;
        s.serialize_field("aggregate", &self.aggregate)?;
        s.serialize_field("firstSequence", &self.first_sequence)?;
        s.serialize_field("lastSequence", &self.last_sequence)?;
        s.serialize_field("createdAt", &self.created_at)?;
        // Sparse: a record whose aggregate owns all its actions is not in the index.
        if !sparse {
            s.serialize_field("actions", &self.actions)?;
        }
        s.serialize_field("events", &self.events)?;
        if self.starts_push {
            s.serialize_field("start", &self.first_position())?;
        }
        s.end()
    }
}

/// A part of a page of read results, in position order.
#[derive(Debug)]
pub enum Segment {
    /// Public events as a JSON array.
    Events(String),
    /// Every event of this batch, to be expanded by whoever holds its text
    /// (a backend may hand it out without copying it; see
    /// [`crate::engine::page_json`]).
    Whole(Batch),
}

/// Read results being collected: events as JSON, whole batches as they are.
#[derive(Debug)]
pub struct Page {
    segments: Vec<Segment>,
    open: EventsJson,
    count: usize,
}

impl Page {
    pub fn new() -> Self {
        Page {
            segments: Vec::new(),
            open: EventsJson::new(),
            count: 0,
        }
    }

    /// Adds one event.
    pub fn push(&mut self, event: &Event<'_>) -> Result<()> {
        self.count += 1;
        self.open.push(event)
    }

    /// Adds every event of a batch.
    pub fn whole(&mut self, batch: Batch) {
        self.seal();
        self.count += batch.len() as usize;
        self.segments.push(Segment::Whole(batch));
    }

    /// Number of events collected.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segments collected; the page is empty afterwards.
    pub fn take(&mut self) -> Vec<Segment> {
        self.seal();
        self.count = 0;
        std::mem::take(&mut self.segments)
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.segments.push(Segment::Events(self.open.take()));
        }
    }
}

/// Collects public events into one JSON array, the cheapest way across the
/// wasm boundary (one string, one `JSON.parse`).
#[derive(Debug)]
pub struct EventsJson {
    json: Vec<u8>,
    count: usize,
}

impl Default for EventsJson {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

impl EventsJson {
    pub fn new() -> Self {
        EventsJson {
            json: b"[".to_vec(),
            count: 0,
        }
    }

    pub fn push(&mut self, event: &Event<'_>) -> Result<()> {
        if self.count > 0 {
            self.json.push(b',');
        }
        serde_json::to_writer(&mut self.json, event)
            .map_err(|e| Error::Storage(format!("cannot encode event: {e}")))?;
        self.count += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The JSON array text; the collector is empty afterwards.
    pub fn take(&mut self) -> String {
        let mut json = std::mem::replace(&mut self.json, b"[".to_vec());
        json.push(b']');
        self.count = 0;
        // Only serde_json wrote here: always UTF-8.
        String::from_utf8(json).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            last_position: 12,
            aggregate: "user.A".into(),
            first_sequence: 4,
            last_sequence: 5,
            created_at: 1_700_000_000_000,
            actions: vec!["user.A.renamed".into()],
            starts_push: false,
            events: r#"[{"id":"a","action":"user.A.renamed","revision":1,"payload":{"n":"x"},"remote":7},
                        {"id":"b","action":"user.A.renamed","revision":2,"forgotten":true}]"#
                .into(),
        }
    }

    #[test]
    fn public_events_carry_positions_and_sequences() {
        let b = batch();
        let events = b.decode_text(&b.events).unwrap();
        let mut out = EventsJson::new();
        for (i, e) in events.iter().enumerate() {
            out.push(&b.event(i, e)).unwrap();
        }
        let v: serde_json::Value = serde_json::from_str(&out.take()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"id":"a","aggregate":["user","A"],"action":["user","A","renamed"],"revision":1,
                 "sequence":4,"position":11,"createdAt":1_700_000_000_000u64,"payload":{"n":"x"},"forgotten":false,"remotePosition":7},
                {"id":"b","aggregate":["user","A"],"action":["user","A","renamed"],"revision":2,
                 "sequence":5,"position":12,"createdAt":1_700_000_000_000u64,"payload":null,"forgotten":true,"remotePosition":null}
            ])
        );
    }

    #[test]
    fn corrupt_batches_are_storage_errors() {
        let mut b = batch();
        assert!(b.clone().check().is_ok());
        let upside_down = Batch {
            first_sequence: 9,
            ..b.clone()
        };
        assert_eq!(upside_down.check().unwrap_err().code(), "STORAGE");
        let too_long = Batch {
            last_position: 1,
            ..b.clone()
        };
        assert_eq!(too_long.check().unwrap_err().code(), "STORAGE");
        b.last_sequence = 6;
        assert_eq!(b.decode_text(&b.events).unwrap_err().code(), "STORAGE");
        b.events = "not json".into();
        assert_eq!(b.decode_text(&b.events).unwrap_err().code(), "STORAGE");
    }
}
