//! What the store relies on IndexedDB doing, checked in every engine the
//! suite runs in (Chromium, Firefox, WebKit): where engines differ, these
//! tests say which behaviour the store may count on.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use js_sys::{Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Runs the body of an async JS function; its result.
async fn run(body: &str) -> JsValue {
    let source = format!("{HELPERS}\nreturn (async () => {{ {body} }})();");
    let f = js_sys::Function::new_no_args(&source);
    let p: Promise = f.call0(&JsValue::NULL).unwrap().unchecked_into();
    JsFuture::from(p).await.unwrap()
}

fn field(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

const HELPERS: &str = r#"
  const req = (r) => new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const open = async (name) => {
    const r = indexedDB.open(name, 1);
    r.onupgradeneeded = () => r.result.createObjectStore("s");
    return req(r);
  };
  const done = (tx) => new Promise((ok) => { tx.oncomplete = () => ok("complete"); tx.onabort = () => ok("abort"); });
"#;

/// Shared read transactions (`Database::read` in src/web/idb.rs) are only
/// correct if a read-write transaction created after a read transaction,
/// on another connection (another tab), cannot commit while that read
/// transaction is still running, and the read keeps seeing the state it
/// started with.
#[wasm_bindgen_test]
async fn a_write_created_after_a_read_waits_for_it() {
    let out = run(r#"
        await req(indexedDB.deleteDatabase("rules-overlap"));
        const a = await open("rules-overlap"), b = await open("rules-overlap");
        { const t = a.transaction("s", "readwrite"); t.objectStore("s").put(1, "k"); await done(t); }
        const t0 = performance.now();
        const r = a.transaction("s", "readonly");
        const seen = [];
        let readEnd = null, writeEnd = null;
        // Keep the read transaction alive for 300 ms with a chain of gets.
        const step = () => { const g = r.objectStore("s").get("k"); g.onsuccess = () => { seen.push(g.result); if (performance.now() - t0 < 300) step(); }; };
        step();
        const readDone = done(r).then(() => { readEnd = performance.now() - t0; });
        await new Promise((ok) => setTimeout(ok, 30));
        const w = b.transaction("s", "readwrite");
        w.objectStore("s").put(2, "k");
        const writeDone = done(w).then(() => { writeEnd = performance.now() - t0; });
        await Promise.all([readDone, writeDone]);
        a.close(); b.close();
        await req(indexedDB.deleteDatabase("rules-overlap"));
        return { readEnd, writeEnd, seen: [...new Set(seen)], ua: navigator.userAgent };
    "#)
    .await;
    let text = String::from(JSON::stringify(&out).unwrap());
    let read_end = field(&out, "readEnd").as_f64().unwrap();
    let write_end = field(&out, "writeEnd").as_f64().unwrap();
    assert!(read_end >= 290.0, "the read stayed alive: {text}");
    assert!(
        write_end >= read_end,
        "the write waited for the read: {text}"
    );
    assert_eq!(
        JSON::stringify(&field(&out, "seen")).unwrap(),
        "[1]",
        "{text}"
    );
}

/// A push that collides with another one must be told apart from other
/// failures (it is redone, see `engine::push`), and a failed write must
/// leave nothing. In every engine, a request that fails aborts the whole
/// transaction when the transaction commits by itself, and the failing
/// request's error event, which bubbles to the transaction before the
/// abort, carries the `ConstraintError` (the transaction's own `error` is
/// not the same in every engine): the store takes that one
/// (src/web/request.rs). After an explicit `commit()`, Firefox ESR 153
/// instead commits the other writes of the transaction when a request
/// other than the last fails; the store commits explicitly only where this
/// test shows that a failure still aborts everything.
#[wasm_bindgen_test]
async fn a_failed_request_aborts_the_whole_transaction() {
    let explicit = eventstore_wasm::commits_early();
    let agent = web_sys_agent();
    assert_eq!(
        explicit,
        agent.contains("Chrome/"),
        "explicit commits in Chromium only ({agent})"
    );
    let out = run(&format!(
        r#"
        const results = [];
        for (const commit of [false, {explicit}]) for (const failing of [0, 1, 2]) {{
          await req(indexedDB.deleteDatabase("rules-abort"));
          const db = await open("rules-abort");
          {{ const t = db.transaction("s", "readwrite"); t.objectStore("s").add(1, "k"); await done(t); }}
          const t = db.transaction("s", "readwrite");
          const errors = [];
          t.onerror = (e) => errors.push(e.target.error?.name ?? null);
          const keys = ["a", "b", "c"];
          keys[failing] = "k";
          for (const key of keys) t.objectStore("s").add(2, key);
          if (commit) t.commit();
          const outcome = await done(t);
          const left = await req(db.transaction("s").objectStore("s").getAllKeys());
          db.close();
          results.push({{ commit, failing, outcome, first: errors[0], left }});
        }}
        await req(indexedDB.deleteDatabase("rules-abort"));
        return results;
    "#
    ))
    .await;
    for result in js_sys::Array::from(&out).iter() {
        let text = String::from(JSON::stringify(&result).unwrap());
        assert_eq!(
            field(&result, "outcome").as_string().unwrap(),
            "abort",
            "{text}"
        );
        assert_eq!(
            field(&result, "first").as_string().as_deref(),
            Some("ConstraintError"),
            "{text}"
        );
        assert_eq!(
            JSON::stringify(&field(&result, "left")).unwrap(),
            r#"["k"]"#,
            "nothing of the aborted transaction: {text}"
        );
    }
}

fn web_sys_agent() -> String {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap();
    Reflect::get(&navigator, &"userAgent".into())
        .unwrap()
        .as_string()
        .unwrap()
}
