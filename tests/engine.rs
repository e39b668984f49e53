//! The engine on the in-memory backend: SPEC section 4 without a browser.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use eventstore_wasm::batch::MAX_BATCH_BYTES;
use eventstore_wasm::filter::{Filter, Query, Range};
use eventstore_wasm::subject::Pattern;
use eventstore_wasm::Error;
use futures::executor::block_on;

#[test]
fn seed_compliance_patterns() {
    let mut s = Store::new();
    let pushed = s
        .push(&[entry(
            "user.id",
            None,
            &[
                ("user.id.added", r#"{"name":"x"}"#),
                ("user.id.removed", "null"),
            ],
        )])
        .unwrap();
    assert_eq!(pushed.len(), 2);
    let actions = |f: &Filter| s.filter(f).unwrap().iter().map(action).collect::<Vec<_>>();
    assert_eq!(
        actions(&subjects("user.id.>")),
        ["user.id.added", "user.id.removed"]
    );
    assert_eq!(
        actions(&subjects("user.*.*")),
        ["user.id.added", "user.id.removed"]
    );
    assert_eq!(actions(&subjects("user.id.added")), ["user.id.added"]);
    assert_eq!(
        actions(&subjects(">")),
        ["user.id.added", "user.id.removed"]
    );
    assert_eq!(actions(&subjects("user.id")), Vec::<String>::new());
    assert_eq!(actions(&subjects("user.*")), Vec::<String>::new());
}

#[test]
fn expected_sequence_zero_then_wrong() {
    let mut s = Store::new();
    s.push(&[entry("user.a", Some(0), &[("user.a.added", "{}")])])
        .unwrap();
    let err = s
        .push(&[entry("user.b", Some(2), &[("user.b.added", "{}")])])
        .unwrap_err();
    assert_eq!(
        err,
        Error::SequenceMismatch {
            aggregate: "user.b".into(),
            expected: 2,
            actual: 0
        }
    );
    s.push(&[entry("user.a", Some(1), &[("user.a.renamed", "{}")])])
        .unwrap();
    assert_eq!(s.filter(&Filter::default()).unwrap().len(), 2);
}

#[test]
fn two_aggregates_in_one_push_are_sequenced_separately() {
    let mut s = Store::new();
    let three = [("x.e", "1"), ("x.e", "2"), ("x.e", "3")];
    let events = s
        .push(&[
            entry("agg.one", None, &three),
            entry("agg.two", None, &three),
        ])
        .unwrap();
    let seqs = numbers(&events, "sequence");
    let positions = numbers(&events, "position");
    assert_eq!(seqs, [1, 2, 3, 1, 2, 3]);
    assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
    assert!(events.iter().all(|e| e["createdAt"] == 1_000));
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        events,
        s.filter(&Filter::default()).unwrap(),
        "push returns what is stored"
    );
}

#[test]
fn same_aggregate_twice_checks_each_expectation_at_its_point() {
    let mut s = Store::new();
    let ok = s
        .push(&[
            entry("a.b", Some(0), &[("a.b.x", "1"), ("a.b.y", "2")]),
            entry("c.d", None, &[("c.d.x", "3")]),
            entry("a.b", Some(2), &[("a.b.z", "4")]),
        ])
        .unwrap();
    let seqs: Vec<(String, u64)> = ok
        .iter()
        .map(|e| (dotted(&e["aggregate"]), e["sequence"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        [
            ("a.b".into(), 1),
            ("a.b".into(), 2),
            ("c.d".into(), 1),
            ("a.b".into(), 3)
        ]
    );
    let err = s
        .push(&[
            entry("a.b", Some(3), &[("a.b.x", "1")]),
            entry("a.b", Some(3), &[("a.b.y", "2")]),
        ])
        .unwrap_err();
    assert_eq!(err.code(), "SEQUENCE_MISMATCH");
    assert_eq!(
        s.filter(&Filter::default()).unwrap().len(),
        4,
        "nothing of the failed push"
    );
}

#[test]
fn a_failing_push_writes_nothing() {
    let mut s = Store::new();
    s.push(&[entry("a.b", None, &[("a.b.x", "1")])]).unwrap();
    let before = s.records();
    let err = s
        .push(&[
            entry("a.c", None, &[("a.c.x", "1")]),
            entry("a.b", Some(0), &[("a.b.x", "1")]),
        ])
        .unwrap_err();
    assert_eq!(err.code(), "SEQUENCE_MISMATCH");
    let err = s.push(&[entry("a.d", None, &[])]).unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    assert_eq!(s.records(), before);
    assert!(s.push(&[]).unwrap().is_empty());
    assert_eq!(s.records(), before);
}

#[test]
fn large_pushes_split_into_bounded_batches() {
    let mut s = Store::new();
    let payload = format!("\"{}\"", "p".repeat(1000));
    let commands: Vec<(&str, &str)> = (0..200).map(|_| ("big.a.set", payload.as_str())).collect();
    let events = s.push(&[entry("big.a", Some(0), &commands)]).unwrap();
    assert_eq!(events.len(), 200);
    let records = s.records();
    assert!(records.len() >= 4, "{} batches", records.len());
    assert!(records.iter().all(|b| b.events.len() <= MAX_BATCH_BYTES));
    let read = s.filter(&aggregate("big.a")).unwrap();
    let seqs = numbers(&read, "sequence");
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let more = s
        .push(&[entry("big.a", Some(200), &[("big.a.set", "1")])])
        .unwrap();
    assert_eq!(more[0]["sequence"], 201);
}

fn sample() -> Store {
    let mut s = Store::new();
    for round in 0..3 {
        s.now = 1_000 + round * 100;
        let mut entries = Vec::new();
        for user in ["A", "B", "C"] {
            let agg = format!("user.{user}");
            let added = format!("user.{user}.added");
            let changed = format!("user.{user}.email.changed");
            let action = if round == 0 { added } else { changed };
            entries.push(entry(
                &agg,
                None,
                &[(action.as_str(), r#"{"email":"x@y"}"#)],
            ));
        }
        s.push(&entries).unwrap();
    }
    s
}

#[test]
fn filters_by_ranges_limit_and_or() {
    let s = sample();
    let seq = |f: &Filter| numbers(&s.filter(f).unwrap(), "position");
    let mut q = Query {
        aggregate: Some(Pattern::parse("user.B").unwrap()),
        ..Query::default()
    };
    q.sequence = Range {
        from: Some(2),
        to: Some(3),
    };
    assert_eq!(seq(&query(q)), [5]);
    let q = Query {
        created_at: Range {
            from: Some(1_100.0),
            to: Some(1_200.0),
        },
        ..Query::default()
    };
    assert_eq!(seq(&query(q)), [4, 5, 6]);
    let or = Filter {
        queries: vec![
            Query {
                subjects: Some(Pattern::parse("user.*.added").unwrap()),
                ..Query::default()
            },
            Query {
                aggregate: Some(Pattern::parse("user.A").unwrap()),
                ..Query::default()
            },
        ],
        ..Filter::default()
    };
    assert_eq!(
        seq(&or),
        [1, 2, 3, 4, 7],
        "user.A.added matched twice, returned once"
    );
    let limited = Filter {
        limit: Some(2),
        ..or.clone()
    };
    assert_eq!(seq(&limited), [1, 2]);
    assert_eq!(seq(&aggregate("user.>")).len(), 9);
    assert_eq!(seq(&aggregate("*.C")), [3, 6, 9]);
    assert_eq!(seq(&subjects("user.C.email.>")), [6, 9]);
    let zero = Filter {
        limit: Some(0),
        ..Filter::default()
    };
    assert!(seq(&zero).is_empty());
}

#[test]
fn forget_erases_payloads_and_keeps_metadata() {
    let s = sample();
    let before = s.filter(&Filter::default()).unwrap();
    assert_eq!(s.forget(&aggregate("user.A")).unwrap(), 3);
    assert_eq!(s.forget(&aggregate("user.A")).unwrap(), 0, "idempotent");
    let after = s.filter(&Filter::default()).unwrap();
    for (b, a) in before.iter().zip(&after) {
        let forgotten = dotted(&b["aggregate"]) == "user.A";
        for key in [
            "id",
            "aggregate",
            "action",
            "revision",
            "sequence",
            "position",
            "createdAt",
        ] {
            assert_eq!(a[key], b[key], "{key} kept");
        }
        assert_eq!(a["forgotten"], forgotten);
        if forgotten {
            assert!(a["payload"].is_null());
        } else {
            assert_eq!(a["payload"], b["payload"]);
        }
    }
    let records = s.records();
    let a_records: Vec<_> = records.iter().filter(|b| b.aggregate == "user.A").collect();
    assert!(a_records.iter().all(|b| !b.events.contains("x@y")));
    let limited = Filter {
        limit: Some(1),
        ..aggregate("user.B")
    };
    assert_eq!(s.forget(&limited).unwrap_err().code(), "INVALID_ARGUMENT");
    // One event of a batch: only that one is erased.
    assert_eq!(s.forget(&subjects("user.B.added")).unwrap(), 1);
    let b = s.filter(&aggregate("user.B")).unwrap();
    assert_eq!(
        b.iter()
            .map(|e| e["forgotten"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false, false]
    );
}

#[test]
fn windows_resume_after_a_position_whatever_the_plan() {
    use eventstore_wasm::engine::Window;
    let s = sample();
    for filter in [
        Filter::default(),
        subjects("user.*.email.>"),
        aggregate("user.B"),
        aggregate("*.B"),
    ] {
        let all = s.filter(&filter).unwrap();
        for after in 0..=9u64 {
            let expected: Vec<_> = all
                .iter()
                .filter(|e| e["position"].as_u64().unwrap() > after)
                .cloned()
                .collect();
            for tail in [false, true] {
                let (got, end) = s
                    .window(
                        &filter,
                        Window {
                            after,
                            tail,
                            ..Window::default()
                        },
                    )
                    .unwrap();
                assert_eq!(got, expected, "after {after}, tail {tail}");
                assert_eq!(end, 9);
            }
        }
    }
}

#[test]
fn forget_reports_the_erased_events_new_state() {
    let s = sample();
    let (n, notice) = s.forget_notice(&subjects("user.*.email.changed")).unwrap();
    assert_eq!(n, 6);
    assert_eq!(notice.len(), 6);
    assert!(notice
        .iter()
        .all(|e| e["forgotten"] == true && e["payload"].is_null()));
    let positions = numbers(&notice, "position");
    assert_eq!(positions, [4, 5, 6, 7, 8, 9]);
    assert_eq!(
        s.forget_notice(&subjects("user.*.email.changed")).unwrap(),
        (0, vec![])
    );
}

#[test]
fn head_caches_of_two_tabs_never_hand_out_a_sequence_twice() {
    let mut a = Store::new();
    let mut b = a.other_tab();
    let mut expected = 0;
    for round in 0..20u64 {
        // Both tabs push to the same aggregate, in an order that changes.
        let (first, second) = if round % 3 == 0 {
            (&mut b, &mut a)
        } else {
            (&mut a, &mut b)
        };
        for s in [first, second] {
            let events = s
                .push(&[entry("shared.x", None, &[("shared.x.e", "1")])])
                .unwrap();
            expected += 1;
            assert_eq!(events[0]["sequence"], expected);
        }
        // An optimistic check against a head the other tab moved must fail.
        let err = a.push(&[entry(
            "shared.x",
            Some(expected - 1),
            &[("shared.x.e", "1")],
        )]);
        assert_eq!(err.unwrap_err().code(), "SEQUENCE_MISMATCH");
    }
    let all = a.filter(&aggregate("shared.x")).unwrap();
    let seqs = numbers(&all, "sequence");
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
}

#[test]
fn dense_and_sparse_index_reads_agree_with_a_scan() {
    let mut s = Store::new();
    for p in 0..150u64 {
        let entries: Vec<_> = (0..5u64)
            .map(|g| {
                let n = p * 5 + g;
                let agg = format!("user.u{}", n * 7 % 40);
                let mut actions: Vec<String> = ["added", "renamed", "email.changed"]
                    .iter()
                    .map(|a| format!("{agg}.{a}"))
                    .collect();
                if n % 8 == 0 {
                    // Another first token: a selective action prefix.
                    actions.push(format!("flag.u{}.set", n * 7 % 40));
                }
                (agg, actions)
            })
            .collect();
        let entries: Vec<_> = entries
            .iter()
            .map(|(agg, actions)| {
                let cmds: Vec<(&str, &str)> = actions.iter().map(|a| (a.as_str(), "1")).collect();
                entry(agg, None, &cmds)
            })
            .collect();
        s.push(&entries).unwrap();
    }
    let all = s.filter(&Filter::default()).unwrap();
    assert_eq!(all.len(), 750 * 3 + 94);
    // Few candidates (read one by one), many and dense (read as key
    // ranges), many and sparse (a range read first, then one by one).
    for pattern in [
        "user.u7.>",
        "user.u7.renamed",
        "user.*.added",
        "user.>",
        "user.*.email.*",
        "flag.>",
        "flag.*.set",
    ] {
        let p = Pattern::parse(pattern).unwrap();
        let expected: Vec<_> = all
            .iter()
            .filter(|e| p.matches(&action(e)))
            .cloned()
            .collect();
        assert_eq!(s.filter(&subjects(pattern)).unwrap(), expected, "{pattern}");
    }
}

/// SPEC 4: a query with literal leading tokens costs what it matches, not
/// the size of the log; one starting with a wildcard scans.
#[test]
fn index_queries_read_their_matches_not_the_log() {
    let mut s = Store::new();
    for p in 0..400u64 {
        let agg = format!("user.u{}", p % 100);
        let actions = [format!("{agg}.added"), format!("{agg}.renamed")];
        let cmds: Vec<(&str, &str)> = actions.iter().map(|a| (a.as_str(), "1")).collect();
        s.push(&[entry(&agg, None, &cmds)]).unwrap();
    }
    let cost = |s: &Store, f: &Filter| {
        let before = s.storage.batches_read();
        let n = s.filter(f).unwrap().len();
        (n, s.storage.batches_read() - before)
    };
    // user.u7 has 4 batches (8 events) in a log of 400 batches.
    assert_eq!(cost(&s, &subjects("user.u7.>")), (8, 4));
    assert_eq!(cost(&s, &subjects("user.u7.added")), (4, 4));
    assert_eq!(cost(&s, &aggregate("user.u7")), (8, 4));
    let (n, read) = cost(&s, &subjects("*.u7.>"));
    assert_eq!((n, read), (8, 400), "a leading wildcard scans");
}

#[test]
fn only_actions_foreign_to_their_aggregate_are_indexed() {
    let mut s = Store::new();
    s.push(&[entry(
        "user.u1",
        None,
        &[
            ("user.u1.added", "1"),
            ("user.u1", "2"),
            ("team.t1.joined", "3"),
            ("user.u10.x", "4"),
        ],
    )])
    .unwrap();
    let records = block_on(s.storage.records());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].actions, ["team.t1.joined", "user.u10.x"]);
    // Both kinds are found by action patterns, each through its own index.
    assert_eq!(s.filter(&subjects("team.>")).unwrap().len(), 1);
    assert_eq!(s.filter(&subjects("user.u1.>")).unwrap().len(), 1);
    assert_eq!(s.filter(&subjects("user.u1")).unwrap().len(), 1);
    assert_eq!(s.filter(&subjects("user.*.x")).unwrap().len(), 1);
}

#[test]
fn a_push_on_a_stale_guess_is_redone_with_reads() {
    let mut a = Store::new();
    let mut b = a.other_tab();
    a.push(&[entry("user.x", None, &[("user.x.added", "1")])])
        .unwrap();
    // b reads (its cache knows nothing), then knows the log ends at 2.
    b.push(&[entry("user.x", Some(1), &[("user.x.renamed", "2")])])
        .unwrap();
    // a guesses the end is 1 and x is at 1: the guess does not meet its
    // expectation, so it checks, and succeeds.
    let e = a
        .push(&[entry("user.x", Some(2), &[("user.x.renamed", "3")])])
        .unwrap();
    assert_eq!(
        (e[0]["position"].as_u64(), e[0]["sequence"].as_u64()),
        (Some(3), Some(3))
    );
    // b guesses the end is 2: its first record starts at 3 like a's last
    // push (not the same key: 2 events end at 4), so only the unique
    // `start` stops it; it is redone after reading.
    let e = b
        .push(&[entry(
            "user.x",
            None,
            &[("user.x.a", "4"), ("user.x.b", "5")],
        )])
        .unwrap();
    let got: Vec<_> = e
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(4, 4), (5, 5)]);
    let all = a.filter(&aggregate("user.x")).unwrap();
    let positions = numbers(&all, "position");
    let sequences = numbers(&all, "sequence");
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
}
