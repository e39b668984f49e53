//! The reads of SPEC section 3 beyond `filter`: `get`, `count`, `reverse`
//! and `position` ranges, on the in-memory backend, with what each costs.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use eventstore_wasm::engine::{self, Window};
use eventstore_wasm::filter::{Filter, Query, Range};
use eventstore_wasm::subject::Pattern;

/// 400 pushes of 2 events, one per ms, to 100 aggregates `user.u0..u99`.
fn log() -> Store {
    let mut s = Store::new();
    for p in 0..400u64 {
        s.now = 10_000 + p;
        let agg = format!("user.u{}", p % 100);
        let actions = [format!("{agg}.added"), format!("{agg}.renamed")];
        let cmds: Vec<(&str, &str)> = actions.iter().map(|a| (a.as_str(), "1")).collect();
        s.push(&[entry(&agg, None, &cmds)]).unwrap();
    }
    s
}

fn cost<T>(s: &Store, read: impl FnOnce(&Store) -> T) -> (T, usize) {
    let before = s.storage.batches_read();
    let out = read(s);
    (out, s.storage.batches_read() - before)
}

fn reversed(filter: Filter, limit: Option<usize>) -> Filter {
    Filter {
        reverse: true,
        limit,
        ..filter
    }
}

fn positions(from: Option<u64>, to: Option<u64>) -> Query {
    Query {
        position: Range { from, to },
        ..Query::default()
    }
}

#[test]
fn get_finds_each_event_through_its_millisecond() {
    let s = log();
    let all = s.filter(&Filter::default()).unwrap();
    for e in all.iter().step_by(37) {
        let id = e["id"].as_str().unwrap();
        let (found, read) = cost(&s, |s| s.get(id).unwrap());
        assert_eq!(found.as_ref(), Some(e));
        assert_eq!(read, 1, "only the batch of {id}'s millisecond is read");
    }
    // A UUIDv7 of no event: its millisecond, then the log.
    let missing = "0190a0a0-0000-7000-8000-000000000000";
    let (found, read) = cost(&s, |s| s.get(missing).unwrap());
    assert_eq!((found, read), (None, 400));
    assert_eq!(s.get("").unwrap(), None);
}

#[test]
fn get_finds_events_with_ids_made_elsewhere_by_a_scan() {
    let mut s = Store::new();
    s.uuid_ids = false;
    s.push(&[entry("a.b", None, &[("a.b.x", "1"), ("a.b.y", "2")])])
        .unwrap();
    s.push(&[entry("a.c", None, &[("a.c.x", r#""id-1""#)])])
        .unwrap();
    let found = s.get("id-2").unwrap().unwrap();
    assert_eq!(
        (action(&found), found["position"].as_u64()),
        ("a.b.y".into(), Some(2))
    );
    // A payload holding the id text is not the event.
    assert_eq!(action(&s.get("id-1").unwrap().unwrap()), "a.b.x");
    assert_eq!(s.get("id-9").unwrap(), None);
    // A UUIDv7 whose millisecond holds other events falls back to the scan too.
    let other = uuid::Builder::from_unix_timestamp_millis(s.now, &[7; 10])
        .into_uuid()
        .to_string();
    assert_eq!(s.get(&other).unwrap(), None);
}

#[test]
fn a_forgotten_event_is_got_without_its_payload() {
    let mut s = Store::new();
    let e = s
        .push(&[entry("u.a", None, &[("u.a.added", r#"{"email":"x"}"#)])])
        .unwrap();
    s.forget(&aggregate("u.a")).unwrap();
    let got = s.get(e[0]["id"].as_str().unwrap()).unwrap().unwrap();
    assert!(got["payload"].is_null() && got["forgotten"] == true);
}

#[test]
fn count_matches_filter_and_reads_no_more() {
    let s = log();
    for filter in [
        Filter::default(),
        aggregate("user.u7"),
        subjects("user.*.renamed"),
        subjects("*.u7.>"),
        query(positions(Some(100), Some(250))),
    ] {
        let n = s.filter(&filter).unwrap().len() as u64;
        assert_eq!(s.count(&filter).unwrap(), n, "{filter:?}");
        for limit in [0, 1, 5, 10_000] {
            let limited = Filter {
                limit: Some(limit),
                ..filter.clone()
            };
            assert_eq!(s.count(&limited).unwrap(), n.min(limit as u64));
        }
    }
    // Without queries the count is the last position: nothing is read.
    assert_eq!(cost(&s, |s| s.count(&Filter::default()).unwrap()), (800, 0));
    // One aggregate: from its head, reading no batch.
    assert_eq!(
        cost(&s, |s| s.count(&aggregate("user.u7")).unwrap()),
        (8, 0)
    );
    for (from, to, n) in [
        (None, None, 8),
        (Some(3), None, 6),
        (Some(0), Some(2), 1),
        (Some(5), Some(5), 0),
        (Some(7), Some(100), 2),
        (Some(20), None, 0),
    ] {
        let q = Query {
            aggregate: Some(Pattern::parse("user.u7").unwrap()),
            sequence: Range { from, to },
            ..Query::default()
        };
        assert_eq!(s.count(&query(q.clone())).unwrap(), n, "{from:?}..{to:?}");
        assert_eq!(s.filter(&query(q)).unwrap().len() as u64, n);
    }
    assert_eq!(s.count(&aggregate("user.none")).unwrap(), 0);
    assert_eq!(
        cost(&s, |s| s.count(&aggregate("user.u7.x")).unwrap()),
        (0, 0)
    );
    // With another criterion, the aggregate's batches are read.
    let q = Query {
        aggregate: Some(Pattern::parse("user.u7").unwrap()),
        subjects: Some(Pattern::parse("user.u7.added").unwrap()),
        ..Query::default()
    };
    assert_eq!(cost(&s, |s| s.count(&query(q)).unwrap()), (4, 4));
}

#[test]
fn reverse_is_filter_backwards_with_the_limit_from_the_end() {
    let s = log();
    for filter in [
        Filter::default(),
        aggregate("user.u7"),
        aggregate("user.>"),
        subjects("user.u7.>"),
        subjects("user.*.added"),
        subjects("*.u7.renamed"),
        query(positions(Some(10), Some(20))),
    ] {
        let mut expected = s.filter(&filter).unwrap();
        expected.reverse();
        for limit in [None, Some(0), Some(1), Some(3), Some(20), Some(5_000)] {
            let got = s.filter(&reversed(filter.clone(), limit)).unwrap();
            let want: Vec<_> = expected
                .iter()
                .take(limit.unwrap_or(usize::MAX))
                .cloned()
                .collect();
            assert_eq!(got, want, "{filter:?} limit {limit:?}");
        }
    }
}

/// "The last 20 events" reads from the end, not the whole log.
#[test]
fn reverse_with_a_limit_reads_from_the_end() {
    let s = log();
    let last = |f: Filter| cost(&s, |s| s.filter(&reversed(f, Some(20))).unwrap());
    let (events, read) = last(Filter::default());
    assert_eq!(
        numbers(&events, "position"),
        (781..=800).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        read, 20,
        "a scan backwards: at most one batch per event wanted"
    );
    // An aggregate through its index, newest batch first.
    let (events, read) = last(aggregate("user.u7"));
    assert_eq!(events.len(), 8);
    assert_eq!(read, 4);
    let (events, read) = cost(&s, |s| {
        s.filter(&reversed(aggregate("user.u7"), Some(2))).unwrap()
    });
    assert_eq!(numbers(&events, "sequence"), [8, 7]);
    assert_eq!(read, 2);
    // Index candidates: the last keys of the sorted list.
    let (events, read) = last(subjects("user.*.added"));
    assert_eq!(events.len(), 20);
    assert!(read <= 20, "{read} batches for the last 20 of 400");
    let (events, read) = last(aggregate("user.>"));
    assert_eq!(events.len(), 20);
    assert!(read <= 40, "{read} batches");
    // Forwards, a small limit also reads little.
    let (_, read) = cost(&s, |s| {
        s.filter(&Filter {
            limit: Some(3),
            ..Filter::default()
        })
        .unwrap()
    });
    assert_eq!(read, 3);
}

#[test]
fn position_ranges_are_half_open_and_read_only_their_part() {
    let s = log();
    let all = s.filter(&Filter::default()).unwrap();
    let between = |from: Option<u64>, to: Option<u64>| -> Vec<u64> {
        numbers(&all, "position")
            .into_iter()
            .filter(|p| from.is_none_or(|f| *p >= f) && to.is_none_or(|t| *p < t))
            .collect()
    };
    for (from, to) in [
        (Some(1), Some(2)),
        (Some(5), Some(9)),
        (Some(700), None),
        (None, Some(4)),
        (Some(9), Some(9)),
        (Some(9), Some(3)),
        (Some(0), Some(2)),
        (Some(801), None),
    ] {
        let got = s.filter(&query(positions(from, to))).unwrap();
        assert_eq!(
            numbers(&got, "position"),
            between(from, to),
            "{from:?}..{to:?}"
        );
    }
    // "Resume from the position saved": a scan reads only what follows it.
    let (got, read) = cost(&s, |s| {
        s.filter(&query(positions(Some(781), None))).unwrap()
    });
    assert_eq!(got.len(), 20);
    assert_eq!(read, 10);
    let (got, read) = cost(&s, |s| {
        s.filter(&query(positions(Some(101), Some(111)))).unwrap()
    });
    assert_eq!(got.len(), 10);
    assert!(read <= 6, "{read}");
    // Combined with the other criteria, and OR-ed with other queries.
    let q = Query {
        aggregate: Some(Pattern::parse("user.u7").unwrap()),
        ..positions(Some(216), None)
    };
    let got = s.filter(&query(q)).unwrap();
    assert_eq!(numbers(&got, "sequence"), [4, 5, 6, 7, 8]);
    let or = Filter {
        queries: vec![positions(Some(1), Some(3)), positions(Some(799), None)],
        ..Filter::default()
    };
    assert_eq!(
        numbers(&s.filter(&or).unwrap(), "position"),
        [1, 2, 799, 800]
    );
    let back = s.filter(&reversed(or, Some(3))).unwrap();
    assert_eq!(numbers(&back, "position"), [800, 799, 2]);
}

#[test]
fn reverse_windows_resume_before_a_position() {
    let s = log();
    for filter in [
        Filter::default(),
        aggregate("user.u7"),
        subjects("user.*.added"),
    ] {
        let filter = reversed(filter, None);
        let all = s.filter(&filter).unwrap();
        // Pages of 7 from the end, each before the last position seen.
        let mut got = Vec::new();
        let mut before = None;
        loop {
            let window = Window {
                before,
                ..Window::default()
            };
            let page_filter = Filter {
                limit: Some(7),
                ..filter.clone()
            };
            let (page, _) = s.window(&page_filter, window).unwrap();
            let Some(last) = page.last() else { break };
            before = last["position"].as_u64();
            got.extend(page);
        }
        assert_eq!(got, all, "{filter:?}");
    }
}

#[test]
fn forget_refuses_reverse() {
    let s = log();
    let err = s.forget(&reversed(aggregate("user.u1"), None)).unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
}

#[test]
fn uuid_v7_millis_reads_the_timestamp() {
    let id = uuid::Builder::from_unix_timestamp_millis(1_700_000_000_123, &[0; 10])
        .into_uuid()
        .to_string();
    assert_eq!(engine::uuid_v7_millis(&id), Some(1_700_000_000_123));
    assert_eq!(engine::uuid_v7_millis("id-1"), None);
    assert_eq!(
        engine::uuid_v7_millis(&id.to_uppercase()),
        Some(1_700_000_000_123)
    );
    assert_eq!(engine::uuid_v7_millis(&id.replace('-', "_")), None);
    assert_eq!(engine::uuid_v7_millis(&format!("{id}0")), None);
    assert_eq!(engine::uuid_v7_millis(&id.replacen('0', "g", 1)), None);
    assert_eq!(
        engine::uuid_v7_millis("ffffffff-ffff-7fff-bfff-ffffffffffff"),
        Some((1 << 48) - 1)
    );
    // Version 4: no timestamp.
    assert_eq!(
        engine::uuid_v7_millis("936da01f-9abd-4d9d-80c7-02af85c822a8"),
        None
    );
}
