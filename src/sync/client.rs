//! The device's side of a push, pure: how pending events are cut into
//! pushes within the protocol's limits, and what each answer means for
//! each pending event (docs/sync-protocol.md, sections 5 and 13). A client
//! does the fetch and the storage around these.

use std::ops::Range;

use super::protocol::{
    ErrorCode, PushResponse, Status, WireEvent, MAX_BODY_BYTES, MAX_PUSH_EVENTS,
};

/// Room left in a body for `{"log":"…","events":[…]}` around the events.
const ENVELOPE_BYTES: usize = 256;

/// Cuts pending events (in local order) into consecutive pushes of at most
/// [`MAX_PUSH_EVENTS`] events and [`MAX_BODY_BYTES`] of JSON. An event too
/// large for any push gets a push of its own (the server will answer
/// `TOO_LARGE`, which the caller reports).
pub fn pushes(events: &[WireEvent]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = ENVELOPE_BYTES;
    for (i, e) in events.iter().enumerate() {
        let size = serde_json::to_string(e).map_or(0, |s| s.len()) + 1;
        let full = i - start == MAX_PUSH_EVENTS || bytes + size > MAX_BODY_BYTES;
        if i > start && full {
            out.push(start..i);
            start = i;
            bytes = ENVELOPE_BYTES;
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

/// What a pending event becomes after a push answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Synced: the server holds it at `position`, with `sequence` (which
    /// differs from the pushed one only if the device's copy is stale).
    Synced { position: u64, sequence: u64 },
    /// Its aggregate moved on: rebase or discard, then push again.
    Conflict,
    /// Not applied because of another event: push it again unchanged.
    Again,
    /// Refused for this reason (`FORBIDDEN`, ...): stays pending, reported.
    Refused(ErrorCode),
}

/// Reads a push answer (its HTTP status and decoded body) into one
/// [`Settled`] per result, in request order, by event id.
pub fn settle(status: u16, answer: &PushResponse) -> Vec<(String, Settled)> {
    let refused = answer
        .error
        .as_ref()
        .map_or(ErrorCode::Internal, |e| e.code);
    answer
        .results
        .iter()
        .map(|r| {
            let settled = match (r.status, r.position, r.sequence) {
                (Status::Accepted | Status::Held, Some(position), Some(sequence)) => {
                    Settled::Synced { position, sequence }
                }
                (Status::Conflict, _, _) => Settled::Conflict,
                (Status::NotApplied, _, _) if status == 409 => Settled::Again,
                (Status::Forbidden, _, _) => Settled::Refused(ErrorCode::Forbidden),
                _ => Settled::Refused(refused),
            };
            (r.id.clone(), settled)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::protocol::{EventResult, ProtocolError};

    fn event(id: &str, payload_bytes: usize) -> WireEvent {
        serde_json::from_value(serde_json::json!({
            "id": id, "aggregate": "a.A", "action": "a.A.x", "revision": 1, "sequence": 1,
            "createdAt": 0, "payload": "x".repeat(payload_bytes), "forgotten": false,
        }))
        .unwrap()
    }

    #[test]
    fn pushes_stay_within_the_limits() {
        let many: Vec<WireEvent> = (0..2_500).map(|i| event(&format!("e{i}"), 1)).collect();
        assert_eq!(pushes(&many), [0..1_000, 1_000..2_000, 2_000..2_500]);
        let big: Vec<WireEvent> = (0..5).map(|i| event(&format!("b{i}"), 1_500_000)).collect();
        assert_eq!(pushes(&big), [0..2, 2..4, 4..5]);
        let huge = [event("h", MAX_BODY_BYTES), event("s", 1)];
        assert_eq!(pushes(&huge), [0..1, 1..2]);
        assert!(pushes(&[]).is_empty());
    }

    #[test]
    fn answers_settle_each_event() {
        let result = |id: &str, status, position: Option<u64>| EventResult {
            id: id.into(),
            status,
            position,
            sequence: position.map(|_| 1),
        };
        let ok = PushResponse {
            log: "l".into(),
            results: vec![
                result("a", Status::Accepted, Some(3)),
                result("b", Status::Held, Some(1)),
            ],
            conflicts: vec![],
            error: None,
        };
        assert_eq!(
            settle(200, &ok)[1],
            (
                "b".into(),
                Settled::Synced {
                    position: 1,
                    sequence: 1
                }
            )
        );
        let conflict = PushResponse {
            results: vec![
                result("a", Status::NotApplied, None),
                result("b", Status::Conflict, None),
            ],
            error: Some(ProtocolError::new(ErrorCode::Conflict, "moved on")),
            ..ok.clone()
        };
        let s: Vec<Settled> = settle(409, &conflict).into_iter().map(|x| x.1).collect();
        assert_eq!(s, [Settled::Again, Settled::Conflict]);
        let forbidden = PushResponse {
            results: vec![
                result("a", Status::NotApplied, None),
                result("b", Status::Forbidden, None),
            ],
            error: Some(ProtocolError::new(ErrorCode::Forbidden, "no")),
            ..ok
        };
        let s: Vec<Settled> = settle(403, &forbidden).into_iter().map(|x| x.1).collect();
        assert_eq!(
            s,
            [
                Settled::Refused(ErrorCode::Forbidden),
                Settled::Refused(ErrorCode::Forbidden)
            ]
        );
    }
}
