//! `--nats URL`: publishes every accepted event to NATS under its action
//! subject (the subject grammar is NATS's), with the event id as
//! `Nats-Msg-Id` so that JetStream drops duplicates, and the event's JSON
//! (as pulled) as the message. A cursor in the database (`published`)
//! says how far it got: it advances only after NATS answered a PING sent
//! after the batch, so nothing is skipped after a crash; the batch in
//! flight may be published twice, which the message id covers within
//! JetStream's duplicate window (the idempotency guarantee stays the
//! event id on the server, not NATS).
//!
//! The client is the core NATS text protocol (INFO, CONNECT, HPUB,
//! PING/PONG) on a TCP stream, a few lines rather than a NATS crate and its
//! TLS tree. Run `--nats` on one server instance of a database only.

use std::sync::Arc;
use std::time::Duration;

use eventstore_wasm::sync::protocol::PullItem;
use eventstore_wasm::sync::rules::Scope;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::api::AppState;

/// Events read from the log per batch.
const BATCH: usize = 500;
/// Longest wait for NATS to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `host:port` of a `nats://host:port` URL (or of `host:port`).
pub fn address(url: &str) -> String {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.trim_end_matches('/');
    if rest.contains(':') {
        rest.to_owned()
    } else {
        format!("{rest}:4222")
    }
}

/// A connection speaking the core NATS protocol.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    async fn open(addr: &str) -> Result<Self, String> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (read, writer) = stream.into_split();
        let mut conn = Connection {
            reader: BufReader::new(read),
            writer,
        };
        let info = conn.line().await?;
        if !info.starts_with("INFO ") {
            return Err(format!("{addr} is not a NATS server (it said {info:?})"));
        }
        let connect = r#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"lang":"rust","name":"eventstore-server","protocol":1}"#;
        conn.write(format!("{connect}\r\n").as_bytes()).await?;
        conn.flush().await?;
        Ok(conn)
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| "NATS did not answer in time".to_owned())?
            .map_err(|e| format!("NATS read: {e}"))?;
        if n == 0 {
            return Err("NATS closed the connection".into());
        }
        Ok(line.trim_end().to_owned())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| format!("NATS write: {e}"))
    }

    /// Publishes `payload` on `subject` with a `Nats-Msg-Id` header.
    async fn publish(&mut self, subject: &str, id: &str, payload: &[u8]) -> Result<(), String> {
        let headers = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
        let total = headers.len() + payload.len();
        let mut message =
            format!("HPUB {subject} {} {total}\r\n{headers}", headers.len()).into_bytes();
        message.extend_from_slice(payload);
        message.extend_from_slice(b"\r\n");
        self.write(&message).await
    }

    /// Sends PING and waits for PONG: NATS has then processed everything
    /// sent before it (it answers PINGs in order).
    async fn flush(&mut self) -> Result<(), String> {
        self.write(b"PING\r\n").await?;
        loop {
            let line = self.line().await?;
            match line.as_str() {
                "PONG" => return Ok(()),
                "PING" => self.write(b"PONG\r\n").await?,
                l if l.starts_with("-ERR") => return Err(format!("NATS: {l}")),
                _ => {} // +OK, INFO updates
            }
        }
    }
}

/// Publishes until the server shuts down; reconnects with backoff (1 s to 30 s).
pub async fn run(state: Arc<AppState>, url: String) {
    let addr = address(&url);
    let mut woken = state.head.subscribe();
    let mut closing = state.closing.clone();
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::from_secs(1);
    tracing::info!(nats = %addr, "publishing accepted events to NATS");
    loop {
        if *closing.borrow() {
            return;
        }
        woken.borrow_and_update();
        match publish_some(&state, &addr, &mut conn).await {
            Ok(true) => backoff = Duration::from_secs(1),
            Ok(false) => {
                tokio::select! {
                    _ = woken.changed() => {}
                    _ = closing.changed() => {}
                    // Writes of other server instances on the database.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "NATS publishing failed");
                conn = None;
                tokio::select! {
                    _ = closing.changed() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Publishes one batch after the cursor; `false` when there was none.
async fn publish_some(
    state: &AppState,
    addr: &str,
    conn: &mut Option<Connection>,
) -> Result<bool, String> {
    let after = state.db.published().await.map_err(|e| e.to_string())?;
    let page = state
        .db
        .pull(after, BATCH, &Scope::everything())
        .await
        .map_err(|e| e.to_string())?;
    if page.cursor == after {
        return Ok(false);
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Connection::open(addr).await?),
    };
    let mut count = 0;
    for item in &page.items {
        if let PullItem::Event(e) = item {
            let json = serde_json::to_vec(e).map_err(|e| e.to_string())?;
            c.publish(e.action.0.as_str(), &e.id, &json).await?;
            count += 1;
        }
    }
    c.flush().await?;
    state
        .db
        .set_published(page.cursor)
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(count, cursor = page.cursor, "published to NATS");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::address;

    #[test]
    fn reads_nats_urls() {
        assert_eq!(address("nats://127.0.0.1:4333"), "127.0.0.1:4333");
        assert_eq!(address("nats://user:pw@host"), "host:4222");
        assert_eq!(address("localhost:1"), "localhost:1");
    }
}
