//! The messages of sync protocol version 1 (`docs/sync-protocol.md`): what
//! travels between a device and a sync server as JSON over HTTP, with the
//! decoders that validate requests.
//!
//! Decoders never panic: any input gives either a valid message or a
//! [`ProtocolError`] with a stable [`ErrorCode`] and a message naming the
//! bad value.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::filter::{Fields, Filter, Query, Range};
use crate::subject::{KeyRange, Pattern, Subject};

/// The protocol version this module speaks (the `/v1/` of every path).
pub const PROTOCOL: u32 = 1;
/// Largest request body a server accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most events one push may carry.
pub const MAX_PUSH_EVENTS: usize = 1_000;
/// Most items one pull answers with (and its default `limit`).
pub const MAX_PULL_LIMIT: usize = 1_000;
/// About how many bytes of items a pull answers with at most (at least
/// one item when any is visible).
pub const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;
/// Longest long poll, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 30;
/// Most remote events a conflict carries per aggregate (then `more`).
pub const MAX_CONFLICT_EVENTS: usize = 1_000;
/// Most events one forget may erase (a larger one is refused `TOO_LARGE`:
/// split it by `position` ranges).
pub const MAX_FORGET_EVENTS: usize = 10_000;
/// Longest event or forget id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Largest `createdAt` (the largest integer a JavaScript number holds exactly).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The stable error codes of the protocol, each with its HTTP status.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the body or a parameter is malformed; the message names it.
    BadRequest,
    /// 401: no token, or a token the server does not know.
    Unauthorized,
    /// 403: the token does not allow this operation on an aggregate.
    Forbidden,
    /// 404: no such path.
    NotFound,
    /// 405: the path exists with another method.
    MethodNotAllowed,
    /// 409: some event's sequence does not follow the aggregate's head.
    Conflict,
    /// 412: the request names a `log` other than the server's.
    LogMismatch,
    /// 413: the body or the work asked for is over a limit.
    TooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 400: the path's protocol version is not one the server speaks.
    UnsupportedProtocol,
    /// 500: the server failed; the request may be retried.
    Internal,
    /// 503: the server is shutting down or its database is unreachable; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The code's JSON string (`"BAD_REQUEST"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::LogMismatch => "LOG_MISMATCH",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::UnsupportedProtocol => "UNSUPPORTED_PROTOCOL",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status that carries this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnsupportedProtocol => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::LogMismatch => 412,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ALL_CODES
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| de::Error::custom(format!("unknown error code {s:?}")))
    }
}

const ALL_CODES: [ErrorCode; 12] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Conflict,
    ErrorCode::LogMismatch,
    ErrorCode::TooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::UnsupportedProtocol,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
];

/// A failed request: the `error` object of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        ProtocolError {
            code,
            message: message.to_string(),
        }
    }

    /// A `BAD_REQUEST`.
    pub fn bad(message: impl fmt::Display) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// A subject on the wire: read from a token array or the dotted string,
/// written as a token array (the shape of `event.aggregate` in JavaScript).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WireSubject(pub Subject);

impl Serialize for WireSubject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.tokens())
    }
}

impl<'de> Deserialize<'de> for WireSubject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SubjectVisitor { pattern: false })
            .and_then(|s| Subject::parse(&s).map_err(de::Error::custom))
            .map(WireSubject)
    }
}

/// A pattern on the wire: a token array or the dotted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePattern(pub Pattern);

impl Serialize for WirePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for WirePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SubjectVisitor { pattern: true })
            .and_then(|s| Pattern::parse(&s).map_err(de::Error::custom))
            .map(WirePattern)
    }
}

/// Reads a dotted string or an array of tokens into the dotted form. Tokens
/// containing `.` are refused here, so that joining cannot forge a subject.
struct SubjectVisitor {
    pattern: bool,
}

impl<'de> Visitor<'de> for SubjectVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.pattern { "pattern" } else { "subject" };
        write!(f, "a {what}: a dotted string or an array of tokens")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut dotted = String::new();
        let mut count = 0usize;
        while let Some(token) = seq.next_element::<String>()? {
            count += 1;
            if count > crate::subject::MAX_TOKENS {
                return Err(de::Error::custom(format!(
                    "a subject has at most {} tokens",
                    crate::subject::MAX_TOKENS
                )));
            }
            if token.is_empty() || token.contains('.') {
                return Err(de::Error::custom(format!(
                    "invalid token {token:?}: tokens are non-empty and hold no `.`"
                )));
            }
            if count > 1 {
                dotted.push('.');
            }
            dotted.push_str(&token);
        }
        if count == 0 {
            return Err(de::Error::custom("a subject needs at least one token"));
        }
        Ok(dotted)
    }
}

/// One event as it travels: pushed by a device, pulled with its
/// `position`, or carried by a conflict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireEvent {
    /// Unique across all stores; the idempotency key of a push.
    pub id: String,
    pub aggregate: WireSubject,
    pub action: WireSubject,
    /// 0..=65535 (the u16 refuses anything else).
    pub revision: u16,
    /// The aggregate's sequence this event takes (its expected head + 1).
    pub sequence: u64,
    /// Milliseconds since the Unix epoch, set by the device that pushed it.
    pub created_at: u64,
    /// The payload's JSON text, kept byte for byte (`null` once forgotten).
    pub payload: Box<RawValue>,
    pub forgotten: bool,
    /// The server's position: absent in a push, present everywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

impl WireEvent {
    /// Checks the rules serde cannot express; `at` names the event in errors.
    pub fn check(&self, at: &str) -> Result<(), ProtocolError> {
        check_id(&self.id, at)?;
        if self.sequence == 0 {
            return Err(ProtocolError::bad(format!(
                "{at} (id {:?}): sequence must be 1 or more",
                self.id
            )));
        }
        if self.sequence > MAX_SAFE_INTEGER || self.created_at > MAX_SAFE_INTEGER {
            return Err(ProtocolError::bad(format!(
                "{at} (id {:?}): sequence and createdAt must be at most {MAX_SAFE_INTEGER}",
                self.id
            )));
        }
        if self.forgotten && self.payload.get() != "null" {
            return Err(ProtocolError::bad(format!(
                "{at} (id {:?}): a forgotten event's payload must be null",
                self.id
            )));
        }
        Ok(())
    }
}

/// Ids are 1..=128 visible ASCII characters (a UUID fits; no space or
/// control character, so an id is safe in logs and NATS headers).
fn check_id(id: &str, at: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ProtocolError::bad(format!(
            "{at}: id must be 1..={MAX_ID_BYTES} bytes, got {} bytes",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ProtocolError::bad(format!(
            "{at}: id {id:?} holds {c:?}: ids are visible ASCII characters (e.g. a UUID)"
        )));
    }
    Ok(())
}

/// `POST /v1/push`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// The server log the device synced with; a server with another log answers `LOG_MISMATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// In the device's order; no `position`.
    pub events: Vec<WireEvent>,
}

/// How one pushed event was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Written now, at `position`.
    Accepted,
    /// The server already held this id (an earlier push of it): at `position`, with `sequence`.
    Held,
    /// Its aggregate moved on: see the answer's `conflicts`.
    Conflict,
    /// The token may not push its aggregate.
    Forbidden,
    /// Not written because another event of the request failed.
    NotApplied,
}

/// The answer for one pushed event, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    pub id: String,
    pub status: Status,
    /// The server's position (`accepted` and `held`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The sequence the server holds it at (`accepted` and `held`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// One aggregate of a refused push whose head is not what the device expected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub aggregate: WireSubject,
    /// The head the device expected (its first conflicting event's sequence - 1).
    pub expected: u64,
    /// The aggregate's head on the server.
    pub head: u64,
    /// The server's events of the aggregate after `expected`, in sequence
    /// order (empty when the token may not pull the aggregate).
    #[serde(deserialize_with = "remote_events")]
    pub events: Vec<WireEvent>,
    /// Whether there are more such events than `events` holds.
    pub more: bool,
}

/// The answer to a push: `200` when written, `409` with `conflicts`, `403`
/// with `forbidden` results; in every case one result per event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub log: String,
    pub results: Vec<EventResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtocolError>,
}

/// `GET /v1/pull` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullRequest {
    /// Items after this position (0: from the start).
    pub after: u64,
    /// Most items to answer with, 1..=[`MAX_PULL_LIMIT`].
    pub limit: usize,
    /// Seconds to hold the answer while nothing is visible, 0..=[`MAX_WAIT_SECONDS`].
    pub wait: u64,
}

impl PullRequest {
    /// Reads the query string (`after=12&limit=100&wait=20`, every key
    /// optional; `log` is read by [`pull_log`]). Unknown keys are refused.
    pub fn decode(query: &str) -> Result<Self, ProtocolError> {
        let mut request = PullRequest {
            after: 0,
            limit: MAX_PULL_LIMIT,
            wait: 0,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    ProtocolError::bad(format!(
                        "pull: {key} must be a non-negative integer, got {value:?}"
                    ))
                })
            };
            match key {
                "after" => request.after = number()?,
                "limit" => {
                    let n = number()?;
                    if n == 0 || n > MAX_PULL_LIMIT as u64 {
                        return Err(ProtocolError::bad(format!(
                            "pull: limit must be 1..={MAX_PULL_LIMIT}, got {n}"
                        )));
                    }
                    request.limit = n as usize;
                }
                "wait" => {
                    let n = number()?;
                    if n > MAX_WAIT_SECONDS {
                        return Err(ProtocolError::bad(format!(
                            "pull: wait must be 0..={MAX_WAIT_SECONDS} seconds, got {n}"
                        )));
                    }
                    request.wait = n;
                }
                "log" => {}
                _ => {
                    return Err(ProtocolError::bad(format!(
                        "pull: unknown parameter {key:?} (after, limit, wait, log)"
                    )))
                }
            }
        }
        Ok(request)
    }
}

/// The `log` parameter of a pull's query string, if any.
pub fn pull_log(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("log="))
        .filter(|v| !v.is_empty())
}

/// A forget as pulled: the server erased the payloads of `events` (ids)
/// at `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForgetItem {
    pub position: u64,
    /// The forget request's id.
    pub id: String,
    /// Ids of the events it erased (those the token may pull).
    pub events: Vec<String>,
}

/// One item of a pull, in position order.
#[derive(Debug, Clone)]
pub enum PullItem {
    Event(WireEvent),
    Forget(ForgetItem),
}

impl PullItem {
    /// The item's server position.
    pub fn position(&self) -> u64 {
        match self {
            PullItem::Event(e) => e.position.unwrap_or(0),
            PullItem::Forget(f) => f.position,
        }
    }
}

/// Items are objects with `"type": "event"` or `"type": "forget"`.
impl Serialize for PullItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            item: &'a T,
        }
        match self {
            PullItem::Event(item) => Tagged {
                kind: "event",
                item,
            }
            .serialize(s),
            PullItem::Forget(item) => Tagged {
                kind: "forget",
                item,
            }
            .serialize(s),
        }
    }
}

/// Every field an item of an answer may have, unknown ones ignored (a
/// server may add fields within a protocol version). A payload kept as raw
/// JSON text cannot go through serde's buffering of tagged enums, hence
/// one struct rather than a tagged enum.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    position: u64,
    id: String,
    aggregate: Option<WireSubject>,
    action: Option<WireSubject>,
    revision: Option<u16>,
    sequence: Option<u64>,
    created_at: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Box<RawValue>>,
    forgotten: Option<bool>,
    events: Option<Vec<String>>,
}

/// A present payload, `null` included (plain `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn need<T, E: de::Error>(v: Option<T>, key: &str) -> Result<T, E> {
    v.ok_or_else(|| E::custom(format!("an item lacks {key}")))
}

impl RawItem {
    fn event<E: de::Error>(self) -> Result<WireEvent, E> {
        Ok(WireEvent {
            id: self.id,
            aggregate: need(self.aggregate, "aggregate")?,
            action: need(self.action, "action")?,
            revision: need(self.revision, "revision")?,
            sequence: need(self.sequence, "sequence")?,
            created_at: need(self.created_at, "createdAt")?,
            payload: need(self.payload, "payload")?,
            forgotten: need(self.forgotten, "forgotten")?,
            position: Some(self.position),
        })
    }
}

/// The remote events of a conflict, read leniently like pull items.
fn remote_events<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WireEvent>, D::Error> {
    Vec::<RawItem>::deserialize(d)?
        .into_iter()
        .map(RawItem::event)
        .collect()
}

/// Items are objects with `"type": "event"` or `"type": "forget"`.
impl<'de> Deserialize<'de> for PullItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawItem::deserialize(d)?;
        match raw.kind.as_deref() {
            Some("event") => raw.event().map(PullItem::Event),
            Some("forget") => Ok(PullItem::Forget(ForgetItem {
                position: raw.position,
                id: raw.id,
                events: need(raw.events, "events")?,
            })),
            other => Err(de::Error::custom(format!("unknown item type {other:?}"))),
        }
    }
}

/// The answer to a pull.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    pub log: String,
    pub items: Vec<PullItem>,
    /// Where the next pull starts (`after=cursor`); past items the token may not see.
    pub cursor: u64,
    /// Whether the server holds items after `cursor` already.
    pub more: bool,
    /// The server's last position when it answered.
    pub head: u64,
}

/// A query of a forget's filter: the JavaScript filter's query shape plus
/// a `position` range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<WirePattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<WirePattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<WireRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<WireRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<WireRange>,
}

/// A half-open integer range `[from, to)` on the wire; either end optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

impl WireRange {
    fn range(self) -> Range<u64> {
        Range {
            from: self.from,
            to: self.to,
        }
    }
}

/// A forget's filter: queries OR-ed, empty = every event; no `limit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFilter {
    #[serde(default)]
    pub queries: Vec<WireQuery>,
}

/// A forget's filter in the core's terms (a core [`Filter`] without limit).
#[derive(Debug, Clone, Default)]
pub struct ForgetFilter {
    pub filter: Filter,
}

impl ForgetFilter {
    /// Whether an event, given by its fields, matches any query.
    pub fn matches(
        &self,
        aggregate: &str,
        action: &str,
        sequence: u64,
        created_at: u64,
        position: u64,
    ) -> bool {
        self.filter.matches_fields(&Fields {
            aggregate,
            action,
            sequence,
            position,
            created_at: created_at as f64,
        })
    }

    /// Where the candidates lie: for each query, a key range of the
    /// aggregate (preferred) or of the action; `None` when some query
    /// (or an empty filter) needs every event.
    pub fn candidates(&self) -> Option<Vec<(Column, KeyRange)>> {
        if self.filter.queries.is_empty() {
            return None;
        }
        self.filter
            .queries
            .iter()
            .map(|q| {
                let range = |p: &Option<Pattern>| p.as_ref().and_then(Pattern::key_range);
                range(&q.aggregate)
                    .map(|r| (Column::Aggregate, r))
                    .or_else(|| range(&q.subjects).map(|r| (Column::Action, r)))
            })
            .collect()
    }
}

/// A subject column of the server's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Aggregate,
    Action,
}

impl From<&WireFilter> for ForgetFilter {
    fn from(wire: &WireFilter) -> Self {
        let queries = wire
            .queries
            .iter()
            .map(|q| {
                let created = q.created_at.unwrap_or_default();
                Query {
                    subjects: q.subjects.clone().map(|p| p.0),
                    aggregate: q.aggregate.clone().map(|p| p.0),
                    sequence: q.sequence.unwrap_or_default().range(),
                    created_at: Range {
                        from: created.from.map(|v| v as f64),
                        to: created.to.map(|v| v as f64),
                    },
                    position: q.position.unwrap_or_default().range(),
                }
            })
            .collect();
        ForgetFilter {
            filter: Filter {
                queries,
                ..Filter::default()
            },
        }
    }
}

/// `POST /v1/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Chosen by the device (a UUID): a retry with the same id answers as the first time.
    pub id: String,
    pub filter: WireFilter,
}

/// The answer to a forget (the same for every retry of its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetResponse {
    pub log: String,
    pub id: String,
    /// The forget item's position in the log.
    pub position: u64,
    /// Ids of the events whose payloads it erased.
    pub events: Vec<String>,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoResponse {
    pub protocol: u32,
    pub log: String,
    pub head: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    pub error: ProtocolError,
}

fn too_large(what: &str, len: usize) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::TooLarge,
        format!("{what}: body of {len} bytes, at most {MAX_BODY_BYTES} allowed"),
    )
}

fn json<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, ProtocolError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large(what, body.len()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." || path == "?" {
            String::new()
        } else {
            format!(" at {path}")
        };
        ProtocolError::bad(format!("{what}{at}: {}", e.into_inner()))
    })?;
    de.end()
        .map_err(|e| ProtocolError::bad(format!("{what}: {e}")))?;
    Ok(value)
}

/// Decodes and validates a push body: at most [`MAX_PUSH_EVENTS`] events,
/// each valid, no id twice.
pub fn decode_push(body: &[u8]) -> Result<PushRequest, ProtocolError> {
    let request: PushRequest = json("push", body)?;
    if request.events.len() > MAX_PUSH_EVENTS {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "push: {} events, at most {MAX_PUSH_EVENTS} per push",
                request.events.len()
            ),
        ));
    }
    let mut ids = HashSet::new();
    for (i, event) in request.events.iter().enumerate() {
        let at = format!("push: events[{i}]");
        event.check(&at)?;
        if event.position.is_some() {
            return Err(ProtocolError::bad(format!(
                "{at}: a pushed event has no position (the server assigns it)"
            )));
        }
        if !ids.insert(event.id.as_str()) {
            return Err(ProtocolError::bad(format!(
                "{at}: id {:?} appears twice in one push",
                event.id
            )));
        }
    }
    Ok(request)
}

/// Decodes and validates a forget body.
pub fn decode_forget(body: &[u8]) -> Result<ForgetRequest, ProtocolError> {
    let request: ForgetRequest = json("forget", body)?;
    check_id(&request.id, "forget")?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, sequence: u64) -> String {
        format!(
            r#"{{"id":"{id}","aggregate":["user","A"],"action":"user.A.added","revision":1,"sequence":{sequence},"createdAt":5,"payload":{{"b":1,"a":[2.50,"x"]}},"forgotten":false}}"#
        )
    }

    #[test]
    fn decodes_a_push_keeping_payload_text() {
        let body = format!(r#"{{"events":[{},{}]}}"#, event("e1", 1), event("e2", 2));
        let push = decode_push(body.as_bytes()).unwrap();
        assert_eq!(push.events.len(), 2);
        assert_eq!(push.events[0].aggregate.0.as_str(), "user.A");
        assert_eq!(push.events[0].action.0.as_str(), "user.A.added");
        assert_eq!(push.events[1].payload.get(), r#"{"b":1,"a":[2.50,"x"]}"#);
        let out = serde_json::to_string(&push.events[0]).unwrap();
        assert!(out.contains(r#""aggregate":["user","A"]"#), "{out}");
        assert!(out.contains(r#""payload":{"b":1,"a":[2.50,"x"]}"#), "{out}");
    }

    #[test]
    fn refuses_bad_pushes_with_named_values() {
        let cases = [
            ("{", "push:"),
            (r#"{"events":[]," extra":1}"#, "unknown field"),
            (
                &format!(r#"{{"events":[{},{}]}}"#, event("e1", 1), event("e1", 2)),
                "appears twice",
            ),
            (
                &format!(r#"{{"events":[{}]}}"#, event("e1", 0)),
                "sequence must be 1",
            ),
            (&format!(r#"{{"events":[{}]}}"#, event("", 1)), "id must be"),
            (
                &format!(
                    r#"{{"events":[{}]}}"#,
                    event("e1", 1).replace("user.A.added", "user.*")
                ),
                "wildcard",
            ),
            (
                &format!(
                    r#"{{"events":[{}]}}"#,
                    event("e1", 1).replace(r#"["user","A"]"#, r#"["user","A.B"]"#)
                ),
                "invalid token",
            ),
            (
                &format!(
                    r#"{{"events":[{}]}}"#,
                    event("e1", 1).replace("false", "true")
                ),
                "payload must be null",
            ),
            (
                &format!(
                    r#"{{"events":[{}]}}"#,
                    event("e1", 1).replace(r#""revision":1"#, r#""revision":65536"#)
                ),
                "revision",
            ),
        ];
        for (body, needle) in cases {
            let err = decode_push(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{body}");
            assert!(err.message.contains(needle), "{body}: {}", err.message);
        }
    }

    #[test]
    fn bounds_pushes() {
        let events: Vec<String> = (0..=MAX_PUSH_EVENTS)
            .map(|i| event(&format!("e{i}"), 1))
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        assert_eq!(
            decode_push(body.as_bytes()).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(decode_push(&big).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn reads_pull_parameters() {
        assert_eq!(
            PullRequest::decode("after=7&limit=10&wait=30&log=x").unwrap(),
            PullRequest {
                after: 7,
                limit: 10,
                wait: 30
            }
        );
        assert_eq!(PullRequest::decode("").unwrap().limit, MAX_PULL_LIMIT);
        for bad in [
            "after=-1",
            "limit=0",
            "limit=1001",
            "wait=31",
            "x=1",
            "after=1.5",
        ] {
            assert_eq!(
                PullRequest::decode(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_eq!(pull_log("after=1&log=abc"), Some("abc"));
    }

    #[test]
    fn pull_items_round_trip_with_their_tag() {
        let mut e: WireEvent = serde_json::from_str(&event("e1", 1)).unwrap();
        e.position = Some(3);
        let items = vec![
            PullItem::Event(e),
            PullItem::Forget(ForgetItem {
                position: 4,
                id: "f".into(),
                events: vec!["e1".into()],
            }),
        ];
        let text = serde_json::to_string(&items).unwrap();
        assert!(text.starts_with(r#"[{"type":"event","id":"e1""#), "{text}");
        assert!(text.contains(r#"{"type":"forget","position":4"#), "{text}");
        let back: Vec<PullItem> = serde_json::from_str(&text).unwrap();
        assert_eq!(back[0].position(), 3);
        assert_eq!(back[1].position(), 4);
        // Answers may gain fields within a version; a client ignores them.
        let newer = text.replace(r#""type":"event","#, r#""type":"event","later":1,"#);
        let back: Vec<PullItem> = serde_json::from_str(&newer).unwrap();
        match &back[0] {
            PullItem::Event(e) => assert_eq!(e.payload.get(), r#"{"b":1,"a":[2.50,"x"]}"#),
            other => panic!("{other:?}"),
        }
        let conflict = format!(
            r#"{{"aggregate":"user.A","expected":0,"head":1,"events":[{}],"more":false,"later":true}}"#,
            event("e1", 1).replace(r#""id""#, r#""position":1,"later":2,"id""#)
        );
        let c: Conflict = serde_json::from_str(&conflict).unwrap();
        assert_eq!(c.events[0].position, Some(1));
    }

    #[test]
    fn forget_filters_match_positions_too() {
        let request = decode_forget(
            br#"{"id":"f1","filter":{"queries":[{"aggregate":"user.A","position":{"from":2,"to":4}}]}}"#,
        )
        .unwrap();
        let filter = ForgetFilter::from(&request.filter);
        assert!(filter.matches("user.A", "user.A.x", 1, 0, 2));
        assert!(!filter.matches("user.A", "user.A.x", 1, 0, 4));
        assert!(!filter.matches("user.B", "user.B.x", 1, 0, 3));
        assert_eq!(
            filter.candidates(),
            Some(vec![(Column::Aggregate, KeyRange::Exact("user.A".into()))])
        );
        let scan = decode_forget(
            br#"{"id":"f","filter":{"queries":[{"aggregate":"user.A"},{"subjects":"*.x"}]}}"#,
        )
        .unwrap();
        assert_eq!(ForgetFilter::from(&scan.filter).candidates(), None);
        let actions =
            decode_forget(br#"{"id":"f","filter":{"queries":[{"subjects":"user.>"}]}}"#).unwrap();
        assert_eq!(
            ForgetFilter::from(&actions.filter).candidates(),
            Some(vec![(Column::Action, KeyRange::Prefix("user.".into()))])
        );
        assert!(decode_forget(br#"{"id":"f1","filter":{"limit":3}}"#).is_err());
        assert!(decode_forget(br#"{"id":"","filter":{}}"#).is_err());
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ALL_CODES {
            let text = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&text).unwrap(), code);
        }
    }
}
