//! Erasure on disk (`--scrub-forgotten`, docs/privacy.md): after a forget,
//! the raw bytes of the database's files are searched for the erased
//! payloads' markers. Each check has its control (the same steps with
//! scrubbing off, or the bytes before the forget), so that it can fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use eventstore_server::db::Scrub;
use serde_json::{json, Value};

/// Whether `needle` occurs in the file's bytes (`false` when there is no such file).
fn file_holds(path: &Path, needle: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let needle = needle.as_bytes();
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// The SQLite file of a `sqlite://` URL and its `-wal` and `-shm` files.
fn sqlite_files(url: &str) -> [PathBuf; 3] {
    let db = PathBuf::from(url.trim_start_matches("sqlite://"));
    let with = |suffix: &str| {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    [db.clone(), with("-wal"), with("-shm")]
}

/// Unique markers: `gone` in the payloads forgotten, `kept` in the others.
struct Markers {
    gone: String,
    kept: String,
}

impl Markers {
    fn new() -> Self {
        let u = uuid::Uuid::new_v4().simple().to_string();
        Markers {
            gone: format!("GONE{u}"),
            kept: format!("KEPT{u}"),
        }
    }
}

/// Pushes user.B's event (kept) and three of user.A (to forget), one with
/// a 20 kB payload (SQLite overflow pages, PostgreSQL TOAST).
async fn push_marked(c: &Client, m: &Markers) {
    let big = format!("{}{}", m.gone, "x".repeat(20_000));
    let a = c
        .push(&[
            event("b1", "user.B", 1, json!({ "email": m.kept })),
            event("a1", "user.A", 1, json!({ "email": m.gone })),
            event("a2", "user.A", 2, json!({ "note": big })),
            event("a3", "user.A", 3, json!({ "email": m.gone })),
        ])
        .await;
    assert_eq!(statuses(&a), ["accepted"; 4], "{}", a.body);
}

/// Forgets user.A; returns the forget's position and the ids it erased.
async fn forget_a(c: &Client, id: &str) -> (u64, Value) {
    let a = c
        .post(
            "/v1/forget",
            &json!({ "id": id, "filter": { "queries": [ { "aggregate": "user.A" } ] } }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    (
        a.body["position"].as_u64().unwrap(),
        a.body["events"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_keep_no_forgotten_payload() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "scrubbed");
    let [db, wal, shm] = sqlite_files(&url);
    let server = server_with(&url, None, &[], None, Scrub::Full).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_marked(&c, &m).await;
    // Before the forget the marker is on disk (in the WAL): the search works.
    assert!(file_holds(&db, &m.gone) || file_holds(&wal, &m.gone));
    assert_eq!(forget_a(&c, "f-1").await.1, json!(["a1", "a2", "a3"]));
    // Read while the server runs: its close would checkpoint and delete the WAL.
    for file in [&db, &wal, &shm] {
        assert!(
            !file_holds(file, &m.gone),
            "{} still holds a forgotten payload",
            file.display()
        );
    }
    assert!(
        file_holds(&db, &m.kept),
        "the kept payload is in the database file"
    );
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "the WAL is truncated"
    );
    // Later writes and a retried forget change nothing of that.
    let a = c
        .push(&[event("b2", "user.B", 2, json!({ "email": m.kept }))])
        .await;
    assert_eq!(statuses(&a), ["accepted"]);
    assert_eq!(forget_a(&c, "f-1").await.1, json!(["a1", "a2", "a3"]));
    for file in [&db, &wal, &shm] {
        assert!(!file_holds(file, &m.gone), "{}", file.display());
    }
    server.shutdown().await.unwrap();
    for file in [&db, &wal, &shm] {
        assert!(!file_holds(file, &m.gone), "{}", file.display());
    }
}

/// The controls: with `--scrub-forgotten off` the same steps leave the
/// payload in the WAL; a checkpoint alone (no secure_delete) moves it
/// into the database file's free space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_without_scrubbing_keeps_forgotten_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "unscrubbed");
    let [db, wal, _] = sqlite_files(&url);
    let server = server_with(&url, None, &[], None, Scrub::Off).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_marked(&c, &m).await;
    assert_eq!(forget_a(&c, "f-1").await.1, json!(["a1", "a2", "a3"]));
    assert_eq!(
        payloads_containing(&url, &m.gone).await,
        0,
        "erased for SQL"
    );
    assert!(
        file_holds(&wal, &m.gone),
        "no checkpoint: the WAL keeps the push's frames"
    );
    // A checkpoint without secure_delete: the WAL is empty, the freed cells are not.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(busy, 0);
    pool.close().await;
    assert!(!file_holds(&wal, &m.gone));
    assert!(
        file_holds(&db, &m.gone),
        "without secure_delete the freed bytes stay in the database file"
    );
    server.shutdown().await.unwrap();
}

/// A reader holding an old snapshot while a forget checkpoints: the
/// checkpoint waits for it (busy handler, bounded tries) rather than
/// leaving frames behind, and the forget answers once it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoint_waits_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "readers");
    let [db, wal, _] = sqlite_files(&url);
    let server = server_with(&url, None, &[], None, Scrub::Full).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_marked(&c, &m).await;
    // A reader in a transaction that saw the payloads, released after 1 s.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut reader = pool.begin().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE payload IS NOT NULL")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(n, 4);
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader.rollback().await.unwrap();
    });
    let started = Instant::now();
    assert_eq!(forget_a(&c, "f-1").await.1, json!(["a1", "a2", "a3"]));
    let waited = started.elapsed();
    release.await.unwrap();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    for file in [&db, &wal] {
        assert!(!file_holds(file, &m.gone), "{}", file.display());
    }
    pool.close().await;
    server.shutdown().await.unwrap();
}

/// Push and forget rates with and without scrubbing (SQLite): the cost of
/// secure_delete on pushes and of the checkpoint on forgets. Bounded:
/// 2,000 events, 150 single pushes, 40 forgets per setting and round.
/// Run alone for figures: `cargo test -p eventstore-server --test erasure
/// sqlite_scrub_cost -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scrub_cost() {
    const ROUNDS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    // Per setting: (events/s in pushes of 100, pushes/s of 1 event, ms per forget).
    let mut figures: Vec<(Scrub, Vec<[f64; 3]>)> =
        vec![(Scrub::Full, Vec::new()), (Scrub::Off, Vec::new())];
    for round in 0..ROUNDS {
        // Alternate which setting goes first (the machine's load drifts).
        figures.reverse();
        for (scrub, rounds) in &mut figures {
            let url = sqlite_url(dir.path(), &format!("cost{round}{scrub:?}"));
            rounds.push(scrub_cost_round(&url, *scrub).await);
        }
    }
    figures.sort_by_key(|f| f.0 != Scrub::Full);
    for (scrub, rounds) in &figures {
        let median = |i: usize| {
            let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!(
            "[sqlite, scrub {scrub:?}, median of {ROUNDS}] {:.0} events/s in pushes of 100, {:.0} pushes/s of 1 event, {:.1} ms per forget of 50 events",
            median(0),
            median(1),
            median(2)
        );
    }
}

async fn scrub_cost_round(url: &str, scrub: Scrub) -> [f64; 3] {
    let server = server_with(url, None, &[], None, scrub).await;
    let c = Client::new(&server, None);
    let mut sequences = [0u64; 40];
    let started = Instant::now();
    for p in 0..20u64 {
        let events: Vec<Value> = (0..100u64)
            .map(|k| {
                let u = ((p * 100 + k) % 40) as usize;
                sequences[u] += 1;
                event(
                    &format!("e{p}-{k}"),
                    &format!("cost.U{u}"),
                    sequences[u],
                    json!({ "email": "someone@example.org", "k": k }),
                )
            })
            .collect();
        let a = c.push(&events).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let bulk = 2_000.0 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for p in 0..150u64 {
        let a = c
            .push(&[event(
                &format!("s{p}"),
                "cost.single",
                p + 1,
                json!({ "p": p }),
            )])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let single = 150.0 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for u in 0..40 {
        let a = c
            .post(
                "/v1/forget",
                &json!({ "id": format!("f{u}"), "filter": { "queries": [ { "aggregate": format!("cost.U{u}") } ] } }),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["events"].as_array().unwrap().len(), 50);
    }
    let forget_ms = started.elapsed().as_secs_f64() * 1000.0 / 40.0;
    server.shutdown().await.unwrap();
    [bulk, single, forget_ms]
}

/// The path of a table's heap file and of every file of its database's directory.
async fn relation_file(cluster: &Cluster, url: &str, table: &str) -> PathBuf {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let path: String = sqlx::query_scalar("SELECT pg_relation_filepath($1)")
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
    pool.close().await;
    cluster.data_dir().join(path)
}

/// The heap file of the `events` table's TOAST table.
async fn toast_file(cluster: &Cluster, url: &str) -> PathBuf {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let path: String = sqlx::query_scalar(
        "SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 'events'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    cluster.data_dir().join(path)
}

/// Files under `dir` (recursively) whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if file_holds(&p, needle) {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// Waits (bounded) until the vacuum task covered the forget at `position`.
async fn wait_scrubbed(url: &str, position: u64) -> Duration {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let started = Instant::now();
    loop {
        let covered: i64 = sqlx::query_scalar("SELECT position FROM scrubbed WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        if covered >= position as i64 {
            pool.close().await;
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no vacuum within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Many small events of user.A, pushed after user.B's: on the heap page
/// the forgotten tuples lie below the kept ones, where a plain VACUUM's
/// compaction moves nothing over them.
async fn push_many(c: &Client, m: &Markers) {
    let mut events = vec![event("b1", "user.B", 1, json!({ "email": m.kept }))];
    for k in 1..=12u64 {
        events.push(event(
            &format!("a{k}"),
            "user.A",
            k,
            json!({ "email": format!("{}-{k}", m.gone), "pad": "y".repeat(100) }),
        ));
    }
    let a = c.push(&events).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_heap_after_forget() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // What a plain VACUUM achieves: the tuples are dead and their space
    // free, but the bytes are not zeroed.
    let url = cluster.database("vacuum_plain").await;
    let server = server_with(&url, None, &[], None, Scrub::Vacuum).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_many(&c, &m).await;
    let heap = relation_file(&cluster, &url, "events").await;
    assert!(file_holds(&heap, &m.gone), "before the forget: in the heap");
    let (position, erased) = forget_a(&c, "f-1").await;
    assert_eq!(erased.as_array().unwrap().len(), 12);
    let waited = wait_scrubbed(&url, position).await;
    let after = relation_file(&cluster, &url, "events").await;
    assert_eq!(after, heap, "a plain VACUUM keeps the file");
    let left = (1..=12)
        .filter(|k| file_holds(&heap, &format!("{}-{k}", m.gone)))
        .count();
    eprintln!("[postgres, scrub Vacuum] VACUUM {waited:?} after the forget; {left} of 12 forgotten payloads still in the heap file's bytes");
    assert!(
        left > 0,
        "plain VACUUM leaves forgotten bytes in free space"
    );
    assert!(file_holds(&heap, &m.kept));
    server.shutdown().await.unwrap();

    // VACUUM FULL (the default): the table is rewritten into a new file;
    // the old one is gone after the next checkpoint.
    let url = cluster.database("vacuum_full").await;
    let server = server_with(&url, None, &[], None, Scrub::Full).await;
    let c = Client::new(&server, None);
    push_many(&c, &m).await;
    // A payload large enough for TOAST (compressed: so not a repeat).
    let big = Markers::new();
    let noise: String = (0..3_000).map(|k| format!("{k:x}")).collect();
    let a = c
        .push(&[event(
            "a13",
            "user.A",
            13,
            json!({ "note": format!("{}{noise}", big.gone) }),
        )])
        .await;
    assert_eq!(statuses(&a), ["accepted"]);
    let heap = relation_file(&cluster, &url, "events").await;
    assert!(file_holds(&heap, &m.gone));
    let toast = toast_file(&cluster, &url).await;
    assert!(
        file_holds(&toast, &big.gone),
        "the big payload is in the TOAST table"
    );
    assert!(!file_holds(&heap, &big.gone));
    let (position, erased) = forget_a(&c, "f-1").await;
    assert_eq!(erased.as_array().unwrap().len(), 13);
    let waited = wait_scrubbed(&url, position).await;
    let new_heap = relation_file(&cluster, &url, "events").await;
    assert_ne!(new_heap, heap, "VACUUM FULL writes a new file");
    let base = new_heap.parent().unwrap();
    let holding = files_holding(base, &m.gone);
    assert!(
        holding.is_empty(),
        "after VACUUM FULL and a checkpoint no file of the database holds a forgotten payload: {holding:?}"
    );
    assert!(files_holding(base, &big.gone).is_empty());
    assert!(file_holds(&new_heap, &m.kept));
    // What remains: the WAL that logged the pushes, until its segments are recycled.
    let wal = files_holding(&cluster.data_dir().join("pg_wal"), &m.gone);
    eprintln!("[postgres, scrub Full] VACUUM FULL {waited:?} after the forget; WAL segments still holding a forgotten payload: {}", wal.len());
    assert!(!wal.is_empty(), "the WAL keeps the pushed payloads");
    server.shutdown().await.unwrap();
}

/// A transaction whose snapshot still sees the erased rows: VACUUM FULL
/// would copy them (payloads included) into the new file, so the server
/// waits for it to end before it vacuums and records the forget covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_vacuum_waits_for_old_snapshots() {
    use sqlx::Connection;
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("vacuum_held").await;
    let server = server_with(&url, None, &[], None, Scrub::Full).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_many(&c, &m).await;
    let mut reader = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut reader)
        .await
        .unwrap();
    // Its snapshot, taken now, sees the payloads; it holds no lock on
    // `events` (which would only make VACUUM FULL wait).
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let (position, _) = forget_a(&c, "f-1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let covered: i64 = sqlx::query_scalar("SELECT position FROM scrubbed WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let heap = relation_file(&cluster, &url, "events").await;
    let base = heap.parent().unwrap();
    eprintln!(
        "[postgres, old snapshot open] covered through {covered}, forget at {position}; files holding a forgotten payload: {:?}",
        files_holding(base, &m.gone)
    );
    assert!(
        covered < position as i64,
        "no vacuum is recorded while the old snapshot lives"
    );
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    let waited = wait_scrubbed(&url, position).await;
    let heap = relation_file(&cluster, &url, "events").await;
    let holding = files_holding(heap.parent().unwrap(), &m.gone);
    assert!(holding.is_empty(), "{holding:?}");
    assert!(file_holds(&heap, &m.kept));
    eprintln!("[postgres, old snapshot closed] vacuumed {waited:?} later");
    server.shutdown().await.unwrap();
}

/// Pushes keep coming while a forget's vacuum waits for older
/// transactions: the vacuum waits for the ones older than the forget only,
/// so it still runs (bounded: 4 writers for at most 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_vacuum_runs_under_pushes() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("vacuum_busy").await;
    let server = server_with(&url, None, &[], None, Scrub::Full).await;
    let c = Client::new(&server, None);
    let m = Markers::new();
    push_many(&c, &m).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sequence = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && sequence < 5_000 {
                    sequence += 1;
                    let a = c
                        .push(&[event(
                            &format!("w{w}-{sequence}"),
                            &format!("load.W{w}"),
                            sequence,
                            json!({ "k": sequence }),
                        )])
                        .await;
                    assert_eq!(a.status, 200, "{}", a.body);
                }
                sequence
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (position, _) = forget_a(&c, "f-1").await;
    let waited = wait_scrubbed(&url, position).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pushed = 0;
    for w in writers {
        pushed += w.await.unwrap();
    }
    let heap = relation_file(&cluster, &url, "events").await;
    let holding = files_holding(heap.parent().unwrap(), &m.gone);
    assert!(holding.is_empty(), "{holding:?}");
    eprintln!(
        "[postgres, under pushes] vacuumed {waited:?} after the forget; {pushed} pushes in all"
    );
    server.shutdown().await.unwrap();
}
