//! The device's side of sync (`sync::local`) against a model of the
//! server built from the core's own rules (`sync::rules`): several devices
//! on in-memory stores push, pull, forget and resolve conflicts in any
//! interleaving, and must end with the same events per aggregate as the
//! server (ids, sequences, actions, payloads, forgotten flags), every event
//! once, positions agreeing with sequences.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{aggregate, entry, Store};
use eventstore_wasm::filter::Filter;
use eventstore_wasm::storage::memory::MemoryStorage;
use eventstore_wasm::storage::{Storage, Transaction};
use eventstore_wasm::sync::local::{self, Decision, State};
use eventstore_wasm::sync::protocol::{
    decode_forget, decode_push, ForgetItem, PullItem, PullResponse, PushResponse, WireEvent,
};
use eventstore_wasm::sync::rules::{self, Held, PushPlan};
use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::Value;

const LOG: &str = "log-1";

/// The server, as `eventstore-server` behaves (docs/sync-protocol.md).
#[derive(Default)]
struct Server {
    items: Vec<PullItem>,
    forget_ids: HashMap<String, u64>,
}

impl Server {
    fn head(&self) -> u64 {
        self.items.len() as u64
    }

    fn events(&self) -> impl Iterator<Item = &WireEvent> {
        self.items.iter().filter_map(|i| match i {
            PullItem::Event(e) => Some(e),
            PullItem::Forget(_) => None,
        })
    }

    fn push(&mut self, body: &str) -> (u16, PushResponse) {
        let request = decode_push(body.as_bytes()).unwrap();
        let held: HashMap<String, Held> = self
            .events()
            .filter(|e| request.events.iter().any(|r| r.id == e.id))
            .map(|e| {
                let held = Held {
                    position: e.position.unwrap(),
                    sequence: e.sequence,
                };
                (e.id.clone(), held)
            })
            .collect();
        let mut heads: HashMap<String, u64> = HashMap::new();
        for e in self.events() {
            heads.insert(e.aggregate.0.as_str().to_owned(), e.sequence);
        }
        match rules::plan_push(&request.events, &held, &heads) {
            PushPlan::Write(indices) => {
                let first = self.head() + 1;
                for &i in &indices {
                    let mut e = request.events[i].clone();
                    e.position = Some(self.head() + 1);
                    self.items.push(PullItem::Event(e));
                }
                let results = rules::accepted_results(&request.events, &held, &indices, first);
                (200, answer(results))
            }
            PushPlan::Conflict(at) => {
                let results = rules::conflict_results(&request.events, &held, &at);
                (409, answer(results))
            }
        }
    }

    fn pull(&self, after: u64, limit: usize) -> PullResponse {
        let items: Vec<PullItem> = self
            .items
            .iter()
            .skip(after as usize)
            .take(limit)
            .cloned()
            .collect();
        let cursor = after + items.len() as u64;
        PullResponse {
            log: LOG.into(),
            more: cursor < self.head(),
            head: self.head(),
            items,
            cursor,
        }
    }

    fn forget(&mut self, body: &str) {
        let request = decode_forget(body.as_bytes()).unwrap();
        if self.forget_ids.contains_key(&request.id) {
            return;
        }
        let value = serde_json::to_value(&request.filter).unwrap();
        let mut erased = Vec::new();
        for item in &mut self.items {
            let PullItem::Event(e) = item else { continue };
            let hit = value["queries"].as_array().unwrap().iter().any(|q| {
                q["aggregate"].as_str() == Some(e.aggregate.0.as_str())
                    && q["sequence"]["from"].as_u64().unwrap() <= e.sequence
                    && e.sequence < q["sequence"]["to"].as_u64().unwrap()
            });
            if hit && !e.forgotten {
                e.forgotten = true;
                e.payload = serde_json::value::RawValue::from_string("null".into()).unwrap();
                erased.push(e.id.clone());
            }
        }
        let position = self.head() + 1;
        self.items.push(PullItem::Forget(ForgetItem {
            position,
            id: request.id.clone(),
            events: erased,
        }));
        self.forget_ids.insert(request.id, position);
    }
}

fn answer(results: Vec<eventstore_wasm::sync::protocol::EventResult>) -> PushResponse {
    PushResponse {
        log: LOG.into(),
        results,
        conflicts: Vec::new(),
        error: None,
    }
}

/// One device: a store and how it decides conflicts.
struct Device {
    store: Store,
    decision: Decision,
    forget_ids: u64,
}

impl Device {
    fn new(k: u64, decision: Decision) -> Device {
        let mut store = Store::new();
        store.now = 1_000 + k;
        Device {
            store,
            decision,
            forget_ids: k * 1_000_000,
        }
    }

    fn storage(&self) -> &MemoryStorage {
        &self.store.storage
    }

    /// One round of the JavaScript loop (js/sync.js): begin, forgets,
    /// pushes (a conflict: pull, which resolves it), pull to the end. A
    /// `lost` answer is dropped after the server applied the request.
    fn round(&mut self, server: &mut Server, lost: bool) {
        block_on(local::begin(self.storage(), LOG)).unwrap();
        self.send_forgets(server);
        for _ in 0..50 {
            let mut pending = block_on(local::pending(self.storage(), 7)).unwrap();
            let bodies = pending.bodies(Some(LOG)).unwrap();
            if bodies.is_empty() {
                block_on(local::advance(self.storage(), &pending)).unwrap();
                break;
            }
            let mut conflicted = Vec::new();
            for body in bodies {
                let (status, answer) = server.push(&body);
                if lost && status == 200 {
                    return; // the device never heard: it retries next round
                }
                let counter = &mut self.forget_ids;
                let mut ids = || {
                    *counter += 1;
                    format!("f{counter}")
                };
                let outcome = block_on(local::settle(
                    &self.store.storage,
                    &mut pending,
                    status,
                    &answer,
                    &mut ids,
                ))
                .unwrap();
                assert!(outcome.refused.is_none());
                if !outcome.conflicts.is_empty() {
                    conflicted = outcome.conflicts;
                    break;
                }
            }
            if !conflicted.is_empty() {
                self.pull(server);
            }
        }
        // Settling may queue forgets (events forgotten while in flight).
        self.send_forgets(server);
        self.pull(server);
    }

    fn send_forgets(&mut self, server: &mut Server) {
        let state = block_on(local::state(self.storage())).unwrap().unwrap();
        for f in &state.forgets {
            server.forget(&state.forget_body(f).unwrap());
            block_on(local::forget_sent(self.storage(), &f.id)).unwrap();
        }
    }

    fn pull(&mut self, server: &Server) {
        for _ in 0..1000 {
            let cursor = block_on(local::state(self.storage()))
                .unwrap()
                .unwrap()
                .cursor;
            let page = server.pull(cursor, 3);
            let applied =
                block_on(local::apply_pull(self.storage(), &self.store.cache, &page)).unwrap();
            if let Some(c) = applied.conflict {
                block_on(local::resolve(
                    self.storage(),
                    &self.store.cache,
                    &c.aggregate,
                    &c.remote,
                    self.decision,
                ))
                .unwrap();
                continue;
            }
            if !page.more {
                return;
            }
        }
        panic!("pull did not end");
    }

    fn events(&self) -> Vec<Value> {
        self.store.filter(&Filter::default()).unwrap()
    }
}

/// Per aggregate: (id, sequence, action, payload, forgotten), in sequence order.
fn by_aggregate(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        let a = e["aggregate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(".");
        out.entry(a).or_default().push(serde_json::json!([
            e["id"],
            e["sequence"],
            e["action"],
            e["payload"],
            e["forgotten"]
        ]));
    }
    for list in out.values_mut() {
        list.sort_by_key(|v| v[1].as_u64());
    }
    out
}

fn server_view(server: &Server) -> BTreeMap<String, Vec<Value>> {
    let events: Vec<Value> = server
        .events()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            v["payload"] = serde_json::from_str(e.payload.get()).unwrap();
            v
        })
        .collect();
    by_aggregate(&events)
}

/// Checks a device against the server: same events per aggregate, each
/// once, remote positions equal, local positions in sequence order.
fn converged(device: &Device, server: &Server) {
    let events = device.events();
    assert_eq!(by_aggregate(&events), server_view(server));
    let remote: HashMap<String, u64> = server
        .events()
        .map(|e| (e.id.clone(), e.position.unwrap()))
        .collect();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for e in &events {
        let id = e["id"].as_str().unwrap();
        assert_eq!(
            e["remotePosition"].as_u64(),
            remote.get(id).copied(),
            "remotePosition of {id}"
        );
        let a = e["aggregate"].to_string();
        let seq = e["sequence"].as_u64().unwrap();
        assert!(
            last_seq.get(&a).is_none_or(|s| *s < seq),
            "position order breaks sequence order at {id}"
        );
        last_seq.insert(a, seq);
    }
    let state: State = block_on(local::state(device.storage())).unwrap().unwrap();
    assert_eq!(
        device.store.count(&Filter::default()).unwrap(),
        events.len() as u64,
        "count without queries subtracts withdrawn events ({})",
        state.withdrawn
    );
    let c = block_on(local::counts(device.storage())).unwrap();
    let (pending, conflicts) = (c.pending, c.conflicts);
    assert_eq!(
        c.last,
        device.store.count(&Filter::default()).unwrap() + c.state.map_or(0, |s| s.withdrawn)
    );
    assert_eq!((pending, conflicts), (0, 0));
}

fn push(device: &mut Device, a: &str, n: usize, tag: &str) {
    let commands: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{a}.did"), format!(r#"{{"tag":"{tag}","i":{i}}}"#)))
        .collect();
    let refs: Vec<(&str, &str)> = commands
        .iter()
        .map(|(x, y)| (x.as_str(), y.as_str()))
        .collect();
    device.store.push(&[entry(a, None, &refs)]).unwrap();
}

#[test]
fn two_devices_converge_through_a_conflict_resolved_by_rebase() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    let mut b = Device::new(2, Decision::Rebase);
    push(&mut a, "user.A", 2, "a");
    push(&mut b, "user.A", 1, "b");
    push(&mut b, "user.B", 1, "b");
    a.round(&mut server, false);
    b.round(&mut server, false);
    a.round(&mut server, false);
    converged(&a, &server);
    converged(&b, &server);
    // b's event of user.A was re-sequenced after a's two, with its id and payload.
    let list = &server_view(&server)["user.A"];
    assert_eq!(list.len(), 3);
    assert_eq!(list[2][3]["tag"], "b");
    assert_eq!(list[2][1], 3);
    // b withdrew one event from its first position: count still right.
    assert_eq!(
        block_on(local::state(b.storage()))
            .unwrap()
            .unwrap()
            .withdrawn,
        1
    );
}

#[test]
fn discard_drops_the_pending_events() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    let mut b = Device::new(2, Decision::Discard);
    push(&mut a, "user.A", 1, "a");
    push(&mut b, "user.A", 2, "b");
    a.round(&mut server, false);
    b.round(&mut server, false);
    converged(&b, &server);
    assert_eq!(b.events().len(), 1);
    assert_eq!(b.events()[0]["payload"]["tag"], "a");
}

#[test]
fn park_keeps_pending_events_unsent_until_decided() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    let mut b = Device::new(2, Decision::Park);
    push(&mut a, "user.A", 1, "a");
    a.round(&mut server, false);
    push(&mut b, "user.A", 1, "b");
    push(&mut b, "user.B", 1, "b");
    b.round(&mut server, false);
    let c = block_on(local::counts(b.storage())).unwrap();
    let (pending, conflicts) = (c.pending, c.conflicts);
    assert_eq!((pending, conflicts), (1, 1), "user.B went, user.A waits");
    assert_eq!(server.events().count(), 2);
    // More remote events of the parked aggregate wait with it.
    push(&mut a, "user.A", 1, "a2");
    a.round(&mut server, false);
    b.round(&mut server, false);
    let state = block_on(local::state(b.storage())).unwrap().unwrap();
    assert_eq!(state.parked[0].remote.len(), 2);
    // A later decision rebases over both.
    b.decision = Decision::Rebase;
    block_on(local::resolve(
        b.storage(),
        &b.store.cache,
        "user.A",
        &state.parked[0].remote,
        Decision::Rebase,
    ))
    .unwrap();
    b.round(&mut server, false);
    a.round(&mut server, false);
    converged(&a, &server);
    converged(&b, &server);
    assert_eq!(server_view(&server)["user.A"].len(), 3);
}

#[test]
fn a_lost_answer_is_retried_without_duplicates() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    push(&mut a, "user.A", 3, "a");
    a.round(&mut server, true);
    assert_eq!(server.events().count(), 3, "the server applied it");
    let pending = block_on(local::counts(a.storage())).unwrap().pending;
    assert_eq!(pending, 3, "the device did not hear");
    a.round(&mut server, false);
    assert_eq!(server.events().count(), 3, "held, not stored twice");
    converged(&a, &server);
}

#[test]
fn own_events_pulled_back_become_synced() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    push(&mut a, "user.A", 2, "a");
    a.round(&mut server, true); // answer lost
    a.pull(&server); // the pull brings them back: same ids, now synced
    converged(&a, &server);
}

#[test]
fn forgets_travel_both_ways_and_payloads_never_come_back() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    let mut b = Device::new(2, Decision::Rebase);
    push(&mut a, "user.A", 2, "a");
    push(&mut a, "user.B", 1, "a");
    a.round(&mut server, false);
    b.round(&mut server, false);
    // Forgotten on a after sync: queued in the forget's transaction.
    assert_eq!(a.store.forget(&aggregate("user.A")).unwrap(), 2);
    let state = block_on(local::state(a.storage())).unwrap().unwrap();
    assert_eq!(state.forgets.len(), 1);
    assert_eq!(state.forgets[0].queries, [("user.A".to_owned(), 1, 3)]);
    a.round(&mut server, false);
    assert!(server
        .events()
        .filter(|e| e.aggregate.0.as_str() == "user.A")
        .all(|e| e.forgotten));
    b.round(&mut server, false);
    converged(&a, &server);
    converged(&b, &server);
    // Forgotten on b before it was ever pushed: sent without its payload.
    push(&mut b, "user.C", 1, "secret");
    b.store.forget(&aggregate("user.C")).unwrap();
    b.round(&mut server, false);
    let c = server
        .events()
        .find(|e| e.aggregate.0.as_str() == "user.C")
        .unwrap();
    assert!(c.forgotten && c.payload.get() == "null");
    a.round(&mut server, false);
    converged(&a, &server);
    converged(&b, &server);
}

#[test]
fn another_log_is_refused() {
    let mut a = Device::new(1, Decision::Rebase);
    block_on(local::begin(a.storage(), LOG)).unwrap();
    let e = block_on(local::begin(a.storage(), "other-log")).unwrap_err();
    assert_eq!(e.code(), "SYNC");
    assert!(e.to_string().contains("LOG_MISMATCH"), "{e}");
    let page = PullResponse {
        log: "other-log".into(),
        items: Vec::new(),
        cursor: 0,
        more: false,
        head: 0,
    };
    assert!(block_on(local::apply_pull(a.storage(), &a.store.cache, &page)).is_err());
    push(&mut a, "user.A", 1, "a");
    assert_eq!(
        block_on(local::state(a.storage()))
            .unwrap()
            .unwrap()
            .log
            .as_deref(),
        Some(LOG)
    );
}

#[test]
fn applying_a_page_twice_adds_nothing() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    let b = Device::new(2, Decision::Rebase);
    push(&mut a, "user.A", 3, "a");
    a.round(&mut server, false);
    block_on(local::begin(b.storage(), LOG)).unwrap();
    let page = server.pull(0, 10);
    block_on(local::apply_pull(b.storage(), &b.store.cache, &page)).unwrap();
    // A crash before the cursor was stored cannot happen (same
    // transaction), but a repeated page must still be a no-op.
    let again = block_on(local::apply_pull(b.storage(), &b.store.cache, &page)).unwrap();
    assert_eq!(again.added, 0);
    converged(&b, &server);
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        device: usize,
        aggregate: usize,
        n: usize,
    },
    Round {
        device: usize,
        lost: bool,
    },
    Forget {
        device: usize,
        aggregate: usize,
    },
    /// The background fold of unfolded records (docs/storage.md).
    Fold {
        device: usize,
        budget: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 1..4usize).prop_map(|(device, aggregate, n)| Op::Push { device, aggregate, n }),
        4 => (0..3usize, prop::bool::weighted(0.2)).prop_map(|(device, lost)| Op::Round { device, lost }),
        1 => (0..3usize, 0..3usize).prop_map(|(device, aggregate)| Op::Forget { device, aggregate }),
        2 => (0..3usize, 1..4usize).prop_map(|(device, budget)| Op::Fold { device, budget }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any interleaving of pushes, rounds (some answers lost) and forgets on
    /// three devices (rebase, discard, rebase) ends, after every device
    /// synced twice, with the server's events on every device, each once.
    #[test]
    fn devices_converge(ops in prop::collection::vec(op(), 1..40)) {
        let mut server = Server::default();
        let mut devices = vec![
            Device::new(1, Decision::Rebase),
            Device::new(2, Decision::Discard),
            Device::new(3, Decision::Rebase),
        ];
        let aggregates = ["user.A", "user.B", "team.T"];
        for (k, op) in ops.iter().enumerate() {
            match *op {
                Op::Push { device, aggregate, n } => push(&mut devices[device], aggregates[aggregate], n, &format!("{device}-{k}")),
                Op::Round { device, lost } => devices[device].round(&mut server, lost),
                Op::Forget { device, aggregate } => {
                    devices[device].store.forget(&common::aggregate(aggregates[aggregate])).unwrap();
                }
                Op::Fold { device, budget } => block_on(async {
                    let mut tx = devices[device].storage().write().await.unwrap();
                    tx.fold(budget).await.unwrap();
                    tx.commit().await.unwrap();
                }),
            }
        }
        for _ in 0..2 {
            for d in &mut devices {
                d.round(&mut server, false);
            }
        }
        for d in &devices {
            converged(d, &server);
        }
        let mut ids: Vec<&str> = server.events().map(|e| e.id.as_str()).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), n, "an id stored twice");
    }
}

#[test]
fn a_pull_on_stale_heads_is_redone_when_another_tab_pushed() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    push(&mut a, "user.A", 1, "a");
    a.round(&mut server, false);
    let mut b = Device::new(2, Decision::Rebase);
    block_on(local::begin(b.storage(), LOG)).unwrap();
    // b's first tab pulls an empty page: its cache now says "empty log".
    let empty = PullResponse {
        log: LOG.into(),
        items: Vec::new(),
        cursor: 0,
        more: false,
        head: 0,
    };
    block_on(local::apply_pull(b.storage(), &b.store.cache, &empty)).unwrap();
    // b's second tab pushes user.A behind the first tab's back.
    let mut other = b.store.other_tab();
    other
        .push(&[entry("user.A", None, &[("user.A.did", "{}")])])
        .unwrap();
    // The first tab's guess fails on `start`; redone, it meets the conflict.
    let applied = block_on(local::apply_pull(
        b.storage(),
        &b.store.cache,
        &server.pull(0, 10),
    ))
    .unwrap();
    let conflict = applied
        .conflict
        .expect("a conflict, not a second user.A #1");
    assert_eq!(conflict.aggregate, "user.A");
    assert_eq!(conflict.pending.len(), 1);
    b.round(&mut server, false);
    converged(&b, &server);
}

#[test]
fn pulled_events_keep_their_own_created_at() {
    let mut server = Server::default();
    let mut a = Device::new(1, Decision::Rebase);
    for k in 0..5 {
        a.store.now = 10_000 + k;
        push(&mut a, "user.A", 2, "a");
    }
    a.round(&mut server, false);
    let mut b = Device::new(2, Decision::Rebase);
    b.round(&mut server, false);
    let created: Vec<u64> = b
        .events()
        .iter()
        .map(|e| e["createdAt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        created,
        [10_000, 10_000, 10_001, 10_001, 10_002, 10_002, 10_003, 10_003, 10_004, 10_004]
    );
    converged(&b, &server);
}
