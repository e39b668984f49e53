//! Property tests: the subject grammar round-trips, the matcher agrees with
//! a naive reference, index planning never loses a match.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use eventstore_wasm::filter::{Filter, Query, Range};
use eventstore_wasm::subject::{Pattern, Subject};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_\\-]{1,8}",
        "[a-z\u{e9}\u{4e2d}\u{1f600}\"\\\\/]{1,4}",
    ]
}

/// Tokens from a tiny alphabet, so that patterns and subjects often meet.
fn small_subject() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "ab"]).prop_map(String::from),
        1..5,
    )
}

fn small_pattern() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "ab", "*"]).prop_map(String::from),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_filter_map("non-empty", |(mut t, rest)| {
            if rest {
                t.push(">".into());
            }
            (!t.is_empty()).then_some(t)
        })
}

/// The definition of NATS matching, written the obvious recursive way.
fn reference(pattern: &[String], subject: &[String]) -> bool {
    match (pattern.first().map(String::as_str), subject.first()) {
        (None, None) => true,
        (Some(">"), Some(_)) => true,
        (Some("*"), Some(_)) => reference(&pattern[1..], &subject[1..]),
        (Some(p), Some(s)) if p == s => reference(&pattern[1..], &subject[1..]),
        _ => false,
    }
}

proptest! {
    #[test]
    fn subjects_round_trip(tokens in prop::collection::vec(token(), 1..=32)) {
        let s = Subject::from_tokens(&tokens).unwrap();
        prop_assert_eq!(s.as_str(), tokens.join("."));
        prop_assert_eq!(Subject::parse(s.as_str()).unwrap(), s.clone());
        prop_assert_eq!(s.tokens().map(String::from).collect::<Vec<_>>(), tokens);
    }

    #[test]
    fn bad_tokens_are_rejected(good in token(), bad in "[a-z]{0,3}[.*> \t\n][a-z]{0,3}") {
        prop_assert_eq!(Subject::from_tokens(&[good.clone(), bad.clone()]).unwrap_err().code(), "INVALID_SUBJECT");
        if bad != "*" && bad != ">" {
            prop_assert!(Pattern::from_tokens(&[good, bad]).is_err());
        }
    }

    /// Outside input never panics the parsers or the record decoder.
    #[test]
    fn parsers_take_any_input(text in "\\PC{0,64}", tokens in prop::collection::vec("\\PC{0,8}", 0..40)) {
        let _ = Subject::parse(&text);
        let _ = Pattern::parse(&text);
        let _ = Subject::from_tokens(&tokens);
        let _ = Pattern::from_tokens(&tokens);
        let batch = eventstore_wasm::batch::Batch {
            last_position: 5,
            aggregate: text.clone(),
            first_sequence: 1,
            last_sequence: 2,
            created_at: 0,
            actions: tokens.clone(),
            events: text.clone(),
            starts_push: false,
        };
        let _ = batch.decode_text(&batch.events);
    }

    #[test]
    fn matcher_agrees_with_reference(pattern in small_pattern(), subject in small_subject()) {
        let p = Pattern::from_tokens(&pattern).unwrap();
        let dotted = subject.join(".");
        prop_assert_eq!(p.matches(&dotted), reference(&pattern, &subject));
        prop_assert_eq!(Pattern::parse(p.as_str()).unwrap(), p.clone());
        // Planning soundness: a match always lies in the pattern's key range.
        if p.matches(&dotted) {
            if let Some(range) = p.key_range() {
                prop_assert!(range.contains(&dotted));
                let (lo, hi) = range.bounds();
                prop_assert!(lo.as_str() <= dotted.as_str() && dotted.as_str() <= hi.as_str());
            }
        }
    }

    /// Whatever the planner picks (index or scan), filter returns exactly the
    /// events a naive filter over the whole log returns, in position order
    /// (descending with `reverse`, the limit then taken from the end);
    /// count agrees with it, and get finds every event by its id.
    #[test]
    fn filter_matches_a_naive_scan(
        pushes in prop::collection::vec(
            prop::collection::vec((small_subject(), small_subject(), any::<bool>(), 1usize..4), 1..4), 1..6),
        queries in prop::collection::vec(
            (prop::option::of(small_pattern()), prop::option::of(small_pattern()),
             prop::option::of((0u64..4, 0u64..6)),
             prop::option::of((prop::option::of(0u64..30), prop::option::of(0u64..30)))), 0..3),
        limit in prop::option::of(0usize..12),
        reverse in any::<bool>(),
    ) {
        let mut s = Store::new();
        for (n, push) in pushes.iter().enumerate() {
            // Two pushes share each millisecond: get must pick the right batch.
            s.now = 1_000 + n as u64 / 2;
            // Half the actions start with their aggregate's tokens (SPEC's
            // convention, found through the aggregate index), half need not;
            // an entry's commands mix actions, owned and foreign, so that
            // some events of a batch match a pattern and others do not.
            let owned: Vec<(String, Vec<(String, String)>)> = push.iter().map(|(agg, act, own, n)| {
                let (mine, foreign) = (format!("{}.{}", agg.join("."), act.join(".")), act.join("."));
                let action = if *own { mine.clone() } else { foreign.clone() };
                (agg.join("."), (0..*n).map(|i| (match i {
                    0 => action.clone(),
                    1 => format!("{action}.a"),
                    _ => if *own { foreign.clone() } else { mine.clone() },
                }, i.to_string())).collect())
            }).collect();
            let entries: Vec<_> = owned.iter().map(|(agg, cmds)| {
                let cmds: Vec<(&str, &str)> = cmds.iter().map(|(a, p)| (a.as_str(), p.as_str())).collect();
                entry(agg, None, &cmds)
            }).collect();
            s.push(&entries).unwrap();
        }
        let filter = Filter {
            queries: queries.iter().map(|(subj, agg, seq, pos)| Query {
                subjects: subj.as_ref().map(|t| Pattern::from_tokens(t).unwrap()),
                aggregate: agg.as_ref().map(|t| Pattern::from_tokens(t).unwrap()),
                sequence: seq.map(|(from, to)| Range { from: Some(from), to: Some(to) }).unwrap_or_default(),
                created_at: Range::default(),
                position: pos.map(|(from, to)| Range { from, to }).unwrap_or_default(),
            }).collect(),
            limit,
            reverse,
        };
        let all = s.filter(&Filter::default()).unwrap();
        let mut matching: Vec<_> = all.iter().filter(|e| {
            filter.queries.is_empty() || filter.queries.iter().any(|q| {
                q.subjects.as_ref().is_none_or(|p| p.matches(&action(e)))
                    && q.aggregate.as_ref().is_none_or(|p| p.matches(&dotted(&e["aggregate"])))
                    && q.sequence.contains(e["sequence"].as_u64().unwrap())
                    && q.position.contains(e["position"].as_u64().unwrap())
            })
        }).cloned().collect();
        if reverse {
            matching.reverse();
        }
        let expected: Vec<_> = matching.iter().take(limit.unwrap_or(usize::MAX)).cloned().collect();
        prop_assert_eq!(s.filter(&filter).unwrap(), expected.clone());
        prop_assert_eq!(s.count(&filter).unwrap(), expected.len() as u64);
        for e in &all {
            let got = s.get(e["id"].as_str().unwrap()).unwrap();
            prop_assert_eq!(got.as_ref(), Some(e));
        }
    }
}
