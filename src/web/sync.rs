//! The storage steps of sync, for the JavaScript loop in `js/sync.js`
//! (which does fetch, timers and the Web Lock): each method is one step of
//! `crate::sync::local`, taking and returning the protocol's JSON. Hidden
//! from the TypeScript declarations: `store.sync(options)` is the API.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use super::event_store::EventStore;
use super::interop::{self, js_error};
use crate::error::Error;
use crate::sync::local::{self, Conflict, Decision, Pending};
use crate::sync::protocol::{ErrorResponse, PullResponse, PushResponse};

/// What the loop of one store is in the middle of.
#[derive(Default)]
pub struct Session {
    /// The pending events of the pushes being sent.
    pending: Option<Pending>,
    /// The conflict the last pull page stopped at.
    conflict: Option<Conflict>,
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &key.into(), value);
}

fn json<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    let text = serde_json::to_string(value)
        .map_err(|e| js_error(Error::Sync(format!("cannot encode: {e}"))))?;
    js_sys::JSON::parse(&text)
}

fn decode<'a, T: serde::Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| {
        let start: String = text.chars().take(200).collect();
        Error::Sync(format!(
            "the server's {what} answer is not the protocol's: {e}: {start}"
        ))
    })
}

fn conflict_js(c: &Conflict) -> Result<JsValue, JsValue> {
    let out = Object::new();
    set(
        &out,
        "aggregate",
        &json(&c.aggregate.split('.').collect::<Vec<_>>())?,
    );
    set(&out, "pending", &json(&c.pending)?);
    set(&out, "remote", &json(&c.remote)?);
    Ok(out.into())
}

#[wasm_bindgen]
impl EventStore {
    /// Starts syncing with the server log `log` (`LOG_MISMATCH` as a
    /// `SYNC` error if this store synced with another one).
    #[wasm_bindgen(js_name = __syncBegin, skip_typescript)]
    pub async fn sync_begin(&self, log: String) -> Result<JsValue, JsValue> {
        let state = local::begin(self.storage(), &log).await.map_err(js_error)?;
        json(&state)
    }

    /// The bodies of the pushes of the pending events (oldest first, up
    /// to about `max` events).
    #[wasm_bindgen(js_name = __syncPending, skip_typescript)]
    pub async fn sync_pending(&self, max: u32) -> Result<Array, JsValue> {
        let pending = local::pending(self.storage(), max as usize)
            .await
            .map_err(js_error)?;
        let state = local::state(self.storage()).await.map_err(js_error)?;
        let log = state.and_then(|s| s.log);
        let bodies = pending.bodies(log.as_deref()).map_err(js_error)?;
        if bodies.is_empty() {
            local::advance(self.storage(), &pending)
                .await
                .map_err(js_error)?;
        }
        self.session().borrow_mut().pending = Some(pending);
        Ok(bodies.iter().map(|b| JsValue::from_str(b)).collect())
    }

    /// Applies a push answer (HTTP `status`, body `text`) to the events of
    /// the last `__syncPending`: `{ synced, conflicts: string[], error }`.
    #[wasm_bindgen(js_name = __syncSettle, skip_typescript)]
    pub async fn sync_settle(&self, status: u16, text: String) -> Result<JsValue, JsValue> {
        let out = Object::new();
        let answer: Result<PushResponse, Error> = decode(&text, "push");
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let error = match serde_json::from_str::<ErrorResponse>(&text) {
                    Ok(r) => Error::Sync(format!(
                        "push refused: HTTP {status} {}: {}",
                        r.error.code.as_str(),
                        r.error.message
                    )),
                    Err(_) if status >= 400 => {
                        Error::Sync(format!("push failed: HTTP {status}: {e}"))
                    }
                    Err(_) => e,
                };
                set(&out, "error", &js_error(error));
                return Ok(out.into());
            }
        };
        // Encrypted: keys an earlier step lacked are fetched before the
        // settle, which is not retried (its transaction seals `remote`s).
        if let Some(sealer) = self.storage().0.sealer().filter(|s| s.wants()) {
            sealer.refresh().await.map_err(js_error)?;
        }
        let Some(mut pending) = self.session().borrow_mut().pending.take() else {
            return Err(js_error(Error::Sync("no push in flight".into())));
        };
        let outcome = local::settle(
            self.storage(),
            &mut pending,
            status,
            &answer,
            &mut interop::random_uuid,
        )
        .await;
        self.session().borrow_mut().pending = Some(pending);
        let outcome = outcome.map_err(js_error)?;
        set(&out, "synced", &(outcome.synced as f64).into());
        set(&out, "conflicts", &json(&outcome.conflicts)?);
        if let Some(e) = outcome.refused {
            set(&out, "error", &js_error(e));
        }
        Ok(out.into())
    }

    /// Applies a pull answer: `{ added, synced, cursor, more, head, conflict }`,
    /// `conflict` being `{ aggregate, pending, remote }` or null.
    #[wasm_bindgen(js_name = __syncApply, skip_typescript)]
    pub async fn sync_apply(&self, text: String) -> Result<JsValue, JsValue> {
        let page: PullResponse = decode(&text, "pull").map_err(js_error)?;
        let applied = super::shred::keyed(self.storage(), || {
            local::apply_pull(self.storage(), self.head_cache(), &page)
        })
        .await
        .map_err(js_error)?;
        if applied.added > 0 || applied.synced > 0 {
            self.announce().await;
        }
        if applied.erased.len() > 2 {
            let erased = js_sys::JSON::parse(&applied.erased)?;
            self.forgotten_elsewhere(&Array::from(&erased));
            // Encrypted: a forget pulled from the server shreds keys too.
            super::shred::run(self.storage(), true)
                .await
                .map_err(js_error)?;
        }
        let out = Object::new();
        set(&out, "added", &(applied.added as f64).into());
        set(&out, "synced", &(applied.synced as f64).into());
        set(&out, "cursor", &(applied.cursor as f64).into());
        set(
            &out,
            "more",
            &(page.more || applied.conflict.is_some()).into(),
        );
        set(&out, "head", &(page.head as f64).into());
        let conflict = match &applied.conflict {
            Some(c) => conflict_js(c)?,
            None => JsValue::NULL,
        };
        set(&out, "conflict", &conflict);
        self.session().borrow_mut().conflict = applied.conflict;
        Ok(out.into())
    }

    /// The conflicts parked earlier (no `onConflict` then), as
    /// `{ aggregate, pending, remote }`.
    #[wasm_bindgen(js_name = __syncParked, skip_typescript)]
    pub async fn sync_parked(&self) -> Result<Array, JsValue> {
        let state = local::state(self.storage()).await.map_err(js_error)?;
        let out = Array::new();
        for parked in state.map(|s| s.parked).unwrap_or_default() {
            let Some(first) = parked.remote.first() else {
                continue;
            };
            let pending = local::pending_events(self.storage(), &parked.aggregate, first.sequence)
                .await
                .map_err(js_error)?;
            out.push(&conflict_js(&Conflict {
                aggregate: parked.aggregate,
                pending,
                remote: parked.remote,
            })?);
        }
        Ok(out)
    }

    /// Resolves the conflict on `aggregate` (the last pull's, or a parked
    /// one): `"rebase"`, `"discard"` or `"park"`.
    #[wasm_bindgen(js_name = __syncResolve, skip_typescript)]
    pub async fn sync_resolve(&self, aggregate: String, decision: String) -> Result<(), JsValue> {
        let decision = match decision.as_str() {
            "rebase" => Decision::Rebase,
            "discard" => Decision::Discard,
            _ => Decision::Park,
        };
        let from_pull = self
            .session()
            .borrow()
            .conflict
            .as_ref()
            .filter(|c| c.aggregate == aggregate)
            .map(|c| c.remote.clone());
        let remote = match from_pull {
            Some(remote) => remote,
            None => local::state(self.storage())
                .await
                .map_err(js_error)?
                .and_then(|s| s.parked.into_iter().find(|p| p.aggregate == aggregate))
                .map(|p| p.remote)
                .unwrap_or_default(),
        };
        let resolved = local::resolve(
            self.storage(),
            self.head_cache(),
            &aggregate,
            &remote,
            decision,
        )
        .await
        .map_err(js_error)?;
        self.session().borrow_mut().conflict = None;
        if decision != Decision::Park {
            let withdrawn = js_sys::JSON::parse(&resolved.withdrawn)?;
            self.withdrawn(&Array::from(&withdrawn));
            self.announce().await;
        }
        Ok(())
    }

    /// The forgets still to send: `[{ id, body }]`.
    #[wasm_bindgen(js_name = __syncForgets, skip_typescript)]
    pub async fn sync_forgets(&self) -> Result<Array, JsValue> {
        let state = local::state(self.storage()).await.map_err(js_error)?;
        let out = Array::new();
        if let Some(state) = state {
            for f in &state.forgets {
                let item = Object::new();
                set(&item, "id", &f.id.as_str().into());
                set(
                    &item,
                    "body",
                    &state.forget_body(f).map_err(js_error)?.into(),
                );
                out.push(&item);
            }
        }
        Ok(out)
    }

    /// The forget `id` was answered.
    #[wasm_bindgen(js_name = __syncForgetSent, skip_typescript)]
    pub async fn sync_forget_sent(&self, id: String) -> Result<(), JsValue> {
        local::forget_sent(self.storage(), &id)
            .await
            .map_err(js_error)
    }

    /// Appends the NDJSON lines of an import (`text`, whole lines, the
    /// first being line `first_line`); resolves to how many events.
    #[wasm_bindgen(js_name = __importLines, skip_typescript)]
    pub async fn import_lines(&self, text: String, first_line: f64) -> Result<f64, JsValue> {
        let n = super::shred::keyed(self.storage(), || {
            crate::portability::import_lines(
                self.storage(),
                self.head_cache(),
                &text,
                first_line as u64,
            )
        })
        .await
        .map_err(js_error)?;
        Ok(n as f64)
    }

    /// Marks an import as under way (`true`) or finished.
    #[wasm_bindgen(js_name = __importMark, skip_typescript)]
    pub async fn import_mark(&self, importing: bool) -> Result<(), JsValue> {
        crate::portability::mark_importing(self.storage(), importing)
            .await
            .map_err(js_error)
    }

    /// `{ pending, conflicts, cursor, log }` from storage.
    #[wasm_bindgen(js_name = __syncCounts, skip_typescript)]
    pub async fn sync_counts(&self) -> Result<JsValue, JsValue> {
        let counts = local::counts(self.storage()).await.map_err(js_error)?;
        let out = Object::new();
        set(&out, "pending", &(counts.pending as f64).into());
        set(&out, "conflicts", &(counts.conflicts as f64).into());
        set(&out, "last", &(counts.last as f64).into());
        let settled = counts.state.as_ref().map_or(0, |s| s.settled);
        set(&out, "settled", &(settled as f64).into());
        let (cursor, log) = counts.state.map_or((0, None), |s| (s.cursor, s.log));
        set(&out, "cursor", &(cursor as f64).into());
        set(&out, "log", &log.map_or(JsValue::NULL, |l| l.into()));
        Ok(out.into())
    }
}
