//! The rules of sync, pure: who may do what (tokens and their aggregate
//! patterns), how a push is settled against the aggregates' heads and the
//! ids the server holds, what a pull shows a token, and how a device
//! re-sequences conflicting events. A server applies them inside its
//! database transaction; nothing here does I/O.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::protocol::{
    Conflict, ErrorCode, EventResult, ForgetItem, ProtocolError, PullItem, Status, WireEvent,
    WirePattern, WireSubject,
};
use crate::subject::{Pattern, Subject};

/// What a request does, for the token's patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Push,
    Pull,
    Forget,
}

impl Operation {
    /// Lower-case name, as in the auth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Push => "push",
            Operation::Pull => "pull",
            Operation::Forget => "forget",
        }
    }
}

/// The aggregates a token may push, pull and forget.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub push: Vec<Pattern>,
    pub pull: Vec<Pattern>,
    pub forget: Vec<Pattern>,
}

impl Scope {
    /// Every aggregate for every operation (a server without an auth file).
    pub fn everything() -> Self {
        let all = || Pattern::parse(">").into_iter().collect::<Vec<_>>();
        Scope {
            push: all(),
            pull: all(),
            forget: all(),
        }
    }

    /// Whether `operation` is allowed on the aggregate (dotted form).
    pub fn allows(&self, operation: Operation, aggregate: &str) -> bool {
        let patterns = match operation {
            Operation::Push => &self.push,
            Operation::Pull => &self.pull,
            Operation::Forget => &self.forget,
        };
        patterns.iter().any(|p| p.matches(aggregate))
    }
}

/// The `--auth` file: `{ "tokens": [ { "token", "push", "pull", "forget" } ] }`.
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, Scope>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    #[serde(default)]
    push: Vec<WirePattern>,
    #[serde(default)]
    pull: Vec<WirePattern>,
    #[serde(default)]
    forget: Vec<WirePattern>,
}

impl Tokens {
    /// Reads an auth file's JSON; tokens must be non-empty and distinct.
    pub fn parse(json: &str) -> Result<Self, String> {
        let file: AuthFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut tokens = HashMap::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            if entry.token.trim().is_empty() {
                return Err(format!("tokens[{i}]: the token is empty"));
            }
            let patterns = |v: Vec<WirePattern>| v.into_iter().map(|p| p.0).collect();
            let scope = Scope {
                push: patterns(entry.push),
                pull: patterns(entry.pull),
                forget: patterns(entry.forget),
            };
            if tokens.insert(entry.token, scope).is_some() {
                return Err(format!("tokens[{i}]: the same token appears twice"));
            }
        }
        Ok(Tokens(tokens))
    }

    /// The scope of a token, if the file holds it.
    pub fn scope(&self, token: &str) -> Option<&Scope> {
        self.0.get(token)
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads `Authorization: Bearer <token>` (the scheme case-insensitively).
pub fn bearer(header: Option<&str>) -> Result<&str, ProtocolError> {
    let header = header.ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::Unauthorized,
            "no Authorization header: send `Authorization: Bearer <token>`",
        )
    })?;
    match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ProtocolError::new(
            ErrorCode::Unauthorized,
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

/// An event the server already holds, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub position: u64,
    pub sequence: u64,
}

/// Where a pushed event's aggregate is not where the device expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictAt {
    pub aggregate: Subject,
    /// The head the device expected: its first conflicting event's sequence - 1.
    pub expected: u64,
    /// The head the server holds.
    pub head: u64,
}

/// How a push is settled once the server knows the held ids and the heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushPlan {
    /// Write these events (indices into the request, in order), each at its sequence.
    Write(Vec<usize>),
    /// Write nothing: these aggregates moved on.
    Conflict(Vec<ConflictAt>),
}

/// Indices of the events whose aggregate the scope may not push.
pub fn forbidden(events: &[WireEvent], scope: &Scope) -> Vec<usize> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| !scope.allows(Operation::Push, e.aggregate.0.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// The distinct aggregates of the events not held, in first-seen order:
/// whose heads the server reads (after taking its append lock).
pub fn aggregates_to_check<'a>(
    events: &'a [WireEvent],
    held: &HashMap<String, Held>,
) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for e in events.iter().filter(|e| !held.contains_key(&e.id)) {
        let a = e.aggregate.0.as_str();
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    seen
}

/// Settles a push: events whose id is held are dropped (answered `held`);
/// every other event must take its aggregate's head + 1 at its point of
/// the request, its aggregate's head being `heads` (0 when absent) plus the
/// events of the request before it. Any mismatch refuses the whole push.
pub fn plan_push(
    events: &[WireEvent],
    held: &HashMap<String, Held>,
    heads: &HashMap<String, u64>,
) -> PushPlan {
    let mut at: HashMap<&str, u64> = HashMap::new();
    let mut conflicts: Vec<ConflictAt> = Vec::new();
    let mut write = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if held.contains_key(&e.id) {
            continue;
        }
        let aggregate = e.aggregate.0.as_str();
        if conflicts.iter().any(|c| c.aggregate.as_str() == aggregate) {
            continue;
        }
        let head = at
            .entry(aggregate)
            .or_insert_with(|| heads.get(aggregate).copied().unwrap_or(0));
        if e.sequence == *head + 1 {
            *head += 1;
            write.push(i);
        } else {
            conflicts.push(ConflictAt {
                aggregate: e.aggregate.0.clone(),
                expected: e.sequence.saturating_sub(1),
                head: heads.get(aggregate).copied().unwrap_or(0),
            });
        }
    }
    if conflicts.is_empty() {
        PushPlan::Write(write)
    } else {
        PushPlan::Conflict(conflicts)
    }
}

/// One result per event of a push that was written: `written[k]` took
/// position `first_position + k`.
pub fn accepted_results(
    events: &[WireEvent],
    held: &HashMap<String, Held>,
    written: &[usize],
    first_position: u64,
) -> Vec<EventResult> {
    let positions: HashMap<usize, u64> = written
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, first_position + k as u64))
        .collect();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| match (held.get(&e.id), positions.get(&i)) {
            (Some(h), _) => result(e, Status::Held, Some(h.position), Some(h.sequence)),
            (None, Some(&p)) => result(e, Status::Accepted, Some(p), Some(e.sequence)),
            (None, None) => result(e, Status::NotApplied, None, None),
        })
        .collect()
}

/// One result per event of a push refused for conflicts.
pub fn conflict_results(
    events: &[WireEvent],
    held: &HashMap<String, Held>,
    conflicts: &[ConflictAt],
) -> Vec<EventResult> {
    events
        .iter()
        .map(|e| {
            if let Some(h) = held.get(&e.id) {
                result(e, Status::Held, Some(h.position), Some(h.sequence))
            } else if conflicts.iter().any(|c| c.aggregate == e.aggregate.0) {
                result(e, Status::Conflict, None, None)
            } else {
                result(e, Status::NotApplied, None, None)
            }
        })
        .collect()
}

/// One result per event of a push refused because some are `forbidden`.
pub fn forbidden_results(events: &[WireEvent], forbidden: &[usize]) -> Vec<EventResult> {
    let forbidden: HashSet<usize> = forbidden.iter().copied().collect();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let status = if forbidden.contains(&i) {
                Status::Forbidden
            } else {
                Status::NotApplied
            };
            result(e, status, None, None)
        })
        .collect()
}

fn result(
    e: &WireEvent,
    status: Status,
    position: Option<u64>,
    sequence: Option<u64>,
) -> EventResult {
    EventResult {
        id: e.id.clone(),
        status,
        position,
        sequence,
    }
}

/// Cuts a conflict's remote events to what the answer carries: nothing
/// when the token may not pull the aggregate, else at most `cap`.
pub fn conflict_answer(
    at: &ConflictAt,
    mut remote: Vec<WireEvent>,
    scope: &Scope,
    cap: usize,
) -> Conflict {
    let visible = scope.allows(Operation::Pull, at.aggregate.as_str());
    if !visible {
        remote.clear();
    }
    let more = !visible || remote.len() > cap;
    remote.truncate(cap);
    Conflict {
        aggregate: WireSubject(at.aggregate.clone()),
        expected: at.expected,
        head: at.head,
        events: remote,
        more,
    }
}

/// A forget as the server keeps it: the erased events with their aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetRecord {
    pub position: u64,
    pub id: String,
    /// (event id, aggregate) of every event it erased.
    pub events: Vec<(String, String)>,
}

/// A row of the server's log, as a pull reads it.
#[derive(Debug, Clone)]
pub enum LogRow {
    Event(WireEvent),
    Forget(ForgetRecord),
}

impl LogRow {
    fn position(&self) -> u64 {
        match self {
            LogRow::Event(e) => e.position.unwrap_or(0),
            LogRow::Forget(f) => f.position,
        }
    }
}

/// What a token sees of a row: its events of aggregates it may pull, its
/// forgets narrowed to such events (none when nothing is left).
pub fn visible(row: LogRow, scope: &Scope) -> Option<PullItem> {
    match row {
        LogRow::Event(e) => scope
            .allows(Operation::Pull, e.aggregate.0.as_str())
            .then_some(PullItem::Event(e)),
        LogRow::Forget(f) => {
            let events: Vec<String> = f
                .events
                .into_iter()
                .filter(|(_, aggregate)| scope.allows(Operation::Pull, aggregate))
                .map(|(id, _)| id)
                .collect();
            (!events.is_empty()).then_some(PullItem::Forget(ForgetItem {
                position: f.position,
                id: f.id,
                events,
            }))
        }
    }
}

/// One page of a pull.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<PullItem>,
    /// Where the next pull starts.
    pub cursor: u64,
    /// Whether rows after `cursor` were left unread.
    pub more: bool,
    /// About how many bytes the items take (payloads and ids).
    pub bytes: usize,
}

/// About how many bytes an item adds to an answer.
fn item_bytes(item: &PullItem) -> usize {
    match item {
        PullItem::Event(e) => 200 + e.id.len() + e.payload.get().len(),
        PullItem::Forget(f) => 50 + f.events.iter().map(|id| id.len() + 3).sum::<usize>(),
    }
}

/// Builds a page from `rows` (in position order, after `after`), keeping
/// what the scope sees: at most `limit` items, and no item after the one
/// that brings their size to `max_bytes` (a page has at least one item
/// when any is visible). `cut` says the rows were cut by the server's
/// scan (rows after the last one exist). The cursor moves over unseen
/// rows, so a token that sees little does not read the same rows again.
pub fn page(
    rows: Vec<LogRow>,
    after: u64,
    scope: &Scope,
    limit: usize,
    max_bytes: usize,
    cut: bool,
) -> Page {
    let mut items = Vec::new();
    let mut cursor = after;
    let mut bytes = 0;
    let total = rows.len();
    for (k, row) in rows.into_iter().enumerate() {
        cursor = row.position();
        if let Some(item) = visible(row, scope) {
            bytes += item_bytes(&item);
            items.push(item);
            if items.len() >= limit || bytes >= max_bytes {
                return Page {
                    items,
                    cursor,
                    more: k + 1 < total || cut,
                    bytes,
                };
            }
        }
    }
    Page {
        items,
        cursor,
        more: cut,
        bytes,
    }
}

/// The first aggregate (dotted) the scope may not forget, if any.
pub fn forget_forbidden<'a>(
    aggregates: impl IntoIterator<Item = &'a str>,
    scope: &Scope,
) -> Option<&'a str> {
    aggregates
        .into_iter()
        .find(|a| !scope.allows(Operation::Forget, a))
}

/// Rebase for a device: its pending events of one aggregate, re-sequenced
/// after the remote head, keeping ids, actions and payloads.
pub fn rebase(pending: &[WireEvent], remote_head: u64) -> Vec<WireEvent> {
    pending
        .iter()
        .enumerate()
        .map(|(k, e)| WireEvent {
            sequence: remote_head + 1 + k as u64,
            position: None,
            ..e.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn ev(id: &str, aggregate: &str, sequence: u64) -> WireEvent {
        WireEvent {
            id: id.into(),
            aggregate: WireSubject(Subject::parse(aggregate).unwrap()),
            action: WireSubject(Subject::parse(&format!("{aggregate}.x")).unwrap()),
            revision: 1,
            sequence,
            created_at: 0,
            payload: RawValue::from_string("{}".into()).unwrap(),
            forgotten: false,
            position: None,
        }
    }

    fn heads(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(a, h)| (a.to_string(), *h)).collect()
    }

    #[test]
    fn a_push_follows_each_head_in_request_order() {
        let events = [ev("a1", "u.A", 3), ev("b1", "u.B", 1), ev("a2", "u.A", 4)];
        let plan = plan_push(&events, &HashMap::new(), &heads(&[("u.A", 2)]));
        assert_eq!(plan, PushPlan::Write(vec![0, 1, 2]));
        let results = accepted_results(&events, &HashMap::new(), &[0, 1, 2], 10);
        assert_eq!(results[2].position, Some(12));
        assert!(results.iter().all(|r| r.status == Status::Accepted));
    }

    #[test]
    fn a_stale_or_gapped_sequence_refuses_everything() {
        let events = [ev("b1", "u.B", 1), ev("a1", "u.A", 2), ev("a2", "u.A", 3)];
        let plan = plan_push(&events, &HashMap::new(), &heads(&[("u.A", 4)]));
        let conflicts = vec![ConflictAt {
            aggregate: Subject::parse("u.A").unwrap(),
            expected: 1,
            head: 4,
        }];
        assert_eq!(plan, PushPlan::Conflict(conflicts.clone()));
        let results = conflict_results(&events, &HashMap::new(), &conflicts);
        let statuses: Vec<Status> = results.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [Status::NotApplied, Status::Conflict, Status::Conflict]
        );
        // A gap (expecting a head the server has not reached) conflicts too.
        let gap = plan_push(&[ev("c", "u.C", 3)], &HashMap::new(), &HashMap::new());
        assert!(matches!(gap, PushPlan::Conflict(c) if c[0].expected == 2 && c[0].head == 0));
    }

    #[test]
    fn held_ids_are_answered_held_and_not_written_again() {
        let events = [ev("a1", "u.A", 1), ev("a2", "u.A", 2)];
        let held: HashMap<String, Held> = [(
            "a1".to_string(),
            Held {
                position: 7,
                sequence: 1,
            },
        )]
        .into();
        let plan = plan_push(&events, &held, &heads(&[("u.A", 1)]));
        assert_eq!(plan, PushPlan::Write(vec![1]));
        assert_eq!(aggregates_to_check(&events, &held), ["u.A"]);
        let results = accepted_results(&events, &held, &[1], 9);
        assert_eq!(results[0].status, Status::Held);
        assert_eq!(results[0].position, Some(7));
        assert_eq!(results[1].status, Status::Accepted);
        assert_eq!(results[1].position, Some(9));
    }

    #[test]
    fn scopes_limit_each_operation_by_aggregate() {
        let tokens = Tokens::parse(
            r#"{"tokens":[{"token":"t","push":["user.A.>", "user.A"],"pull":["user.>"],"forget":[]}]}"#,
        )
        .unwrap();
        let scope = tokens.scope("t").unwrap();
        assert!(scope.allows(Operation::Push, "user.A"));
        assert!(!scope.allows(Operation::Push, "user.B"));
        assert!(scope.allows(Operation::Pull, "user.B"));
        assert!(!scope.allows(Operation::Forget, "user.A"));
        let events = [ev("1", "user.A", 1), ev("2", "user.B", 1)];
        assert_eq!(forbidden(&events, scope), [1]);
        let results = forbidden_results(&events, &[1]);
        assert_eq!(results[0].status, Status::NotApplied);
        assert_eq!(results[1].status, Status::Forbidden);
        assert!(Tokens::parse(r#"{"tokens":[{"token":"t"},{"token":"t"}]}"#).is_err());
        assert!(Tokens::parse(r#"{"tokens":[{"token":"t","push":["a.>.b"]}]}"#).is_err());
        assert!(Tokens::parse(r#"{"tokens":[{"token":"","push":[]}]}"#).is_err());
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer abc")).unwrap(), "abc");
        for bad in [None, Some("Basic abc"), Some("Bearer "), Some("abc")] {
            assert_eq!(bearer(bad).unwrap_err().code, ErrorCode::Unauthorized);
        }
    }

    #[test]
    fn pulls_show_only_visible_rows_and_move_past_the_rest() {
        let scope = Scope {
            pull: vec![Pattern::parse("u.A").unwrap()],
            ..Scope::default()
        };
        let row = |id: &str, aggregate: &str, position: u64| {
            let mut e = ev(id, aggregate, 1);
            e.position = Some(position);
            LogRow::Event(e)
        };
        let forget = LogRow::Forget(ForgetRecord {
            position: 4,
            id: "f".into(),
            events: vec![("a".into(), "u.A".into()), ("b".into(), "u.B".into())],
        });
        let rows = vec![
            row("a", "u.A", 1),
            row("b", "u.B", 2),
            row("c", "u.B", 3),
            forget,
        ];
        let p = page(rows.clone(), 0, &scope, 10, usize::MAX, false);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.cursor, 4);
        assert!(!p.more);
        match &p.items[1] {
            PullItem::Forget(f) => assert_eq!(f.events, ["a"]),
            other => panic!("{other:?}"),
        }
        let p = page(rows.clone(), 0, &scope, 1, usize::MAX, false);
        assert_eq!((p.items.len(), p.cursor, p.more), (1, 1, true));
        let p = page(rows[1..3].to_vec(), 1, &scope, 10, usize::MAX, true);
        assert_eq!((p.items.len(), p.cursor, p.more), (0, 3, true));
        let p = page(Vec::new(), 9, &scope, 10, usize::MAX, false);
        assert_eq!((p.cursor, p.more), (9, false));
        // A byte budget ends the page after the item that reaches it.
        let p = page(rows.clone(), 0, &scope, 10, 1, false);
        assert_eq!((p.items.len(), p.cursor, p.more), (1, 1, true));
    }

    #[test]
    fn conflicts_carry_visible_remote_events_capped() {
        let at = ConflictAt {
            aggregate: Subject::parse("u.A").unwrap(),
            expected: 0,
            head: 3,
        };
        let remote = vec![ev("1", "u.A", 1), ev("2", "u.A", 2), ev("3", "u.A", 3)];
        let c = conflict_answer(&at, remote.clone(), &Scope::everything(), 2);
        assert_eq!((c.events.len(), c.more), (2, true));
        let c = conflict_answer(&at, remote.clone(), &Scope::everything(), 5);
        assert_eq!((c.events.len(), c.more), (3, false));
        let c = conflict_answer(&at, remote, &Scope::default(), 5);
        assert_eq!((c.events.len(), c.more), (0, true));
        assert_eq!(c.aggregate.0.as_str(), "u.A");
    }

    #[test]
    fn rebase_keeps_ids_and_follows_the_remote_head() {
        let pending = [ev("p1", "u.A", 1), ev("p2", "u.A", 2)];
        let rebased = rebase(&pending, 5);
        assert_eq!(rebased[0].id, "p1");
        assert_eq!((rebased[0].sequence, rebased[1].sequence), (6, 7));
        assert_eq!(
            plan_push(&rebased, &HashMap::new(), &heads(&[("u.A", 5)])),
            PushPlan::Write(vec![0, 1])
        );
    }
}
