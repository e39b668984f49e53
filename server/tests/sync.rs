//! The server's guarantees, against SQLite and against a PostgreSQL
//! cluster the test starts itself: each scenario runs on a fresh database
//! of each backend.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Makes fresh database URLs for one backend.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Cluster),
}

impl Backend {
    async fn database(&self, name: &str) -> String {
        match self {
            Backend::Sqlite(dir) => sqlite_url(dir.path(), name),
            Backend::Postgres(cluster) => cluster.database(name).await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite() {
    let backend = Backend::Sqlite(tempfile::tempdir().unwrap());
    scenarios(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let backend = Backend::Postgres(cluster);
    scenarios(&backend).await;
    two_instances_behave_as_one(&backend).await;
}

async fn scenarios(backend: &Backend) {
    a_push_is_atomic_across_aggregates(&backend.database("atomic").await).await;
    a_stale_sequence_conflicts_and_writes_nothing(&backend.database("conflict").await).await;
    retries_are_answered_held(&backend.database("retry").await).await;
    forget_erases_payloads_and_is_pulled(&backend.database("forget").await).await;
    tokens_limit_each_operation(&backend.database("auth").await).await;
    malformed_requests_get_json_errors(&backend.database("malformed").await).await;
    cors_preflight_needs_no_token(&backend.database("cors").await).await;
    a_replaced_log_is_refused(&backend.database("logs").await).await;
    pulls_are_bounded(&backend.database("bounded").await).await;
    let figure = late_commits_are_never_skipped(&backend.database("late").await).await;
    eprintln!(
        "[{}] {figure:.0} pushes/s (8 concurrent writers, 1 event each, one append point)",
        backend.name()
    );
    for writers in [1, 8] {
        let rate = throughput(&backend.database(&format!("rate{writers}")).await, writers).await;
        eprintln!(
            "[{}] {rate:.0} pushes/s of 1 event, {writers} writer(s) on distinct aggregates",
            backend.name()
        );
    }
    let rate = bulk(&backend.database("bulk").await).await;
    eprintln!(
        "[{}] {rate:.0} events/s: 10 writers each pushing 1,000 events in pushes of 100",
        backend.name()
    );
    shutdown_answers_long_polls(&backend.database("shutdown").await).await;
}

/// Events per second of 10 concurrent devices pushing 1,000 events each
/// (pushes of 100); every event once, sequences gap-free.
async fn bulk(database: &str) -> f64 {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for p in 0..10u64 {
                    let events: Vec<Value> = (1..=100u64)
                        .map(|k| {
                            let sequence = p * 100 + k;
                            event(
                                &format!("b{w}-{sequence}"),
                                &format!("bulk.D{w}"),
                                sequence,
                                json!({"k": k, "text": "some payload text"}),
                            )
                        })
                        .collect();
                    let a = c.push(&events).await;
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = 10_000.0 / started.elapsed().as_secs_f64();
    let (items, _) = c.pull_all(0).await;
    assert_eq!(items.len(), 10_000);
    let ids: HashSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    server.shutdown().await.unwrap();
    rate
}

/// Pushes per second of `writers` concurrent clients, 1 event a push, each
/// on its own aggregate (no conflicts): the cost of one append point.
async fn throughput(database: &str, writers: usize) -> f64 {
    const PUSHES: usize = 150;
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for p in 0..PUSHES {
                    let a = c
                        .push(&[event(
                            &format!("t{w}-{p}"),
                            &format!("rate.W{w}"),
                            p as u64 + 1,
                            json!({"p": p}),
                        )])
                        .await;
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (writers * PUSHES) as f64 / started.elapsed().as_secs_f64();
    assert_eq!(
        c.get("/v1/info").await.body["head"],
        (writers * PUSHES) as u64
    );
    server.shutdown().await.unwrap();
    rate
}

async fn a_push_is_atomic_across_aggregates(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let info = c.get("/v1/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.body["protocol"], 1);
    assert_eq!(info.body["head"], 0);
    let log = info.body["log"].as_str().unwrap().to_owned();
    let a = c
        .push(&[
            event("a1", "user.A", 1, json!({"name": "Ada", "n": [1, 2.50]})),
            event("b1", "user.B", 1, json!(null)),
            event("a2", "user.A", 2, json!("x")),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["log"], log.as_str());
    assert_eq!(statuses(&a), ["accepted", "accepted", "accepted"]);
    let positions: Vec<u64> = a.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3]);
    let (items, cursor) = c.pull_all(0).await;
    assert_eq!(cursor, 3);
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a1", "b1", "a2"]);
    assert_eq!(items[0]["type"], "event");
    assert_eq!(items[0]["payload"], json!({"name": "Ada", "n": [1, 2.50]}));
    assert_eq!(items[0]["aggregate"], json!(["user", "A"]));
    assert_eq!(items[2]["sequence"], 2);
    assert_eq!(items[2]["position"], 3);
    // A push of which one event fails writes none of its events.
    let a = c
        .push(&[
            event("c1", "user.C", 1, json!({})),
            event("a9", "user.A", 9, json!({})),
        ])
        .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(statuses(&a), ["not_applied", "conflict"]);
    assert_eq!(c.pull_all(3).await.0.len(), 0);
    server.shutdown().await.unwrap();
}

async fn a_stale_sequence_conflicts_and_writes_nothing(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let a = c
        .push(&[
            event("r1", "user.A", 1, json!({"remote": 1})),
            event("r2", "user.A", 2, json!({"remote": 2})),
        ])
        .await;
    assert_eq!(a.status, 200);
    // Another device, which never saw r1 and r2, pushes user.A from sequence 1.
    let a = c
        .push(&[
            event("d1", "user.B", 1, json!({})),
            event("p1", "user.A", 1, json!({"pending": 1})),
            event("p2", "user.A", 2, json!({"pending": 2})),
        ])
        .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "CONFLICT");
    assert_eq!(statuses(&a), ["not_applied", "conflict", "conflict"]);
    let conflict = &a.body["conflicts"][0];
    assert_eq!(conflict["aggregate"], json!(["user", "A"]));
    assert_eq!(conflict["expected"], 0);
    assert_eq!(conflict["head"], 2);
    assert_eq!(conflict["more"], false);
    let remote: Vec<&str> = conflict["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(remote, ["r1", "r2"]);
    assert_eq!(conflict["events"][1]["position"], 2);
    let (items, _) = c.pull_all(0).await;
    assert_eq!(items.len(), 2, "nothing of the refused push was written");
    // Rebased after the remote head, the same ids go through.
    let a = c
        .push(&[
            event("d1", "user.B", 1, json!({})),
            event("p1", "user.A", 3, json!({"pending": 1})),
            event("p2", "user.A", 4, json!({"pending": 2})),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(statuses(&a), ["accepted", "accepted", "accepted"]);
    // A gap conflicts too (the device expects events the server lacks).
    let a = c.push(&[event("g", "user.A", 9, json!({}))]).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.body["conflicts"][0]["head"], 4);
    assert_eq!(a.body["conflicts"][0]["expected"], 8);
    server.shutdown().await.unwrap();
}

async fn retries_are_answered_held(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let events = [
        event("e1", "user.A", 1, json!({"v": 1})),
        event("e2", "user.B", 1, json!({"v": 2})),
        event("e3", "user.A", 2, json!({"v": 3})),
    ];
    let first = c.push(&events).await;
    assert_eq!(first.status, 200);
    // The answer was lost: the device sends the same events again, and more.
    let mut again = events.to_vec();
    again.push(event("e4", "user.A", 3, json!({"v": 4})));
    let a = c.push(&again).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(statuses(&a), ["held", "held", "held", "accepted"]);
    for k in 0..3 {
        assert_eq!(
            a.body["results"][k]["position"],
            first.body["results"][k]["position"]
        );
        assert_eq!(
            a.body["results"][k]["sequence"],
            first.body["results"][k]["sequence"]
        );
    }
    assert_eq!(a.body["results"][3]["position"], 4);
    let (items, _) = c.pull_all(0).await;
    assert_eq!(items.len(), 4, "no event stored twice");
    // Concurrent retries of one push: one accepts, the others hold.
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                statuses(&c.push(&[event("once", "user.Z", 1, json!({}))]).await)
            })
        })
        .collect();
    let mut accepted = 0;
    for h in handles {
        let s = h.await.unwrap();
        assert!(s == ["accepted"] || s == ["held"], "{s:?}");
        accepted += usize::from(s == ["accepted"]);
    }
    assert_eq!(accepted, 1);
    assert_eq!(c.pull_all(0).await.0.len(), 5);
    server.shutdown().await.unwrap();
}

async fn forget_erases_payloads_and_is_pulled(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let a = c
        .push(&[
            event("a1", "user.A", 1, json!({"email": "ada@secret.example"})),
            event("b1", "user.B", 1, json!({"email": "bob@kept.example"})),
            event("a2", "user.A", 2, json!({"email": "ada2@secret.example"})),
        ])
        .await;
    assert_eq!(a.status, 200);
    // A device pulled the events before the forget.
    let (before, cursor) = c.pull_all(0).await;
    assert_eq!(before.len(), 3);
    let forget = json!({ "id": "f-1", "filter": { "queries": [ { "aggregate": "user.A" } ] } });
    let a = c.post("/v1/forget", &forget).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["events"], json!(["a1", "a2"]));
    assert_eq!(a.body["position"], 4);
    assert_eq!(payloads_containing(database, "secret.example").await, 0);
    assert_eq!(payloads_containing(database, "kept.example").await, 1);
    // The device that pulled before learns of the forget.
    let (after, _) = c.pull_all(cursor).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["type"], "forget");
    assert_eq!(after[0]["id"], "f-1");
    assert_eq!(after[0]["events"], json!(["a1", "a2"]));
    // A fresh device gets the events forgotten, metadata kept.
    let (all, _) = c.pull_all(0).await;
    assert_eq!(all[0]["payload"], Value::Null);
    assert_eq!(all[0]["forgotten"], true);
    assert_eq!(all[0]["sequence"], 1);
    assert_eq!(all[0]["action"], json!(["user", "A", "happened"]));
    assert_eq!(all[1]["forgotten"], false);
    // A retried forget answers as before and records nothing new.
    let again = c.post("/v1/forget", &forget).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, a.body);
    assert_eq!(c.get("/v1/info").await.body["head"], 4);
    // A payload the server forgot is never taken back by a push of the id.
    let back = c
        .push(&[event(
            "a1",
            "user.A",
            1,
            json!({"email": "ada@secret.example"}),
        )])
        .await;
    assert_eq!(statuses(&back), ["held"]);
    assert_eq!(payloads_containing(database, "secret.example").await, 0);
    // Position ranges narrow a forget; nothing newly matching still records it.
    let a = c
        .post(
            "/v1/forget",
            &json!({ "id": "f-2", "filter": { "queries": [ { "position": { "from": 2, "to": 3 } } ] } }),
        )
        .await;
    assert_eq!(a.body["events"], json!(["b1"]));
    // Patterns on the action: a literal prefix (a key range) and a scan.
    let a = c
        .push(&[
            event("c1", "user.C", 1, json!({"c": "gone"})),
            event("cc1", "user.CC", 1, json!({})),
        ])
        .await;
    assert_eq!(a.status, 200);
    let a = c
        .post(
            "/v1/forget",
            &json!({ "id": "f-3", "filter": { "queries": [ { "subjects": "user.C.>" } ] } }),
        )
        .await;
    assert_eq!(a.body["events"], json!(["c1"]), "{}", a.body);
    let a = c
        .post(
            "/v1/forget",
            &json!({ "id": "f-4", "filter": { "queries": [ { "subjects": "*.CC.happened" } ] } }),
        )
        .await;
    assert_eq!(a.body["events"], json!(["cc1"]), "{}", a.body);
    server.shutdown().await.unwrap();
}

fn auth_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("auth.json");
    std::fs::write(
        &path,
        json!({ "tokens": [
            { "token": "ada", "push": ["user.A", "user.A.>"], "pull": ["user.>"], "forget": ["user.A"] },
            { "token": "reader", "push": [], "pull": ["user.B"], "forget": [] },
            { "token": "mute", "push": [">"] }
        ] })
        .to_string(),
    )
    .unwrap();
    path
}

async fn tokens_limit_each_operation(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(database, Some(&auth_file(dir.path())), &[]).await;
    let anonymous = Client::new(&server, None);
    let unknown = Client::new(&server, Some("nobody"));
    let ada = Client::new(&server, Some("ada"));
    let reader = Client::new(&server, Some("reader"));
    let mute = Client::new(&server, Some("mute"));
    for c in [&anonymous, &unknown] {
        let a = c.push(&[event("x", "user.A", 1, json!({}))]).await;
        assert_eq!(a.status, 401, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "UNAUTHORIZED");
        assert!(a.body["log"].is_string());
        assert_eq!(c.get("/v1/pull").await.status, 401);
        assert_eq!(
            c.post("/v1/forget", &json!({"id": "f", "filter": {}}))
                .await
                .status,
            401
        );
    }
    let basic = request(
        server.addr,
        "GET",
        "/v1/pull",
        &[("authorization", "Basic YWRhOg==")],
        None,
    )
    .await;
    assert_eq!(basic.status, 401);
    // A push with one aggregate outside the token's patterns writes nothing.
    let a = ada
        .push(&[
            event("a1", "user.A", 1, json!({})),
            event("b1", "user.B", 1, json!({})),
        ])
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "FORBIDDEN");
    assert_eq!(statuses(&a), ["not_applied", "forbidden"]);
    assert_eq!(
        mute.push(&[event("b1", "user.B", 1, json!({}))])
            .await
            .status,
        200
    );
    let a = ada
        .push(&[
            event("a1", "user.A", 1, json!({})),
            event("a.x", "user.A.x", 1, json!({})),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        mute.push(&[event("c1", "team.C", 1, json!({}))])
            .await
            .status,
        200
    );
    // Pulls show only the token's aggregates, and move past the rest.
    let (items, cursor) = reader.pull_all(0).await;
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["b1"]);
    assert_eq!(cursor, 4);
    let (items, _) = ada.pull_all(0).await;
    assert_eq!(items.len(), 3, "user.> but not team.C");
    let a = mute.get("/v1/pull").await;
    assert_eq!(a.status, 403);
    // A conflict shows remote events only to tokens that may pull them.
    let a = mute.push(&[event("c0", "team.C", 1, json!({}))]).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.body["conflicts"][0]["events"], json!([]));
    assert_eq!(a.body["conflicts"][0]["more"], true);
    // A forget matching an aggregate outside the forget patterns erases nothing.
    let a = ada
        .post(
            "/v1/forget",
            &json!({"id": "f1", "filter": {"queries": [{"aggregate": "user.>"}]}}),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "FORBIDDEN");
    let (items, _) = ada.pull_all(0).await;
    assert!(items.iter().all(|i| i["forgotten"] == false));
    let a = ada
        .post(
            "/v1/forget",
            &json!({"id": "f2", "filter": {"queries": [{"aggregate": "user.A"}]}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["events"], json!(["a1"]));
    // The reader does not see a forget of events it may not pull.
    let (items, _) = reader.pull_all(4).await;
    assert!(items.is_empty(), "{items:?}");
    server.shutdown().await.unwrap();
}

async fn malformed_requests_get_json_errors(database: &str) {
    let server = server(database, None, &[]).await;
    let addr = server.addr;
    let json_post = |path: &'static str, body: Vec<u8>| async move {
        request(
            addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body),
        )
        .await
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/push", b"".to_vec(), 400, "BAD_REQUEST"),
        ("/v1/push", b"{".to_vec(), 400, "BAD_REQUEST"),
        ("/v1/push", b"[]".to_vec(), 400, "BAD_REQUEST"),
        ("/v1/push", vec![0xff, 0xfe, 0x00], 400, "BAD_REQUEST"),
        ("/v1/push", br#"{"events":[{"id":"x"}]}"#.to_vec(), 400, "BAD_REQUEST"),
        ("/v1/push", br#"{"events":[],"more":1}"#.to_vec(), 400, "BAD_REQUEST"),
        (
            "/v1/push",
            json!({"events": [event("x", "user.A", 1, json!({})), event("x", "user.A", 2, json!({}))]})
                .to_string()
                .into_bytes(),
            400,
            "BAD_REQUEST",
        ),
        (
            "/v1/push",
            json!({"events": [event("x", "user.*", 1, json!({}))]}).to_string().into_bytes(),
            400,
            "BAD_REQUEST",
        ),
        (
            "/v1/push",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            400,
            "BAD_REQUEST",
        ),
        ("/v1/forget", br#"{"id":"f","filter":{"limit":2}}"#.to_vec(), 400, "BAD_REQUEST"),
        ("/v1/forget", br#"{"id":"f","filter":{"queries":[{"subjects":"a.>.b"}]}}"#.to_vec(), 400, "BAD_REQUEST"),
        ("/v1/push", vec![b' '; 5 * 1024 * 1024], 413, "TOO_LARGE"),
        (
            "/v1/push",
            json!({"events": (0..1001).map(|i| event(&format!("e{i}"), "user.A", i + 1, json!({}))).collect::<Vec<_>>()})
                .to_string()
                .into_bytes(),
            413,
            "TOO_LARGE",
        ),
    ];
    for (path, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let a = json_post(path, body).await;
        assert_eq!(a.status, status, "{path} {shown}: {}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{path} {shown}");
        assert!(a.body["error"]["message"].as_str().unwrap().len() > 5);
        assert!(a.body["log"].is_string(), "every answer carries the log");
    }
    let a = request(
        addr,
        "POST",
        "/v1/push",
        &[("content-type", "text/plain")],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    for (method, path, status, code) in [
        ("GET", "/v1/nothing", 404, "NOT_FOUND"),
        ("POST", "/v2/push", 400, "UNSUPPORTED_PROTOCOL"),
        ("GET", "/v1/push", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/pull?after=-1", 400, "BAD_REQUEST"),
        ("GET", "/v1/pull?limit=5000", 400, "BAD_REQUEST"),
        ("GET", "/v1/pull?wait=31", 400, "BAD_REQUEST"),
        ("GET", "/v1/pull?cursor=1", 400, "BAD_REQUEST"),
    ] {
        let a = request(addr, method, path, &[], None).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{method} {path}");
        assert!(a.body["log"].is_string());
    }
    // The server is still fine.
    assert_eq!(
        request(addr, "GET", "/v1/info", &[], None).await.status,
        200
    );
    server.shutdown().await.unwrap();
}

async fn cors_preflight_needs_no_token(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(
        database,
        Some(&auth_file(dir.path())),
        &["http://app.example", "http://localhost:5173"],
    )
    .await;
    let addr = server.addr;
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ];
        request(addr, "OPTIONS", "/v1/push", &headers, None).await
    };
    let a = preflight("http://localhost:5173").await;
    assert!(a.status == 200 || a.status == 204, "{}", a.status);
    let header = |a: &Answer, name: &str| {
        a.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(
        header(&a, "access-control-allow-origin"),
        "http://localhost:5173"
    );
    assert!(header(&a, "access-control-allow-headers").contains("authorization"));
    assert!(header(&a, "access-control-allow-headers").contains("content-type"));
    assert!(header(&a, "access-control-allow-methods").contains("post"));
    let other = preflight("http://evil.example").await;
    assert_eq!(header(&other, "access-control-allow-origin"), "");
    // Answers, errors included, carry the header for allowed origins.
    let a = request(
        server.addr,
        "GET",
        "/v1/pull",
        &[("origin", "http://app.example")],
        None,
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(
        header(&a, "access-control-allow-origin"),
        "http://app.example"
    );
    server.shutdown().await.unwrap();
}

/// A pull stops at about 8 MiB of items (at least one), and a token that
/// sees few rows moves past many others in one pull.
async fn pulls_are_bounded(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(database, Some(&auth_file(dir.path())), &[]).await;
    let mute = Client::new(&server, Some("mute"));
    let reader = Client::new(&server, Some("reader"));
    let big = "x".repeat(3 * 1024 * 1024);
    for k in 1..=4u64 {
        let a = mute
            .push(&[event(&format!("big{k}"), "user.B", k, json!(big))])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = reader.get("/v1/pull?after=0").await;
    assert_eq!(
        a.body["items"].as_array().unwrap().len(),
        3,
        "3 × 3 MiB reach 8 MiB"
    );
    assert_eq!(
        (a.body["cursor"].as_u64(), a.body["more"].as_bool()),
        (Some(3), Some(true))
    );
    let a = reader.get("/v1/pull?after=3").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["more"], false);
    // 1,200 rows the reader may not see, then one it may.
    for p in 0..2u64 {
        let events: Vec<Value> = (1..=600u64)
            .map(|k| event(&format!("h{p}-{k}"), "hidden.H", p * 600 + k, json!({})))
            .collect();
        assert_eq!(mute.push(&events).await.status, 200);
    }
    assert_eq!(
        mute.push(&[event("b5", "user.B", 5, json!({}))])
            .await
            .status,
        200
    );
    let a = reader.get("/v1/pull?after=4&limit=1").await;
    assert_eq!(a.body["items"][0]["id"], "b5", "{}", a.body);
    assert_eq!(a.body["cursor"], 1_205);
    server.shutdown().await.unwrap();
}

async fn a_replaced_log_is_refused(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let log = c.get("/v1/info").await.body["log"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = c
        .post(
            "/v1/push",
            &json!({"log": "another-log", "events": [event("x", "user.A", 1, json!({}))]}),
        )
        .await;
    assert_eq!(a.status, 412, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "LOG_MISMATCH");
    assert_eq!(a.body["log"], log.as_str());
    assert_eq!(c.get("/v1/pull?log=another-log").await.status, 412);
    let a = c
        .post(
            "/v1/push",
            &json!({"log": log, "events": [event("x", "user.A", 1, json!({}))]}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(c.get(&format!("/v1/pull?log={log}")).await.status, 200);
    // The log id survives a restart.
    server.shutdown().await.unwrap();
    let server = common::server(database, None, &[]).await;
    let c = Client::new(&server, None);
    assert_eq!(c.get("/v1/info").await.body["log"], log.as_str());
    server.shutdown().await.unwrap();
}

/// Many concurrent writers and a long-polling reader, which must see every
/// event exactly once, in position order, positions without gaps. Returns
/// pushes per second.
async fn late_commits_are_never_skipped(database: &str) -> f64 {
    late_commits_on(&[database]).await
}

async fn late_commits_on(databases: &[&str]) -> f64 {
    const WRITERS: usize = 8;
    const PUSHES: usize = 60;
    let mut servers = Vec::new();
    for d in databases {
        servers.push(server(d, None, &[]).await);
    }
    let clients: Vec<Client> = servers.iter().map(|s| Client::new(s, None)).collect();
    let total = WRITERS * PUSHES;
    let reader = {
        let c = clients[clients.len() - 1].clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut last = 0;
            while seen.len() < total && Instant::now() < deadline {
                let a = c
                    .get(&format!("/v1/pull?after={cursor}&limit=7&wait=5"))
                    .await;
                assert_eq!(a.status, 200, "{}", a.body);
                for item in a.body["items"].as_array().unwrap() {
                    let position = item["position"].as_u64().unwrap();
                    assert!(position > last, "items in position order");
                    last = position;
                    if item["type"] == "event" {
                        seen.push((position, item["id"].as_str().unwrap().to_owned()));
                    }
                }
                cursor = a.body["cursor"].as_u64().unwrap();
            }
            seen
        })
    };
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = clients[w % clients.len()].clone();
            tokio::spawn(async move {
                for p in 0..PUSHES {
                    // Half the writers share one aggregate, retrying on conflicts.
                    let aggregate = if w % 2 == 0 {
                        "shared.S".to_owned()
                    } else {
                        format!("own.W{w}")
                    };
                    let mut sequence = if w % 2 == 0 { 1 } else { p as u64 + 1 };
                    loop {
                        let id = format!("w{w}-p{p}");
                        let a = c
                            .push(&[event(&id, &aggregate, sequence, json!({"w": w}))])
                            .await;
                        match a.status {
                            200 => break,
                            409 => sequence = a.body["conflicts"][0]["head"].as_u64().unwrap() + 1,
                            s => panic!("push answered {s}: {}", a.body),
                        }
                    }
                }
            })
        })
        .collect();
    // Forgets commit among the pushes: they take positions too.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forgetter = {
        let (c, done) = (clients[0].clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 1_000 {
                let filter = json!({"queries": [{"aggregate": "own.W1"}]});
                let a = c
                    .post(
                        "/v1/forget",
                        &json!({"id": format!("f{n}"), "filter": filter}),
                    )
                    .await;
                assert_eq!(a.status, 200, "{}", a.body);
                n += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    forgetter.await.unwrap();
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), total, "the reader saw every event");
    let ids: HashSet<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(ids.len(), total, "each once");
    let (items, _) = clients[0].pull_all(0).await;
    let stored: Vec<(u64, String)> = items
        .iter()
        .filter(|i| i["type"] == "event")
        .map(|i| {
            (
                i["position"].as_u64().unwrap(),
                i["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen, stored,
        "the live reader saw what the log holds, in its order"
    );
    // The shared aggregate's sequences are gap-free.
    let shared: Vec<u64> = items
        .iter()
        .filter(|i| i["aggregate"] == json!(["shared", "S"]))
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        shared,
        (1..=(WRITERS / 2 * PUSHES) as u64).collect::<Vec<_>>()
    );
    for s in servers {
        s.shutdown().await.unwrap();
    }
    rate
}

async fn shutdown_answers_long_polls(database: &str) {
    let server = server(database, None, &[]).await;
    let c = Client::new(&server, None);
    let poll = tokio::spawn(async move { c.get("/v1/pull?after=0&wait=30").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let a = poll.await.unwrap();
    assert_eq!(a.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

async fn two_instances_behave_as_one(backend: &Backend) {
    let database = backend.database("two").await;
    let one = server(&database, None, &[]).await;
    let two = server(&database, None, &[]).await;
    let (c1, c2) = (Client::new(&one, None), Client::new(&two, None));
    assert_eq!(
        c1.get("/v1/info").await.body["log"],
        c2.get("/v1/info").await.body["log"]
    );
    // A long poll on one instance sees a push through the other.
    let waiting = {
        let c2 = c2.clone();
        tokio::spawn(async move { c2.get("/v1/pull?after=0&wait=10").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(
        c1.push(&[event("x1", "user.A", 1, json!({}))]).await.status,
        200
    );
    let a = waiting.await.unwrap();
    assert_eq!(a.body["items"][0]["id"], "x1");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Delivery across instances: LISTEN/NOTIFY wakes the other's long polls.
    let mut delays = Vec::new();
    for k in 0..5u64 {
        let waiting = {
            let c2 = c2.clone();
            tokio::spawn(async move { c2.get(&format!("/v1/pull?after={}&wait=10", k + 1)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let id = format!("y{k}");
        assert_eq!(
            c1.push(&[event(&id, "user.Y", k + 1, json!({}))])
                .await
                .status,
            200
        );
        let a = waiting.await.unwrap();
        assert_eq!(a.body["items"][0]["id"], id.as_str());
        delays.push(started.elapsed());
    }
    delays.sort();
    eprintln!(
        "[postgres, two instances] push to delivery on the other instance: median {:?}, max {:?}",
        delays[2], delays[4]
    );
    // The sequence check holds across instances.
    let a = c2.push(&[event("x2", "user.A", 1, json!({}))]).await;
    assert_eq!(a.status, 409);
    // Retried through the other instance, an id is held.
    assert_eq!(
        statuses(&c2.push(&[event("x1", "user.A", 1, json!({}))]).await),
        ["held"]
    );
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    // Concurrent writers through two instances, one reader.
    let database = backend.database("two_late").await;
    let rate = late_commits_on(&[&database, &database]).await;
    eprintln!("[postgres, two instances] {rate:.0} pushes/s");
}
