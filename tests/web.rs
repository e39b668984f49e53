//! IndexedDB in headless Chromium: `wasm-pack test --headless --chrome`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use eventstore_wasm::EventStore;
use js_sys::{Array, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn js(json: &str) -> JsValue {
    JSON::parse(json).unwrap()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

fn code(err: &JsValue) -> String {
    assert!(err.is_instance_of::<js_sys::Error>(), "an Error instance");
    get(err, "code").as_string().unwrap_or_default()
}

fn field_list(events: &JsValue, key: &str) -> Vec<String> {
    Array::from(events)
        .iter()
        .map(|e| {
            let v = get(&e, key);
            if Array::is_array(&v) {
                Array::from(&v).join(".").into()
            } else {
                JSON::stringify(&v).unwrap().into()
            }
        })
        .collect()
}

async fn fresh(name: &str) -> EventStore {
    EventStore::delete_store(name.into()).await.unwrap();
    EventStore::open(name.into()).await.unwrap()
}

/// Every record of every object store of the database, via the raw IndexedDB API.
async fn raw_records(name: &str) -> Vec<String> {
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name);
            r.onerror = () => fail(r.error);
            r.onsuccess = () => {
              const db = r.result, names = [...db.objectStoreNames], out = [];
              if (!names.length) { db.close(); return ok(out); }
              const tx = db.transaction(names);
              for (const n of names) tx.objectStore(n).getAll().onsuccess = (e) => {
                for (const v of e.target.result) out.push(JSON.stringify(v));
              };
              tx.oncomplete = () => { db.close(); ok(out); };
            };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    let all = JsFuture::from(p).await.unwrap();
    Array::from(&all)
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect()
}

/// Opens the database raw at `version` (with an upgrade that creates nothing) and closes it.
async fn raw_open(name: &str, version: u32) -> Result<(), JsValue> {
    let f = js_sys::Function::new_with_args(
        "name, version",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name, version);
            r.onerror = () => fail(r.error);
            r.onblocked = () => fail(new Error("blocked"));
            r.onsuccess = () => { r.result.close(); ok(); };
          });"#,
    );
    let p: Promise = f
        .call2(&JsValue::NULL, &name.into(), &version.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.map(|_| ())
}

#[wasm_bindgen_test]
async fn seed_compliance_cases() {
    let s = fresh("web-seed").await;
    s.push(js(r#"[{"aggregate":["user","id"],"commands":[
        {"action":["user","id","added"],"payload":{"n":1}},
        {"action":"user.id.removed"}]}]"#))
        .await
        .unwrap();
    for (pattern, expected) in [
        (r#""user.id.>""#, vec!["user.id.added", "user.id.removed"]),
        (
            r#"["user","*","*"]"#,
            vec!["user.id.added", "user.id.removed"],
        ),
        (r#""user.id.added""#, vec!["user.id.added"]),
        (r#"">""#, vec!["user.id.added", "user.id.removed"]),
    ] {
        let f = js(&format!(r#"{{"queries":[{{"subjects":{pattern}}}]}}"#));
        let found = s.filter(f, JsValue::UNDEFINED).await.unwrap();
        assert_eq!(field_list(&found, "action"), expected, "{pattern}");
    }
    let removed = s
        .filter(
            js(r#"{"queries":[{"subjects":"user.id.removed"}]}"#),
            JsValue::UNDEFINED,
        )
        .await
        .unwrap();
    assert_eq!(field_list(&removed, "payload"), ["null"]);

    s.push(js(r#"[{"aggregate":"user.new","expectedSequence":0,"commands":[{"action":"user.new.added"}]}]"#))
        .await
        .unwrap();
    let err = s
        .push(js(r#"[{"aggregate":"user.other","expectedSequence":2,"commands":[{"action":"user.other.added"}]}]"#))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SEQUENCE_MISMATCH");
    assert_eq!(Array::from(&get(&err, "aggregate")).join("."), "user.other");
    assert_eq!(get(&err, "expected"), 2);
    assert_eq!(get(&err, "actual"), 0);

    let three = r#"[{"action":"t.e"},{"action":"t.e"},{"action":"t.e"}]"#;
    let pushed = s
        .push(js(&format!(r#"[{{"aggregate":"agg.one","commands":{three}}},{{"aggregate":"agg.two","commands":{three}}}]"#)))
        .await
        .unwrap();
    assert_eq!(
        field_list(&pushed, "sequence"),
        ["1", "2", "3", "1", "2", "3"]
    );
    assert_eq!(
        field_list(&pushed, "position"),
        ["4", "5", "6", "7", "8", "9"]
    );
    s.close();
}

#[wasm_bindgen_test]
async fn index_ranges_keep_to_token_boundaries() {
    let s = fresh("web-ranges").await;
    s.push(js(r#"[
        {"aggregate":"user.u1","commands":[{"action":"user.u1.added"},{"action":"user.u1.email.changed"}]},
        {"aggregate":"user.u10","commands":[{"action":"user.u10.added"}]},
        {"aggregate":"user","commands":[{"action":"user"}]},
        {"aggregate":"userx.u1","commands":[{"action":"userx.u1.added"}]},
        {"aggregate":"user.u1","commands":[{"action":"user.u1.removed"}]}]"#))
        .await
        .unwrap();
    let cases = [
        (
            r#"{"subjects":"user.u1.>"}"#,
            vec!["user.u1.added", "user.u1.email.changed", "user.u1.removed"],
        ),
        (
            r#"{"subjects":"user.*.added"}"#,
            vec!["user.u1.added", "user.u10.added"],
        ),
        (r#"{"subjects":"user"}"#, vec!["user"]),
        (
            r#"{"subjects":"user.>"}"#,
            vec![
                "user.u1.added",
                "user.u1.email.changed",
                "user.u10.added",
                "user.u1.removed",
            ],
        ),
        (
            r#"{"aggregate":"user.u1"}"#,
            vec!["user.u1.added", "user.u1.email.changed", "user.u1.removed"],
        ),
        (
            r#"{"aggregate":"user.>"}"#,
            vec![
                "user.u1.added",
                "user.u1.email.changed",
                "user.u10.added",
                "user.u1.removed",
            ],
        ),
        (
            r#"{"aggregate":"user.u1","sequence":{"from":2}}"#,
            vec!["user.u1.email.changed", "user.u1.removed"],
        ),
        (
            r#"{"aggregate":"*.u1"}"#,
            vec![
                "user.u1.added",
                "user.u1.email.changed",
                "userx.u1.added",
                "user.u1.removed",
            ],
        ),
    ];
    for (q, expected) in cases {
        let found = s
            .filter(js(&format!(r#"{{"queries":[{q}]}}"#)), JsValue::UNDEFINED)
            .await
            .unwrap();
        assert_eq!(field_list(&found, "action"), expected, "{q}");
    }
    s.close();
}

#[wasm_bindgen_test]
async fn data_and_heads_survive_reopen() {
    let s = fresh("web-reopen").await;
    s.push(js(
        r#"[{"aggregate":"a.b","commands":[{"action":"a.b.x"},{"action":"a.b.y"}]}]"#,
    ))
    .await
    .unwrap();
    s.close();
    let err = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "CLOSED");
    let s = EventStore::open("web-reopen".into()).await.unwrap();
    let more = s
        .push(js(
            r#"[{"aggregate":"a.b","expectedSequence":2,"commands":[{"action":"a.b.z"}]}]"#,
        ))
        .await
        .unwrap();
    assert_eq!(field_list(&more, "sequence"), ["3"]);
    assert_eq!(field_list(&more, "position"), ["3"]);
    s.close();
}

#[wasm_bindgen_test]
async fn a_failed_push_leaves_no_record() {
    let s = fresh("web-atomic").await;
    s.push(js(
        r#"[{"aggregate":"a.b","commands":[{"action":"a.b.x"}]}]"#,
    ))
    .await
    .unwrap();
    let before = raw_records("web-atomic").await;
    let err = s
        .push(js(r#"[{"aggregate":"a.c","commands":[{"action":"a.c.x"}]},
                     {"aggregate":"a.b","expectedSequence":0,"commands":[{"action":"a.b.y"}]}]"#))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SEQUENCE_MISMATCH");
    let bad_payload =
        js(r#"[{"aggregate":"a.c","commands":[{"action":"a.c.x"},{"action":"a.c.y"}]}]"#);
    let cmd = Array::from(&get(&Array::from(&bad_payload).get(0), "commands")).get(1);
    Reflect::set(&cmd, &"payload".into(), &f64::NAN.into()).unwrap();
    assert_eq!(
        code(&s.push(bad_payload).await.unwrap_err()),
        "INVALID_PAYLOAD"
    );
    assert_eq!(raw_records("web-atomic").await, before);
    s.close();
}

#[wasm_bindgen_test]
async fn forget_leaves_no_copy_in_the_database() {
    let s = fresh("web-forget").await;
    s.push(js(r#"[{"aggregate":"user.A","commands":[
            {"action":"user.A.added","payload":{"email":"ada-secret@example.com"}},
            {"action":"user.A.renamed","payload":{"name":"Ada Secret"}}]},
        {"aggregate":"user.B","commands":[{"action":"user.B.added","payload":{"email":"bob@example.com"}}]}]"#))
        .await
        .unwrap();
    let n = s
        .forget(js(r#"{"queries":[{"aggregate":"user.A"}]}"#))
        .await
        .unwrap();
    assert_eq!(n, 2.0);
    assert_eq!(
        s.forget(js(r#"{"queries":[{"aggregate":"user.A"}]}"#))
            .await
            .unwrap(),
        0.0
    );
    let all = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    assert_eq!(field_list(&all, "forgotten"), ["true", "true", "false"]);
    assert_eq!(field_list(&all, "sequence"), ["1", "2", "1"]);
    assert_eq!(
        field_list(&all, "action"),
        ["user.A.added", "user.A.renamed", "user.B.added"]
    );
    let raw = raw_records("web-forget").await.join("\n");
    assert!(
        !raw.contains("ada-secret") && !raw.contains("Ada Secret"),
        "{raw}"
    );
    assert!(raw.contains("bob@example.com"));
    s.close();
}

#[wasm_bindgen_test]
async fn another_tab_upgrading_closes_this_connection() {
    let s = fresh("web-versionchange").await;
    s.push(js(
        r#"[{"aggregate":"a.b","commands":[{"action":"a.b.x"}]}]"#,
    ))
    .await
    .unwrap();
    // Stands in for a newer release in another tab: not blocked by us.
    raw_open("web-versionchange", 2).await.unwrap();
    let err = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "CLOSED");
    let err = EventStore::open("web-versionchange".into())
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "VERSION_MISMATCH");
    EventStore::delete_store("web-versionchange".into())
        .await
        .unwrap();
}

#[wasm_bindgen_test]
async fn a_foreign_database_is_a_storage_error() {
    EventStore::delete_store("web-foreign".into())
        .await
        .unwrap();
    raw_open("web-foreign", 1).await.unwrap();
    let err = EventStore::open("web-foreign".into()).await.err().unwrap();
    assert_eq!(code(&err), "STORAGE");
    EventStore::delete_store("web-foreign".into())
        .await
        .unwrap();
}

#[wasm_bindgen_test]
async fn concurrent_pushes_from_one_page_never_collide() {
    let s = std::rc::Rc::new(fresh("web-concurrent").await);
    let pushes = (0..50).map(|i| {
        let s = s.clone();
        async move {
            s.push(js(&format!(
                r#"[{{"aggregate":"c.one","commands":[{{"action":"c.one.e","payload":{i}}}]}}]"#
            )))
            .await
            .unwrap()
        }
    });
    futures::future::join_all(pushes).await;
    let all = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    let seqs: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    assert_eq!(field_list(&all, "sequence"), seqs);
    assert_eq!(field_list(&all, "position"), seqs);
    s.close();
}
