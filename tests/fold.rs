//! Property tests of the fold (`eventstore_wasm::log`): any interleaving of
//! pushes (from two tabs), folds and forgets reads back the same events as
//! the same calls without folding, and no unfolded record keeps a payload
//! that was forgotten.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use eventstore_wasm::engine;
use eventstore_wasm::filter::{Filter, Query, Range};
use eventstore_wasm::push::PushEntry;
use futures::executor::block_on;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Entries of (aggregate index, commands); `other`: from the second tab.
    Push(Vec<(u8, u8)>, bool),
    Fold(usize),
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec((0u8..5, 1u8..4), 1..6), any::<bool>())
            .prop_map(|(e, other)| Op::Push(e, other)),
        2 => (1usize..4).prop_map(Op::Fold),
        1 => (0u8..5).prop_map(Op::Forget),
    ]
}

fn name(a: u8) -> String {
    // Two levels, so that prefix patterns find several aggregates.
    format!("g{}.a{a}", a % 2)
}

fn entries(spec: &[(u8, u8)]) -> Vec<PushEntry> {
    spec.iter()
        .map(|(a, n)| {
            let aggregate = name(*a);
            let added = format!("{aggregate}.added");
            let commands: Vec<(&str, &str)> = (0..*n)
                .map(|_| (added.as_str(), r#"{"secret":"s3cr3t"}"#))
                .collect();
            entry(&aggregate, None, &commands)
        })
        .collect()
}

/// Every read a page makes: the whole log both ways, per aggregate, a
/// prefix, an action pattern, positions, counts, get by id.
fn reads(s: &Store) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let all = s.filter(&Filter::default()).unwrap();
    let back = s
        .filter(&Filter {
            reverse: true,
            limit: Some(7),
            ..Filter::default()
        })
        .unwrap();
    out.push(serde_json::json!(all));
    out.push(serde_json::json!(back));
    for a in 0..5 {
        out.push(serde_json::json!(s.filter(&aggregate(&name(a))).unwrap()));
        out.push(serde_json::json!(s.count(&aggregate(&name(a))).unwrap()));
    }
    out.push(serde_json::json!(s.filter(&aggregate("g1.>")).unwrap()));
    out.push(serde_json::json!(s
        .filter(&subjects("g0.*.added"))
        .unwrap()));
    out.push(serde_json::json!(s.count(&subjects("g0.*.added")).unwrap()));
    let window = query(Query {
        position: Range {
            from: Some(3),
            to: Some(9),
        },
        ..Query::default()
    });
    out.push(serde_json::json!(s.filter(&window).unwrap()));
    for e in all.iter().step_by(3) {
        out.push(serde_json::json!(s.get(e["id"].as_str().unwrap()).unwrap()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn folding_never_changes_what_is_read(ops in prop::collection::vec(op(), 1..24)) {
        // `folding` folds when told; `plain` never does. Ids are made the
        // same way in both, so the events must be equal field for field.
        let mut folding = Store::new();
        folding.uuid_ids = false;
        let mut folding_other = folding.other_tab();
        let mut plain = Store::new();
        plain.uuid_ids = false;
        let mut plain_other = plain.other_tab();
        for op in &ops {
            match op {
                Op::Push(spec, other) => {
                    let (f, p) = if *other {
                        (&mut folding_other, &mut plain_other)
                    } else {
                        (&mut folding, &mut plain)
                    };
                    let pushed = f.push(&entries(spec)).unwrap();
                    prop_assert_eq!(pushed, p.push(&entries(spec)).unwrap());
                }
                Op::Fold(budget) => {
                    block_on(engine::fold(&folding.storage, *budget)).unwrap();
                }
                Op::Forget(a) => {
                    let f = folding.forget_notice(&aggregate(&name(*a))).unwrap();
                    prop_assert_eq!(f, plain.forget_notice(&aggregate(&name(*a))).unwrap());
                }
            }
            prop_assert_eq!(reads(&folding), reads(&plain));
        }
        // No unfolded record keeps a forgotten payload.
        for record in block_on(folding.storage.unfolded()) {
            for batch in &record.batches {
                prop_assert!(!batch.events.contains("forgotten"), "{}", batch.events);
            }
        }
        // Folding everything changes nothing either, and leaves no unfolded record.
        while block_on(engine::fold(&folding.storage, 2)).unwrap() > 0 {}
        prop_assert!(block_on(folding.storage.unfolded()).is_empty());
        prop_assert_eq!(reads(&folding), reads(&plain));
        let folded = folding.records();
        prop_assert_eq!(folded, plain.records());
    }
}

#[test]
fn a_fold_takes_whole_records_up_to_its_budget() {
    let mut s = Store::new();
    for _ in 0..3 {
        s.push(&entries(&[(0, 1), (1, 2), (2, 1)])).unwrap();
    }
    assert_eq!(block_on(s.storage.unfolded()).len(), 3);
    // A budget below one record's batches still folds that record.
    assert_eq!(block_on(engine::fold(&s.storage, 1)).unwrap(), 1);
    assert_eq!(block_on(engine::fold(&s.storage, 4)).unwrap(), 2);
    assert_eq!(block_on(engine::fold(&s.storage, 4)).unwrap(), 0);
    let records = s.records();
    assert_eq!(records.len(), 9);
    assert!(records.iter().filter(|b| b.starts_push).count() == 3);
}

#[test]
fn a_stale_guess_collides_with_an_unfolded_or_folded_push() {
    for fold_between in [false, true] {
        let mut a = Store::new();
        let mut b = a.other_tab();
        a.push(&entries(&[(0, 1)])).unwrap();
        b.push(&entries(&[(1, 1)])).unwrap();
        // `a` guesses the log ends at 1; `b` appended at 2.
        if fold_between {
            block_on(engine::fold(&a.storage, 10)).unwrap();
        }
        let pushed = a.push(&entries(&[(0, 1)])).unwrap();
        assert_eq!(
            numbers(&pushed, "position"),
            [3],
            "redone after the collision"
        );
        assert_eq!(numbers(&pushed, "sequence"), [2]);
    }
}
