//! Test helpers: a throwaway PostgreSQL cluster, a server started in
//! process on 127.0.0.1:0, and a small HTTP client.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use eventstore_server::db::Scrub;
use eventstore_server::{start, Config, Server};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Where Debian puts PostgreSQL's programs (the newest version found).
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

/// A PostgreSQL cluster in a temp dir, run as the `postgres` user on
/// 127.0.0.1; stopped and removed on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Starts a cluster, or `None` (with a message) when PostgreSQL is not installed.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = pg_bin() else {
            eprintln!(
                "SKIPPED: PostgreSQL tests need /usr/lib/postgresql/*/bin/initdb (run scripts/setup.sh)"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("eventstore-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let data = dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.display()
        );
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-o", &options, "start"]));
        Some(Cluster { bin, dir, port })
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A new, empty database in the cluster, as a URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Executor;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        pool.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        pool.close().await;
        format!("postgres://postgres:secret@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir with a SQLite database URL in it (`sqlite:///ABS/PATH`).
pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

/// Starts a server on 127.0.0.1:0 over `database`.
pub async fn server(database: &str, auth: Option<&Path>, origins: &[&str]) -> Server {
    server_with_nats(database, auth, origins, None).await
}

/// Starts a server on 127.0.0.1:0 over `database`, publishing to `nats`.
pub async fn server_with_nats(
    database: &str,
    auth: Option<&Path>,
    origins: &[&str],
    nats: Option<String>,
) -> Server {
    server_with(database, auth, origins, nats, Scrub::Full).await
}

/// Starts a server on 127.0.0.1:0 over `database`, with every option.
pub async fn server_with(
    database: &str,
    auth: Option<&Path>,
    origins: &[&str],
    nats: Option<String>,
    scrub_forgotten: Scrub,
) -> Server {
    let config = Config {
        nats,
        scrub_forgotten,
        listen: "127.0.0.1:0".parse().unwrap(),
        database: database.to_owned(),
        auth: auth.map(Path::to_path_buf),
        allow_origin: origins.iter().map(|o| o.to_string()).collect(),
    };
    start(&config).await.unwrap()
}

/// An answer: status, headers, JSON body (`Value::Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

/// One HTTP/1.1 request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// A client of one server with one token.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Client {
    pub fn new(server: &Server, token: Option<&str>) -> Self {
        Client {
            addr: server.addr,
            token: token.map(str::to_owned),
        }
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let auth = self.auth();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        request(
            self.addr,
            "POST",
            path,
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let auth = self.auth();
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        request(self.addr, "GET", path, &headers, None).await
    }

    pub async fn push(&self, events: &[Value]) -> Answer {
        self.post("/v1/push", &json!({ "events": events })).await
    }

    /// Every visible item after `after`, page by page.
    pub async fn pull_all(&self, after: u64) -> (Vec<Value>, u64) {
        let mut items = Vec::new();
        let mut cursor = after;
        loop {
            let a = self
                .get(&format!("/v1/pull?after={cursor}&limit=1000"))
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            items.extend(a.body["items"].as_array().unwrap().iter().cloned());
            cursor = a.body["cursor"].as_u64().unwrap();
            if !a.body["more"].as_bool().unwrap() {
                return (items, cursor);
            }
        }
    }
}

/// An event to push.
pub fn event(id: &str, aggregate: &str, sequence: u64, payload: Value) -> Value {
    json!({
        "id": id,
        "aggregate": aggregate.split('.').collect::<Vec<_>>(),
        "action": format!("{aggregate}.happened"),
        "revision": 1,
        "sequence": sequence,
        "createdAt": 1_767_000_000_000u64 + sequence,
        "payload": payload,
        "forgotten": false,
    })
}

/// The statuses of a push answer's results.
pub fn statuses(a: &Answer) -> Vec<String> {
    a.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {}", a.body))
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect()
}

/// How many stored rows hold `needle` in their payload, straight from the database.
pub async fn payloads_containing(database: &str, needle: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM events WHERE payload LIKE $1";
    let pattern = format!("%{needle}%");
    if database.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database).await.unwrap();
        let n = sqlx::query_scalar(sql)
            .bind(pattern)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(database).await.unwrap();
        let n = sqlx::query_scalar(sql)
            .bind(pattern)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}
