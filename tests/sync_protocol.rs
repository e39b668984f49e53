//! Property tests of the sync protocol: the request decoders never panic,
//! whatever the bytes; valid messages round-trip; a push is settled the
//! way a naive model of the rules says.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use eventstore_wasm::sync::protocol::{
    decode_forget, decode_push, ErrorCode, PullRequest, PullResponse, WireEvent,
};
use eventstore_wasm::sync::rules::{plan_push, rebase, Held, PushPlan};
use proptest::prelude::*;
use serde_json::{json, Value};

/// JSON values built from the protocol's own vocabulary, so that the
/// decoders get deep into their checks.
fn value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("events"),
        Just("id"),
        Just("aggregate"),
        Just("action"),
        Just("revision"),
        Just("sequence"),
        Just("createdAt"),
        Just("payload"),
        Just("forgotten"),
        Just("position"),
        Just("log"),
        Just("filter"),
        Just("queries"),
        Just("subjects"),
        Just("from"),
        Just("to"),
        Just("limit"),
        Just("type"),
        Just("items"),
        Just("x"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z.*> ]{0,12}".prop_map(Value::from),
        Just(json!(["user", "A"])),
        Just(json!("user.A.added")),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_-]{1,6}", "[a-z\u{e9}\u{4e2d}\"\\\\/]{1,3}"]
}

fn subject() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(token(), 1..4)
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::from),
        prop::collection::btree_map("[a-z]{1,3}", any::<i16>(), 0..4).prop_map(|m| json!(m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_push(&bytes);
        let _ = decode_forget(&bytes);
        let _ = serde_json::from_slice::<PullResponse>(&bytes);
        let _ = PullRequest::decode(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn decoders_never_panic_on_json(v in value()) {
        let text = v.to_string();
        let _ = decode_push(text.as_bytes());
        let _ = decode_forget(text.as_bytes());
        let _ = serde_json::from_str::<PullResponse>(&text);
        let wrapped = json!({ "events": [v.clone()] }).to_string();
        if let Err(e) = decode_push(wrapped.as_bytes()) {
            prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge));
            prop_assert!(!e.message.is_empty());
        }
        let forget = json!({ "id": "f", "filter": { "queries": [v] } }).to_string();
        let _ = decode_forget(forget.as_bytes());
    }

    #[test]
    fn valid_events_round_trip(
        id in "[a-z0-9-]{1,40}",
        aggregate in subject(),
        action in subject(),
        revision in any::<u16>(),
        sequence in 1u64..(1 << 53),
        created_at in 0u64..(1 << 53),
        payload in payload(),
        dotted in any::<bool>(),
    ) {
        let subject = |tokens: &Vec<String>| if dotted { json!(tokens.join(".")) } else { json!(tokens) };
        let body = json!({ "events": [ {
            "id": id, "aggregate": subject(&aggregate), "action": subject(&action),
            "revision": revision, "sequence": sequence, "createdAt": created_at,
            "payload": payload, "forgotten": false,
        } ] });
        let push = decode_push(body.to_string().as_bytes()).unwrap();
        let e = &push.events[0];
        prop_assert_eq!(e.aggregate.0.as_str(), aggregate.join("."));
        prop_assert_eq!(e.action.0.as_str(), action.join("."));
        prop_assert_eq!((e.revision, e.sequence, e.created_at), (revision, sequence, created_at));
        let back: Value = serde_json::from_str(e.payload.get()).unwrap();
        prop_assert_eq!(&back, &payload);
        let again: WireEvent = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        prop_assert_eq!(again.payload.get(), e.payload.get());
        prop_assert_eq!(again.aggregate, e.aggregate.clone());
    }

    /// `plan_push` agrees with a naive model: walk the events, skip held
    /// ids, each must be its aggregate's head + 1.
    #[test]
    fn push_plans_follow_the_heads(
        events in prop::collection::vec((0usize..3, 1u64..5, 0usize..8), 0..8),
        heads in prop::collection::vec(0u64..4, 3),
        held in prop::collection::hash_set(0usize..8, 0..3),
    ) {
        let names = ["a.A", "a.B", "a.C"];
        let mut wire = Vec::new();
        for (k, (agg, seq, _)) in events.iter().enumerate() {
            wire.push(ev(&format!("e{k}"), names[*agg], *seq));
        }
        let held: HashMap<String, Held> = held
            .iter()
            .filter(|k| **k < wire.len())
            .map(|k| (format!("e{k}"), Held { position: 1, sequence: 1 }))
            .collect();
        let head_map: HashMap<String, u64> =
            names.iter().zip(&heads).map(|(n, h)| (n.to_string(), *h)).collect();
        let mut model = head_map.clone();
        let mut ok = true;
        let mut written = Vec::new();
        for (k, e) in wire.iter().enumerate() {
            if held.contains_key(&e.id) {
                continue;
            }
            let h = model.get_mut(e.aggregate.0.as_str()).unwrap();
            if e.sequence == *h + 1 {
                *h += 1;
                written.push(k);
            } else {
                ok = false;
            }
        }
        match plan_push(&wire, &held, &head_map) {
            PushPlan::Write(w) => {
                prop_assert!(ok);
                prop_assert_eq!(w, written);
            }
            PushPlan::Conflict(c) => {
                prop_assert!(!ok);
                prop_assert!(!c.is_empty());
                for at in c {
                    prop_assert_eq!(at.head, head_map[at.aggregate.as_str()]);
                }
            }
        }
    }
}

fn ev(id: &str, aggregate: &str, sequence: u64) -> WireEvent {
    serde_json::from_value(json!({
        "id": id, "aggregate": aggregate, "action": format!("{aggregate}.x"), "revision": 1,
        "sequence": sequence, "createdAt": 0, "payload": {}, "forgotten": false,
    }))
    .unwrap()
}

#[test]
fn a_rebased_conflict_goes_through() {
    let pending = [ev("p1", "a.A", 1), ev("p2", "a.A", 2)];
    let heads: HashMap<String, u64> = [("a.A".to_string(), 3)].into();
    assert!(matches!(
        plan_push(&pending, &HashMap::new(), &heads),
        PushPlan::Conflict(_)
    ));
    let rebased = rebase(&pending, 3);
    assert_eq!(
        plan_push(&rebased, &HashMap::new(), &heads),
        PushPlan::Write(vec![0, 1])
    );
}
