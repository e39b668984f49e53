//! `--nats`: a real `nats-server` (Debian's) receives every accepted event
//! once, under its action subject with its id as `Nats-Msg-Id`, also
//! across a restart of the server.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A nats-server on 127.0.0.1, killed on drop.
struct Nats(Child, u16);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server() -> Option<Nats> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let program = if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    };
    let child = Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Some(Nats(child, port)),
        Err(e) => {
            eprintln!("SKIPPED: nats-server cannot start ({e}): install Debian's nats-server");
            None
        }
    }
}

/// A subscriber to `>`, reading HMSG frames: (subject, Nats-Msg-Id, JSON).
struct Subscriber(BufReader<TcpStream>);

impl Subscriber {
    async fn connect(port: u16) -> Subscriber {
        let mut stream = None;
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                stream = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut r = BufReader::new(stream.unwrap());
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("INFO"), "{line}");
        r.get_mut()
            .write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB > 1\r\nPING\r\n")
            .await
            .unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            if line.trim_end() == "PONG" {
                return Subscriber(r);
            }
        }
    }

    async fn next(&mut self) -> (String, String, Value) {
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).await.unwrap();
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.first().copied() {
                Some("PING") => self.0.get_mut().write_all(b"PONG\r\n").await.unwrap(),
                Some("HMSG") => {
                    let header_len: usize = parts[parts.len() - 2].parse().unwrap();
                    let total: usize = parts[parts.len() - 1].parse().unwrap();
                    let mut frame = vec![0; total + 2];
                    self.0.read_exact(&mut frame).await.unwrap();
                    let headers = String::from_utf8_lossy(&frame[..header_len]).into_owned();
                    let id = headers
                        .lines()
                        .find_map(|l| l.strip_prefix("Nats-Msg-Id: "))
                        .unwrap()
                        .to_owned();
                    let body = serde_json::from_slice(&frame[header_len..total]).unwrap();
                    return (parts[1].to_owned(), id, body);
                }
                _ => {}
            }
        }
    }

    /// Messages until none comes for `quiet` (at most 1,000).
    async fn drain(&mut self, quiet: Duration) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        while let Ok(m) = tokio::time::timeout(quiet, self.next()).await {
            out.push(m);
            if out.len() == 1_000 {
                break;
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_reaches_nats_once() {
    let Some(nats) = nats_server() else {
        return;
    };
    let mut sub = Subscriber::connect(nats.1).await;
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite_url(dir.path(), "nats");
    let url = Some(format!("nats://127.0.0.1:{}", nats.1));
    let server = server_with_nats(&database, None, &[], url.clone()).await;
    let c = Client::new(&server, None);
    let mut pushed = Vec::new();
    for p in 0..5u64 {
        let events: Vec<Value> = (0..4u64)
            .map(|k| {
                event(
                    &format!("n{p}-{k}"),
                    &format!("user.U{k}"),
                    p + 1,
                    json!({"p": p}),
                )
            })
            .collect();
        pushed.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        assert_eq!(c.push(&events).await.status, 200);
    }
    // Neither a refused push nor a retry publishes anything.
    assert_eq!(
        c.push(&[event("late", "user.U0", 1, json!({}))])
            .await
            .status,
        409
    );
    assert_eq!(
        c.push(&[event("n0-0", "user.U0", 1, json!({"p": 0}))])
            .await
            .status,
        200
    );
    let forget = json!({"id": "f", "filter": {"queries": [{"aggregate": "user.U3"}]}});
    assert_eq!(c.post("/v1/forget", &forget).await.status, 200);
    let got = sub.drain(Duration::from_secs(3)).await;
    let ids: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(ids, pushed, "every event once, in position order");
    for (subject, id, body) in &got {
        assert_eq!(&body["id"], id);
        assert_eq!(
            subject,
            &format!(
                "{}.happened",
                body["aggregate"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(".")
            )
        );
        assert!(body["position"].as_u64().unwrap() >= 1);
    }
    // After a restart the server goes on from its published cursor.
    server.shutdown().await.unwrap();
    let server = server_with_nats(&database, None, &[], url).await;
    let c = Client::new(&server, None);
    assert_eq!(
        c.push(&[event("after", "user.U0", 6, json!({}))])
            .await
            .status,
        200
    );
    let got = sub.drain(Duration::from_secs(3)).await;
    let ids: HashSet<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(ids, HashSet::from(["after"]), "nothing published twice");
    server.shutdown().await.unwrap();
}
