//! IndexedDB in headless Chromium: `wasm-pack test --headless --chrome`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use eventstore_wasm::EventStore;
use js_sys::{Array, Object, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

mod browser;
use browser::{code, collector, get, js, raw_records, sleep, until_len};

wasm_bindgen_test_configure!(run_in_browser);

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

/// The events of `filter` (JSON text).
async fn read(s: &EventStore, filter: &str) -> JsValue {
    s.filter(js(filter), JsValue::UNDEFINED).await.unwrap()
}

/// How many events match the action pattern `pattern`.
async fn count_subjects(s: &EventStore, pattern: &str) -> u32 {
    let found = read(s, &format!(r#"{{"queries":[{{"subjects":"{pattern}"}}]}}"#)).await;
    Array::from(&found).length()
}

async fn fresh(name: &str) -> EventStore {
    EventStore::delete_store(name.into()).await.unwrap();
    EventStore::open(name.into(), None).await.unwrap()
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
        let found = read(&s, &format!(r#"{{"queries":[{q}]}}"#)).await;
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
    let s = EventStore::open("web-reopen".into(), None).await.unwrap();
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
    raw_open("web-versionchange", 6).await.unwrap();
    let err = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "CLOSED");
    let err = EventStore::open("web-versionchange".into(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "VERSION_MISMATCH");
    let message = get(&err, "message").as_string().unwrap_or_default();
    assert!(
        message.contains("schema version 6") && message.contains("up to schema version 5"),
        "{message}"
    );
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
    let err = EventStore::open("web-foreign".into(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "STORAGE");
    assert!(
        get(&err, "message")
            .as_string()
            .unwrap()
            .contains("not an eventstore-wasm database"),
        "{err:?}"
    );
    // Left as it was: not upgraded.
    let version = js_sys::Function::new_with_args(
        "name",
        "return indexedDB.databases().then((all) => all.find((d) => d.name === name)?.version);",
    )
    .call1(&JsValue::NULL, &"web-foreign".into())
    .unwrap();
    let version = JsFuture::from(Promise::from(version)).await.unwrap();
    assert_eq!(version.as_f64(), Some(1.0));
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

fn push_json(aggregate: &str, n: usize) -> JsValue {
    let cmds: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"action":"{aggregate}.e","payload":{{"i":{i},"secret":"s-{aggregate}-{i}"}}}}"#
            )
        })
        .collect();
    js(&format!(
        r#"[{{"aggregate":"{aggregate}","commands":[{}]}}]"#,
        cmds.join(",")
    ))
}

#[wasm_bindgen_test]
async fn subscriptions_catch_up_then_go_live_across_instances() {
    let a = fresh("web-live").await;
    // A second connection stands in for another tab: its own BroadcastChannel.
    let b = EventStore::open("web-live".into(), None).await.unwrap();
    a.push(push_json("s.one", 3)).await.unwrap();
    let (seen, on_event) = collector();
    let (tail, on_tail) = collector();
    let unsubscribe: js_sys::Function = a
        .subscribe(
            js(r#"{"queries":[{"subjects":"s.>"}]}"#),
            on_event,
            JsValue::UNDEFINED,
        )
        .unwrap()
        .unchecked_into();
    let _end = a
        .subscribe(JsValue::UNDEFINED, on_tail, js(r#"{"fromPosition":"end"}"#))
        .unwrap();
    // From JavaScript, a call's work starts in a task queued after the
    // subscription's; awaited from Rust, `push` would start at once.
    sleep(0).await;
    b.push(push_json("s.two", 2)).await.unwrap();
    b.push(push_json("other.x", 1)).await.unwrap();
    a.push(push_json("s.one", 1)).await.unwrap();
    until_len(&seen, 6).await;
    until_len(&tail, 4).await;
    sleep(50).await;
    assert_eq!(
        field_list(&seen.clone().into(), "position"),
        ["1", "2", "3", "4", "5", "7"]
    );
    assert_eq!(
        field_list(&tail.clone().into(), "position"),
        ["4", "5", "6", "7"]
    );
    unsubscribe.call0(&JsValue::NULL).unwrap();
    b.push(push_json("s.two", 1)).await.unwrap();
    until_len(&tail, 5).await;
    sleep(50).await;
    assert_eq!(seen.length(), 6, "nothing after unsubscribe");
    assert_eq!(tail.length(), 5);
    a.close();
    b.push(push_json("s.two", 1)).await.unwrap();
    sleep(50).await;
    assert_eq!(tail.length(), 5, "close() ends subscriptions");
    b.close();
}

#[wasm_bindgen_test]
async fn subscribers_hear_of_forgets_and_failures() {
    let a = fresh("web-live-forget").await;
    let b = EventStore::open("web-live-forget".into(), None)
        .await
        .unwrap();
    a.push(push_json("f.one", 2)).await.unwrap();
    let (seen, on_event) = collector();
    let (forgot, on_forget) = collector();
    let options = Object::new();
    Reflect::set(&options, &"onForget".into(), &on_forget).unwrap();
    a.subscribe(JsValue::UNDEFINED, on_event, options.into())
        .unwrap();
    until_len(&seen, 2).await;
    assert_eq!(
        b.forget(js(r#"{"queries":[{"aggregate":"f.one"}]}"#))
            .await
            .unwrap(),
        2.0
    );
    until_len(&forgot, 1).await;
    let notice = forgot.get(0);
    assert_eq!(field_list(&notice, "forgotten"), ["true", "true"]);
    assert_eq!(field_list(&notice, "payload"), ["null", "null"]);

    // A throwing onEvent ends the subscription and says why.
    let (errors, on_error) = collector();
    let throwing = js_sys::Function::new_with_args("e", "throw new Error('view broke')");
    let options = Object::new();
    Reflect::set(&options, &"onError".into(), &on_error).unwrap();
    a.subscribe(JsValue::UNDEFINED, throwing.into(), options.into())
        .unwrap();
    until_len(&errors, 1).await;
    assert_eq!(
        get(&errors.get(0), "message").as_string().unwrap(),
        "view broke"
    );
    let err = a.subscribe(
        js(r#"{"limit":1}"#),
        js_sys::Function::new_no_args("").into(),
        JsValue::UNDEFINED,
    );
    assert_eq!(code(&err.unwrap_err()), "INVALID_ARGUMENT");
    a.close();
    let err = a.subscribe(
        JsValue::UNDEFINED,
        js_sys::Function::new_no_args("").into(),
        JsValue::UNDEFINED,
    );
    assert_eq!(code(&err.unwrap_err()), "CLOSED");
    b.close();
}

#[wasm_bindgen_test]
async fn async_iteration_streams_pages() {
    let s = fresh("web-iterate").await;
    for _ in 0..3 {
        s.push(push_json("it.a", 900)).await.unwrap();
    }
    s.push(push_json("it.b", 5)).await.unwrap();
    let collect = js_sys::Function::new_with_args(
        "iterable",
        "return (async () => { const out = []; for await (const e of iterable) out.push(e.position); return out; })()",
    );
    let run = |filter: &str| {
        let iterable = s.events(js(filter)).unwrap();
        let p: Promise = collect
            .call1(&JsValue::NULL, &iterable)
            .unwrap()
            .unchecked_into();
        JsFuture::from(p)
    };
    let all = run(r#"{"queries":[{"aggregate":"it.a"}]}"#).await.unwrap();
    let positions: Vec<u64> = Array::from(&all)
        .iter()
        .map(|p| p.as_f64().unwrap() as u64)
        .collect();
    assert_eq!(positions, (1..=2700).collect::<Vec<_>>());
    let limited = run(r#"{"queries":[{"subjects":"it.*.e"}],"limit":1500}"#)
        .await
        .unwrap();
    assert_eq!(Array::from(&limited).length(), 1500);
    let b = run(r#"{"queries":[{"aggregate":"it.b"}]}"#).await.unwrap();
    assert_eq!(Array::from(&b).length(), 5);
    // The same through filter: several pages joined into one array.
    let all = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    let positions: Vec<String> = (1..=2705).map(|p| p.to_string()).collect();
    assert_eq!(field_list(&all, "position"), positions);
    s.close();
}

#[wasm_bindgen_test]
async fn an_event_larger_than_a_batch_is_stored_and_read_back() {
    let s = fresh("web-large").await;
    let big = "x".repeat(100_000);
    let pushed = s
        .push(js(&format!(
            r#"[{{"aggregate":"big.a","commands":[{{"action":"big.a.set","payload":"{big}"}},{{"action":"big.a.set","payload":1}}]}}]"#
        )))
        .await
        .unwrap();
    assert_eq!(field_list(&pushed, "sequence"), ["1", "2"]);
    let found = s
        .filter(
            js(r#"{"queries":[{"aggregate":"big.a"}]}"#),
            JsValue::UNDEFINED,
        )
        .await
        .unwrap();
    let first = Array::from(&found).get(0);
    assert_eq!(get(&first, "payload").as_string().unwrap().len(), 100_000);
    assert_eq!(field_list(&found, "position"), ["1", "2"]);
    // Two records: the big event alone, the small one after it.
    assert_eq!(raw_records("web-large").await.len(), 2);
    s.close();
}

#[wasm_bindgen_test]
async fn an_end_subscription_woken_before_its_start_is_known_delivers_nothing_old() {
    let s = fresh("web-live-end-race").await;
    s.push(push_json("old.a", 3)).await.unwrap();
    let (seen, on_event) = collector();
    s.subscribe(
        JsValue::UNDEFINED,
        on_event,
        js(r#"{"fromPosition":"end"}"#),
    )
    .unwrap();
    // A wake-up hint before the subscription has read where the log ends.
    let focus = js_sys::Function::new_no_args("globalThis.dispatchEvent(new Event('focus'))");
    focus.call0(&JsValue::NULL).unwrap();
    sleep(100).await;
    assert_eq!(seen.length(), 0, "nothing from before subscribe()");
    s.push(push_json("new.a", 1)).await.unwrap();
    until_len(&seen, 1).await;
    assert_eq!(field_list(&seen.into(), "position"), ["4"]);
    s.close();
}

/// Runs `body` (the text of an async JS function of `store`) on a store.
async fn with_store(store: EventStore, body: &str) -> JsValue {
    let f = js_sys::Function::new_with_args("store", &format!("return ({body})(store);"));
    let p: Promise = f
        .call1(&JsValue::NULL, &JsValue::from(store))
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap()
}

#[wasm_bindgen_test]
async fn reads_in_a_row_share_a_transaction() {
    let s = fresh("reuse-share").await;
    s.push(push_json("user.a", 3)).await.unwrap();
    let before = eventstore_wasm::transactions_created();
    for _ in 0..20 {
        let e = read(&s, r#"{"queries":[{"aggregate":"user.a"}]}"#).await;
        assert_eq!(Array::from(&e).length(), 3);
    }
    let used = eventstore_wasm::transactions_created() - before;
    // One per 25 ms at most; 20 without sharing.
    assert!(used <= 10, "20 loads in a row used {used} transactions");
    // After the transaction has ended (a new task), the next read moves to
    // a new one before reading anything.
    sleep(0).await;
    let before = eventstore_wasm::transactions_created();
    let e = read(&s, r#"{"queries":[{"aggregate":"user.a"}]}"#).await;
    assert_eq!(Array::from(&e).length(), 3);
    assert_eq!(eventstore_wasm::transactions_created() - before, 1);
}

#[wasm_bindgen_test]
async fn a_read_sees_every_write_started_before_it() {
    let s = fresh("reuse-writes").await;
    s.push(push_json("user.a", 3)).await.unwrap();
    // A push (here, and through another connection) started before a read
    // is seen by that read, even while an older read transaction could be
    // reused: it was created before the push.
    let seen = with_store(
        s,
        r#"async (store) => {
          const other = await store.constructor.open("reuse-writes");
          const counts = [];
          for (const writer of [store, other, store]) {
            await store.filter({ queries: [{ aggregate: "user.a" }] });
            const pushed = writer.push([{ aggregate: "user.a", commands: [{ action: "user.a.e" }] }]);
            counts.push((await store.filter({ queries: [{ aggregate: "user.a" }] })).length);
            await pushed;
          }
          other.close();
          return counts;
        }"#,
    )
    .await;
    assert_eq!(JSON::stringify(&seen).unwrap(), "[4,5,6]");
}

#[wasm_bindgen_test]
async fn whole_batches_read_like_single_events() {
    let s = fresh("whole-batches").await;
    let entries = js(r#"[
        {"aggregate":"user.z","commands":[
          {"action":"user.z.added","revision":3,"payload":{"name":"Zoë","tags":["a",{"b":null}],"n":1.5}},
          {"action":"user.z.note"},
          {"action":"team.t1.joined","payload":"中文 \" \\ \n"},
          {"action":"user.z.removed","payload":[1,2,3]}]},
        {"aggregate":"user.y","commands":[{"action":"user.y.added","payload":{"secret":"s"}}]}]"#);
    s.push(entries).await.unwrap();
    s.forget(js(r#"{"queries":[{"aggregate":"user.y"}]}"#))
        .await
        .unwrap();
    let json = |filter: &'static str| {
        let s = &s;
        async move { String::from(JSON::stringify(&read(s, filter).await).unwrap()) }
    };
    // Whole batches (expanded in JavaScript) and single events (encoded in
    // Rust) give the same objects, field for field and in the same order.
    let whole = json(r#"{"queries":[{"aggregate":"user.z"}]}"#).await;
    let single = json(r#"{"queries":[{"aggregate":"user.z","subjects":">"}]}"#).await;
    assert_eq!(whole, single);
    assert!(
        whole.contains(r#""payload":null,"forgotten":false"#),
        "{whole}"
    );
    let whole = json(r#"{"queries":[{"aggregate":"user.y"}]}"#).await;
    let single = json(
        r#"{"queries":[{"aggregate":"user.y","sequence":{"to":5},"subjects":"user.y.added"}]}"#,
    )
    .await;
    assert_eq!(whole, single);
    assert!(
        whole.contains(r#""payload":null,"forgotten":true"#),
        "{whole}"
    );
    let all = json("{}").await;
    let singles = json(r#"{"queries":[{"subjects":">"}]}"#).await;
    assert_eq!(all, singles);
    assert_eq!(Array::from(&js(&all)).length(), 5);
}

#[wasm_bindgen_test]
async fn only_actions_foreign_to_the_aggregate_are_indexed() {
    let s = fresh("sparse-actions").await;
    s.push(js(r#"[
        {"aggregate":"user.a","commands":[{"action":"user.a.added"},{"action":"user.a.email.changed"}]},
        {"aggregate":"user.b","commands":[{"action":"user.b.added"},{"action":"team.t1.joined"}]}]"#))
        .await
        .unwrap();
    let patterns = [
        ("team.>", 1),
        ("user.*.added", 2),
        ("user.*.email.changed", 1),
        ("user.a.>", 2),
        ("user.b.>", 1),
        ("*.*.joined", 1),
        ("user", 0),
    ];
    // Unfolded, then folded: the same matches.
    for (pattern, n) in patterns {
        assert_eq!(count_subjects(&s, pattern).await, n, "{pattern}");
    }
    s.fold_all(128).await.unwrap();
    let records = raw_records("sparse-actions").await;
    assert_eq!(records.len(), 2);
    assert!(!records[0].contains(r#""actions""#), "{}", records[0]);
    assert!(
        records[1].contains(r#""actions":["team.t1.joined"]"#),
        "{}",
        records[1]
    );
    for (pattern, n) in patterns {
        assert_eq!(count_subjects(&s, pattern).await, n, "{pattern}");
    }
}

/// A database as the first release (schema version 1) wrote it: the
/// `batches` store and its two indexes, `actions` listing every action.
async fn write_version_1(name: &str) {
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name, 1);
            r.onupgradeneeded = () => {
              const s = r.result.createObjectStore("batches", { keyPath: "lastPosition" });
              s.createIndex("aggregate", ["aggregate", "lastSequence"], { unique: true });
              s.createIndex("actions", "actions", { multiEntry: true });
              s.add({ lastPosition: 2, aggregate: "user.a", firstSequence: 1, lastSequence: 2, createdAt: 1700000000000,
                actions: ["user.a.added", "user.a.renamed"],
                events: JSON.stringify([
                  { id: "id-1", action: "user.a.added", revision: 1, payload: { name: "Ada" } },
                  { id: "id-2", action: "user.a.renamed", revision: 2, payload: { name: "Ada L." } }]) });
              s.add({ lastPosition: 3, aggregate: "user.b", firstSequence: 1, lastSequence: 1, createdAt: 1700000000001,
                actions: ["team.t.joined"],
                events: JSON.stringify([{ id: "id-3", action: "team.t.joined", revision: 1, payload: null }]) });
            };
            r.onerror = () => fail(r.error);
            r.onsuccess = () => { r.result.close(); ok(); };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_version_1_database_is_upgraded_in_place() {
    EventStore::delete_store("web-v1".into()).await.unwrap();
    write_version_1("web-v1").await;
    let s = EventStore::open("web-v1".into(), None).await.unwrap();
    let all = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    assert_eq!(
        field_list(&all, "id"),
        [r#""id-1""#, r#""id-2""#, r#""id-3""#]
    );
    assert_eq!(field_list(&all, "position"), ["1", "2", "3"]);
    assert_eq!(field_list(&all, "revision"), ["1", "2", "1"]);
    for (pattern, n) in [("user.a.>", 2), ("team.>", 1), ("user.*.renamed", 1)] {
        assert_eq!(count_subjects(&s, pattern).await, n, "{pattern}");
    }
    // Pushes continue the log and the aggregates, and forget works on old records.
    let e = s
        .push(js(r#"[{"aggregate":"user.a","expectedSequence":2,"commands":[{"action":"user.a.removed"}]}]"#))
        .await
        .unwrap();
    assert_eq!(field_list(&e, "position"), ["4"]);
    assert_eq!(field_list(&e, "sequence"), ["3"]);
    let erased = s
        .forget(js(r#"{"queries":[{"aggregate":"user.a"}]}"#))
        .await
        .unwrap();
    assert_eq!(erased, 3.0);
    let records = raw_records("web-v1").await;
    assert!(!records.iter().any(|r| r.contains("Ada")));
    // The rewritten record of the new push keeps its unique `start`.
    assert!(
        records.iter().any(|r| r.contains(r#""start":4"#)),
        "{records:?}"
    );
    s.close();
    EventStore::delete_store("web-v1".into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn an_end_subscription_starts_after_the_calls_made_before_it() {
    let s = fresh("end-order").await;
    s.push(push_json("doc.1", 1)).await.unwrap();
    let seen = with_store(
        s,
        r#"async (store) => {
          // Another connection appends: this store's guess of the log's end
          // is now stale, so its next push is written, refused, and redone.
          const other = await store.constructor.open("end-order");
          await other.push([{ aggregate: "doc.2", commands: [{ action: "doc.2.x" }] }]);
          const before = store.push([{ aggregate: "doc.1", commands: [{ action: "doc.1.before" }] }]);
          const seen = [];
          const stop = store.subscribe(undefined, (e) => seen.push(e.action.join(".")), { fromPosition: "end" });
          await before;
          await store.push([{ aggregate: "doc.1", commands: [{ action: "doc.1.after" }] }]);
          for (let i = 0; i < 100 && seen.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
          await new Promise((r) => setTimeout(r, 50));
          stop();
          other.close();
          return seen;
        }"#,
    )
    .await;
    assert_eq!(JSON::stringify(&seen).unwrap(), r#"["doc.1.after"]"#);
}

/// Batch records read by `f`.
async fn records_read_by<F: std::future::Future>(f: F) -> (F::Output, u64) {
    let before = eventstore_wasm::records_read();
    let out = f.await;
    (out, eventstore_wasm::records_read() - before)
}

/// Pages requested ahead by `f`.
async fn pages_ahead_by<F: std::future::Future>(f: F) -> (F::Output, u64) {
    let before = eventstore_wasm::pages_read_ahead();
    let out = f.await;
    (out, eventstore_wasm::pages_read_ahead() - before)
}

#[wasm_bindgen_test]
async fn long_reads_request_their_next_page_ahead_and_read_the_same() {
    eventstore_wasm::pause_folding(true);
    let s = fresh("web-read-ahead").await;
    // 12 pushes of 100 aggregates x 1 event, folded: 1,200 batch records
    // (five pages of 256), then two unfolded pushes at the end.
    let push = |p: u32| {
        let entries: Vec<String> = (0..100)
            .map(|i| {
                let a = format!("user.u{}", (p * 100 + i) % 700);
                let kind = if (p + i) % 3 == 0 { "added" } else { "renamed" };
                format!(
                    r#"{{"aggregate":"{a}","commands":[{{"action":"{a}.{kind}","payload":{}}}]}}"#,
                    p * 100 + i
                )
            })
            .collect();
        js(&format!("[{}]", entries.join(",")))
    };
    for p in 0..12 {
        s.push(push(p)).await.unwrap();
    }
    s.fold_all(128).await.unwrap();
    for p in 12..14 {
        s.push(push(p)).await.unwrap();
    }
    let positions = |events: &JsValue| -> Vec<u32> {
        field_list(events, "position")
            .iter()
            .map(|p| p.parse().unwrap())
            .collect()
    };
    let payloads = |events: &JsValue| -> Vec<u32> {
        field_list(events, "payload")
            .iter()
            .map(|p| p.parse().unwrap())
            .collect()
    };
    let every: Vec<u32> = (1..=1400).collect();

    // A scan of the whole log: pages were requested ahead (4 and 5 at
    // least: the first page's range may still run past the unfolded
    // records), and each record was read once.
    let ((all, records), ahead) =
        pages_ahead_by(records_read_by(s.filter(js("{}"), JsValue::UNDEFINED))).await;
    let all = all.unwrap();
    assert_eq!(positions(&all), every);
    assert_eq!(payloads(&all), (0..1400).collect::<Vec<u32>>());
    assert_eq!(records, 1200);
    assert!((2..=3).contains(&ahead), "{ahead} pages requested ahead");

    // A limit that ends inside a page takes the first records of the page
    // read ahead (and requests nothing more).
    let (first, ahead) = pages_ahead_by(read(&s, r#"{"limit":700}"#)).await;
    assert_eq!(positions(&first), every[..700]);
    assert_eq!(ahead, 1);

    // Candidates from the indexes, read as key ranges: the same events.
    for (filter, keep) in [
        (
            r#"{"queries":[{"subjects":"user.>"}]}"#,
            &(|_: u32| true) as &dyn Fn(u32) -> bool,
        ),
        (r#"{"queries":[{"subjects":"user.*.added"}]}"#, &|n: u32| {
            (n / 100 + n % 100) % 3 == 0
        }),
        (
            r#"{"queries":[{"aggregate":"user.>","position":{"from":100,"to":1300}}]}"#,
            &|n: u32| (99..1299).contains(&n),
        ),
    ] {
        let (got, ahead) = pages_ahead_by(read(&s, filter)).await;
        let want: Vec<u32> = (0..1400).filter(|n| keep(*n)).collect();
        assert_eq!(payloads(&got), want, "{filter}");
        assert!(ahead >= 1, "{filter}: no page requested ahead");
        // count walks the same pages.
        let (n, ahead) = pages_ahead_by(s.count(js(filter))).await;
        assert_eq!(n.unwrap(), want.len() as f64, "{filter}");
        assert!(ahead >= 1, "{filter}: count requested no page ahead");
    }

    // A write reads nothing ahead: the next page must see its writes.
    let (forgot, ahead) =
        pages_ahead_by(s.forget(js(r#"{"queries":[{"subjects":"user.>"}]}"#))).await;
    assert_eq!(forgot.unwrap(), 1400.0);
    assert_eq!(ahead, 0);
    let forgotten = field_list(&read(&s, "{}").await, "forgotten");
    assert_eq!(forgotten.len(), 1400);
    assert!(forgotten.iter().all(|f| f == "true"));
    eventstore_wasm::pause_folding(false);
}

#[wasm_bindgen_test]
async fn get_count_reverse_and_positions() {
    let s = fresh("web-reads").await;
    // 300 pushes of 2 events to 30 aggregates: 300 records.
    for p in 0..300 {
        let a = format!("user.u{}", p % 30);
        s.push(js(&format!(
            r#"[{{"aggregate":"{a}","commands":[{{"action":"{a}.added","payload":{p}}},{{"action":"team.t{}.joined"}}]}}]"#,
            p % 7
        )))
        .await
        .unwrap();
    }
    let all = read(&s, "{}").await;
    let all = Array::from(&all);
    assert_eq!(all.length(), 600);

    // get: each event by its id, through its millisecond's records.
    for i in [0u32, 1, 299, 598, 599] {
        let e = all.get(i);
        let (got, cost) = records_read_by(s.get(get(&e, "id"))).await;
        let got = got.unwrap();
        assert_eq!(JSON::stringify(&got).unwrap(), JSON::stringify(&e).unwrap());
        assert!(cost <= 300, "{cost}");
    }
    let missing = s.get("not-an-id".into()).await.unwrap();
    assert!(missing.is_null());
    let err = s.get(JsValue::from(5)).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");

    // count: as filter's length, capped by limit; without queries, from the end.
    for (filter, n) in [
        ("{}", 600),
        (r#"{"limit":7}"#, 7),
        (r#"{"queries":[{"aggregate":"user.u3"}]}"#, 20),
        (r#"{"queries":[{"subjects":"team.t2.>"}]}"#, 43),
        (r#"{"queries":[{"subjects":"*.u3.added"}],"limit":4}"#, 4),
        (r#"{"queries":[{"position":{"from":11,"to":21}}]}"#, 10),
    ] {
        assert_eq!(s.count(js(filter)).await.unwrap(), n as f64, "{filter}");
        let listed = Array::from(&read(&s, filter).await).length();
        assert_eq!(listed, n, "{filter}");
    }
    let (n, cost) = records_read_by(s.count(JsValue::UNDEFINED)).await;
    assert_eq!((n.unwrap(), cost), (600.0, 0));

    // reverse with a limit: the last events, read from the end.
    let (last, cost) =
        records_read_by(s.filter(js(r#"{"reverse":true,"limit":20}"#), JsValue::UNDEFINED)).await;
    let expected: Vec<String> = (581..=600).rev().map(|p| p.to_string()).collect();
    assert_eq!(field_list(&last.unwrap(), "position"), expected);
    assert!(cost <= 20, "the last 20 events read {cost} records of 300");
    let (last, cost) = records_read_by(s.filter(
        js(r#"{"queries":[{"aggregate":"user.u3"}],"reverse":true,"limit":3}"#),
        JsValue::UNDEFINED,
    ))
    .await;
    assert_eq!(field_list(&last.unwrap(), "sequence"), ["20", "19", "18"]);
    assert!(cost <= 3, "{cost}");
    let (last, cost) = records_read_by(s.filter(
        js(r#"{"queries":[{"subjects":"team.t2.joined"}],"reverse":true,"limit":2}"#),
        JsValue::UNDEFINED,
    ))
    .await;
    assert_eq!(field_list(&last.unwrap(), "position"), ["594", "580"]);
    assert!(cost <= 10, "{cost}");
    // Reverse without a limit is filter backwards, whatever the plan.
    for filter in [
        r#"{"queries":[{"aggregate":"user.u3"}]}"#,
        r#"{"queries":[{"subjects":"team.>"}]}"#,
        r#"{"queries":[{"subjects":"*.u3.added"}]}"#,
    ] {
        let mut forward = field_list(&read(&s, filter).await, "position");
        forward.reverse();
        let backward = format!(r#"{{"reverse":true,{}"#, &filter[1..]);
        assert_eq!(field_list(&read(&s, &backward).await, "position"), forward);
    }

    // position ranges: half-open, a resumed page reads what follows.
    let (page, cost) = records_read_by(s.filter(
        js(r#"{"queries":[{"position":{"from":591}}]}"#),
        JsValue::UNDEFINED,
    ))
    .await;
    let expected: Vec<String> = (591..=600).map(|p| p.to_string()).collect();
    assert_eq!(field_list(&page.unwrap(), "position"), expected);
    assert!(cost <= 6, "{cost}");
    let page = read(
        &s,
        r#"{"queries":[{"position":{"from":3,"to":5},"subjects":"team.>"}]}"#,
    )
    .await;
    assert_eq!(field_list(&page, "position"), ["4"]);
    for bad in [
        r#"{"reverse":1}"#,
        r#"{"queries":[{"position":{"from":-1}}]}"#,
        r#"{"queries":[{"position":{"after":3}}]}"#,
    ] {
        let err = s.filter(js(bad), JsValue::UNDEFINED).await.unwrap_err();
        assert_eq!(code(&err), "INVALID_ARGUMENT", "{bad}");
        let err = s.count(js(bad)).await.unwrap_err();
        assert_eq!(code(&err), "INVALID_ARGUMENT", "{bad}");
    }
    let err = s.forget(js(r#"{"reverse":true}"#)).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    let err = s
        .subscribe(
            js(r#"{"reverse":true}"#),
            js_sys::Function::new_no_args("").into(),
            JsValue::UNDEFINED,
        )
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    s.close();
    let err = s.get("x".into()).await.unwrap_err();
    assert_eq!(code(&err), "CLOSED");
    let err = s.count(JsValue::UNDEFINED).await.unwrap_err();
    assert_eq!(code(&err), "CLOSED");
}

#[wasm_bindgen_test]
async fn async_iteration_goes_backwards() {
    let s = fresh("web-iterate-back").await;
    for _ in 0..3 {
        s.push(push_json("it.a", 900)).await.unwrap();
    }
    s.push(push_json("it.b", 5)).await.unwrap();
    let collect = js_sys::Function::new_with_args(
        "iterable",
        "return (async () => { const out = []; for await (const e of iterable) out.push(e.position); return out; })()",
    );
    for (filter, expected) in [
        (
            r#"{"reverse":true}"#,
            (1..=2705).rev().collect::<Vec<u64>>(),
        ),
        (
            r#"{"queries":[{"aggregate":"it.a"}],"reverse":true}"#,
            (1..=2700).rev().collect(),
        ),
        (
            r#"{"queries":[{"subjects":"it.*.e"}],"reverse":true,"limit":1500}"#,
            (1206..=2705).rev().collect(),
        ),
    ] {
        let iterable = s.events(js(filter)).unwrap();
        let p: Promise = collect
            .call1(&JsValue::NULL, &iterable)
            .unwrap()
            .unchecked_into();
        let got: Vec<u64> = Array::from(&JsFuture::from(p).await.unwrap())
            .iter()
            .map(|p| p.as_f64().unwrap() as u64)
            .collect();
        assert_eq!(got, expected, "{filter}");
    }
    s.close();
}

/// The records of a version-2 database: version 1's, with `start` and its
/// unique index, and ids that are UUIDv7s of their `createdAt`.
async fn write_version_2(name: &str) {
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name, 2);
            r.onupgradeneeded = () => {
              const s = r.result.createObjectStore("batches", { keyPath: "lastPosition" });
              s.createIndex("aggregate", ["aggregate", "lastSequence"], { unique: true });
              s.createIndex("actions", "actions", { multiEntry: true });
              s.createIndex("start", "start", { unique: true });
              s.add({ lastPosition: 2, aggregate: "user.a", firstSequence: 1, lastSequence: 2, createdAt: 1700000000000, start: 1,
                events: JSON.stringify([
                  { id: "018bcfe5-6800-7000-8000-000000000001", action: "user.a.added", revision: 1, payload: { name: "Ada" } },
                  { id: "018bcfe5-6800-7000-8000-000000000002", action: "user.a.renamed", revision: 2, payload: { name: "Ada L." } }]) });
              s.add({ lastPosition: 3, aggregate: "user.b", firstSequence: 1, lastSequence: 1, createdAt: 1700000000001, start: 3,
                actions: ["team.t.joined"],
                events: JSON.stringify([{ id: "018bcfe5-6801-7000-8000-000000000003", action: "team.t.joined", revision: 1, payload: null }]) });
            };
            r.onerror = () => fail(r.error);
            r.onsuccess = () => { r.result.close(); ok(); };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap();
}

/// A version-3 database: version 2's records with the `createdAt` index.
async fn write_version_3(name: &str) {
    write_version_2(name).await;
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name, 3);
            r.onupgradeneeded = () => { r.transaction.objectStore("batches").createIndex("createdAt", "createdAt"); };
            r.onerror = () => fail(r.error);
            r.onsuccess = () => { r.result.close(); ok(); };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap();
}

/// The database's version, the index names of `batches` and the object
/// stores, raw.
async fn schema(name: &str) -> String {
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name);
            r.onerror = () => fail(r.error);
            r.onsuccess = () => {
              const db = r.result;
              const names = [...db.transaction("batches").objectStore("batches").indexNames];
              const stores = [...db.objectStoreNames];
              db.close();
              ok(`${db.version}:${names.sort().join(",")}:${stores.sort().join(",")}`);
            };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap().as_string().unwrap()
}

/// A version-4 database: version 3's, with the `sync` object store.
async fn write_version_4(name: &str) {
    write_version_3(name).await;
    let f = js_sys::Function::new_with_args(
        "name",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name, 4);
            r.onupgradeneeded = () => { r.result.createObjectStore("sync"); };
            r.onerror = () => fail(r.error);
            r.onsuccess = () => { r.result.close(); ok(); };
          });"#,
    );
    let p: Promise = f
        .call1(&JsValue::NULL, &name.into())
        .unwrap()
        .unchecked_into();
    JsFuture::from(p).await.unwrap();
}

#[wasm_bindgen_test]
async fn versions_1_to_4_are_upgraded_to_5_with_their_data() {
    for (name, version) in [
        ("web-v1-to-5", 1),
        ("web-v2-to-5", 2),
        ("web-v3-to-5", 3),
        ("web-v4-to-5", 4),
    ] {
        EventStore::delete_store(name.into()).await.unwrap();
        match version {
            1 => write_version_1(name).await,
            2 => write_version_2(name).await,
            3 => write_version_3(name).await,
            _ => write_version_4(name).await,
        }
        let s = EventStore::open(name.into(), None).await.unwrap();
        assert_eq!(
            schema(name).await,
            "5:actions,aggregate,createdAt,start,unfolded:batches,sync",
            "from {version}"
        );
        let all = s
            .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
            .await
            .unwrap();
        assert_eq!(field_list(&all, "position"), ["1", "2", "3"]);
        // Never synced: pending, without a remote position.
        assert_eq!(field_list(&all, "remotePosition"), ["null", "null", "null"]);
        assert_eq!(s.count(JsValue::UNDEFINED).await.unwrap(), 3.0);
        // Every old event is found by its id (v1's are not UUIDv7s: a scan;
        // v2's through the new index, reading only their millisecond).
        for e in Array::from(&all).iter() {
            let (got, cost) = records_read_by(s.get(get(&e, "id"))).await;
            let got = got.unwrap();
            assert_eq!(get(&got, "position"), get(&e, "position"), "from {version}");
            if version >= 2 {
                assert_eq!(cost, 1, "from {version}: {cost} records read");
            }
        }
        let back = s
            .filter(js(r#"{"reverse":true,"limit":2}"#), JsValue::UNDEFINED)
            .await
            .unwrap();
        assert_eq!(field_list(&back, "position"), ["3", "2"]);
        // New pushes are found through the index too.
        let e = s
            .push(js(r#"[{"aggregate":"user.a","expectedSequence":2,"commands":[{"action":"user.a.removed"}]}]"#))
            .await
            .unwrap();
        let id = get(&Array::from(&e).get(0), "id");
        let (got, cost) = records_read_by(s.get(id.clone())).await;
        assert_eq!(get(&got.unwrap(), "position"), 4);
        assert_eq!(cost, 1);
        // Folded, the old and new records read the same.
        s.fold_all(128).await.unwrap();
        let (got, cost) = records_read_by(s.get(id)).await;
        assert_eq!(get(&got.unwrap(), "position"), 4);
        assert_eq!(cost, 1);
        let folded = s
            .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
            .await
            .unwrap();
        assert_eq!(field_list(&folded, "position"), ["1", "2", "3", "4"]);
        assert_eq!(field_list(&folded, "sequence"), ["1", "2", "1", "3"]);
        s.close();
        EventStore::delete_store(name.into()).await.unwrap();
    }
}

/// An upcaster entry as JS: `action`, `from`, `to`, and the body of
/// `upcast(payload, event)`.
fn upcaster(action: &str, from: u32, to: u32, body: &str) -> JsValue {
    let entry = js(&format!(
        r#"{{"action":"{action}","from":{from},"to":{to}}}"#
    ));
    let f = js_sys::Function::new_with_args("payload, event", body);
    Reflect::set(&entry, &"upcast".into(), &f).unwrap();
    entry
}

fn options(upcasters: &[JsValue]) -> Option<eventstore_wasm::OpenOptionsArg> {
    let o = Object::new();
    let list: Array = upcasters.iter().collect();
    Reflect::set(&o, &"upcasters".into(), &list).unwrap();
    Some(o.unchecked_into())
}

#[wasm_bindgen_test]
async fn upcasters_apply_on_every_read() {
    let name = "web-upcast";
    let plain = fresh(name).await;
    let pushed = plain
        .push(js(r#"[{"aggregate":"user.a","commands":[
            {"action":"user.a.added","revision":1,"payload":{"name":"Ada"}},
            {"action":"user.a.added","revision":3,"payload":{"fullName":"Ada","tags":[]}},
            {"action":"user.a.renamed","revision":1,"payload":"x"},
            {"action":"user.a.added","revision":1,"payload":{"name":"Gone"}}]}]"#))
        .await
        .unwrap();
    plain
        .forget(js(r#"{"queries":[{"position":{"from":4}}]}"#))
        .await
        .unwrap();
    plain.close();
    let s = EventStore::open(
        name.into(),
        options(&[
            upcaster(
                "user.*.added",
                1,
                2,
                "return { fullName: payload.name, rev: event.revision };",
            ),
            upcaster("user.*.added", 2, 3, "return { ...payload, tags: [] };"),
        ]),
    )
    .await
    .unwrap();
    let all = read(&s, "{}").await;
    assert_eq!(field_list(&all, "revision"), ["3", "3", "1", "1"]);
    assert_eq!(
        field_list(&all, "payload"),
        [
            r#"{"fullName":"Ada","rev":1,"tags":[]}"#,
            r#"{"fullName":"Ada","tags":[]}"#,
            r#""x""#,
            "null"
        ]
    );
    // get, events (backwards too) and subscribe see the same.
    let first_id = get(&Array::from(&pushed).get(0), "id");
    let got = s.get(first_id).await.unwrap();
    assert_eq!(get(&got, "revision"), 3);
    let (seen, on_event) = collector();
    let stop = s
        .subscribe(JsValue::UNDEFINED, on_event, JsValue::UNDEFINED)
        .unwrap();
    until_len(&seen, 4).await;
    assert_eq!(
        JSON::stringify(&seen).unwrap(),
        JSON::stringify(&all).unwrap()
    );
    s.push(js(r#"[{"aggregate":"user.b","commands":[{"action":"user.b.added","payload":{"name":"Bo"}}]}]"#))
        .await
        .unwrap();
    until_len(&seen, 5).await;
    let live = seen.get(4);
    assert_eq!(get(&live, "revision"), 3);
    assert_eq!(
        JSON::stringify(&get(&live, "payload")).unwrap(),
        r#"{"fullName":"Bo","rev":1,"tags":[]}"#
    );
    stop.unchecked_into::<js_sys::Function>()
        .call0(&JsValue::NULL)
        .unwrap();
    let back = read(&s, r#"{"reverse":true,"limit":1}"#).await;
    assert_eq!(field_list(&back, "revision"), ["3"]);
    s.close();
}

#[wasm_bindgen_test]
async fn a_failing_upcaster_rejects_the_read_naming_the_event() {
    let name = "web-upcast-fail";
    let plain = fresh(name).await;
    let pushed = plain
        .push(js(r#"[{"aggregate":"doc.1","commands":[{"action":"doc.1.made","payload":1},{"action":"doc.1.made","payload":2}]}]"#))
        .await
        .unwrap();
    plain.close();
    let id = get(&Array::from(&pushed).get(1), "id").as_string().unwrap();
    let s = EventStore::open(
        name.into(),
        options(&[upcaster(
            "doc.>",
            1,
            2,
            "if (payload === 2) throw new RangeError('two'); return payload === 1 ? payload : () => 0;",
        )]),
    )
    .await
    .unwrap();
    let err = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_PAYLOAD");
    let message = String::from(js_sys::Error::from(err.clone()).message());
    for part in [
        id.as_str(),
        "doc.1.made",
        "revision 1",
        "position 2",
        "upcaster 0",
        "doc.>",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    let cause = get(&err, "cause");
    assert_eq!(String::from(js_sys::Error::from(cause).message()), "two");
    let err = s.get(id.into()).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_PAYLOAD");
    // A subscription ends and tells onError.
    let errors = Array::new();
    let on_error = js_sys::Function::new_with_args("e", "this.push(e)").bind0(&errors);
    let opts = Object::new();
    Reflect::set(&opts, &"onError".into(), &on_error).unwrap();
    let (seen, on_event) = collector();
    s.subscribe(JsValue::UNDEFINED, on_event, opts.into())
        .unwrap();
    until_len(&errors, 1).await;
    assert_eq!(code(&errors.get(0)), "INVALID_PAYLOAD");
    assert_eq!(
        seen.length(),
        0,
        "a page is upcast before any of it is delivered"
    );
    s.close();
    // A value JSON cannot represent.
    let s = EventStore::open(
        name.into(),
        options(&[upcaster("doc.>", 1, 2, "return () => 0;")]),
    )
    .await
    .unwrap();
    let err = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_PAYLOAD");
    s.close();
}

#[wasm_bindgen_test]
async fn bad_upcasters_are_refused_at_open() {
    let noop = "return payload;";
    for (list, expected, part) in [
        (
            vec![upcaster("user.*", 2, 2, noop)],
            "INVALID_ARGUMENT",
            "upcaster 0",
        ),
        (
            vec![
                upcaster("user.*", 1, 2, noop),
                upcaster("user.*", 1, 3, noop),
            ],
            "INVALID_ARGUMENT",
            "upcaster 1",
        ),
        (
            vec![upcaster("user..x", 1, 2, noop)],
            "INVALID_SUBJECT",
            "upcaster 0",
        ),
        (
            vec![js(r#"{"action":"a","from":1,"to":2}"#)],
            "INVALID_ARGUMENT",
            "upcast",
        ),
        (
            vec![js(r#"{"action":"a","from":1,"to":70000,"upcast":null}"#)],
            "INVALID_ARGUMENT",
            "to",
        ),
    ] {
        let err = EventStore::open("web-upcast-bad".into(), options(&list))
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), expected);
        let message = String::from(js_sys::Error::from(err).message());
        assert!(message.contains(part), "{part} in {message}");
    }
    let err = EventStore::open(
        "web-upcast-bad".into(),
        Some(js(r#"{"upcaster":[]}"#).unchecked_into()),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
}

#[wasm_bindgen_test]
async fn a_freed_store_does_not_block_a_delete() {
    let s = fresh("freed").await;
    s.push(push_json("doc.1", 1)).await.unwrap();
    // What `store.free()` and `using` (Symbol.dispose) do.
    drop(s);
    let deleted = with_timeout(EventStore::delete_store("freed".into()), 5000).await;
    assert!(deleted, "delete went through");
    let again = EventStore::open("freed".into(), None).await.unwrap();
    assert_eq!(Array::from(&read(&again, "{}").await).length(), 0);
    again.close();
}

/// Whether `future` completes within `ms`.
async fn with_timeout<F: std::future::Future>(future: F, ms: i32) -> bool {
    use futures::future::{select, Either};
    let future = Box::pin(future);
    let timer = Box::pin(sleep(ms));
    matches!(select(future, timer).await, Either::Left(_))
}

#[wasm_bindgen_test]
async fn a_stale_guess_of_several_records_is_redone_whole() {
    let s = fresh("stale-several").await;
    s.push(push_json("doc.1", 1)).await.unwrap();
    let seen = with_store(
        s,
        r#"async (store) => {
          // Another connection appends after this store's last push: the
          // next push of three records guesses a stale end, collides on its
          // first record, and must be redone whole, never half written.
          const other = await store.constructor.open("stale-several");
          await other.push([{ aggregate: "doc.2", commands: [{ action: "doc.2.x" }] }]);
          const pushed = await store.push([
            { aggregate: "doc.1", commands: [{ action: "doc.1.a" }, { action: "doc.1.b" }] },
            { aggregate: "doc.3", commands: [{ action: "doc.3.a" }] },
            { aggregate: "doc.4", commands: [{ action: "doc.4.a" }] },
          ]);
          const all = await other.filter({});
          other.close();
          return {
            pushed: pushed.map((e) => `${e.position}:${e.action.join(".")}:${e.sequence}`),
            all: all.map((e) => `${e.position}:${e.action.join(".")}:${e.sequence}`),
          };
        }"#,
    )
    .await;
    assert_eq!(
        JSON::stringify(&seen).unwrap(),
        r#"{"pushed":["3:doc.1.a:2","4:doc.1.b:3","5:doc.3.a:1","6:doc.4.a:1"],"all":["1:doc.1.e:1","2:doc.2.x:1","3:doc.1.a:2","4:doc.1.b:3","5:doc.3.a:1","6:doc.4.a:1"]}"#
    );
}

/// Backwards reads use `getAllRecords` where the engine has it (Chromium
/// 141+) and step a cursor elsewhere: both give the same pages.
#[wasm_bindgen_test]
async fn reverse_reads_step_a_cursor_without_get_all_records() {
    let s = fresh("web-reverse-cursor").await;
    for _ in 0..30 {
        s.push(push_json("rev.a", 3)).await.unwrap();
        s.push(push_json("rev.b", 2)).await.unwrap();
    }
    s.fold_all(128).await.unwrap();
    // The engine as it is, then without getAllRecords (if it has it).
    let hide = js_sys::Function::new_no_args(
        "const p = IDBObjectStore.prototype;
         globalThis.__getAllRecords = p.getAllRecords;
         delete p.getAllRecords;",
    );
    let restore = js_sys::Function::new_no_args(
        "if (globalThis.__getAllRecords) IDBObjectStore.prototype.getAllRecords = globalThis.__getAllRecords;",
    );
    let mut seen = Vec::new();
    for round in 0..2 {
        if round == 1 {
            hide.call0(&JsValue::NULL).unwrap();
        }
        let mut pages = Vec::new();
        for filter in [
            r#"{"reverse":true}"#,
            r#"{"reverse":true,"limit":7}"#,
            r#"{"queries":[{"position":{"to":100}}],"reverse":true,"limit":4}"#,
            r#"{"queries":[{"subjects":"*.a.e"}],"reverse":true,"limit":5}"#,
        ] {
            let (found, cost) = records_read_by(s.filter(js(filter), JsValue::UNDEFINED)).await;
            pages.push(field_list(&found.unwrap(), "position"));
            assert!(cost <= 60, "{filter}: {cost}");
        }
        seen.push(pages);
    }
    restore.call0(&JsValue::NULL).unwrap();
    assert_eq!(seen[0], seen[1]);
    let all: Vec<String> = (1..=150).rev().map(|p| p.to_string()).collect();
    assert_eq!(seen[0][0], all);
    assert_eq!(seen[0][1], all[..7]);
    assert_eq!(seen[0][2], ["99", "98", "97", "96"]);
    s.close();
}

/// Unfolded records in the raw database (records with `unfolded`).
async fn unfolded_records(name: &str) -> usize {
    raw_records(name)
        .await
        .iter()
        .filter(|r| r.contains(r#""unfolded":1"#))
        .count()
}

/// Pushes of 20 aggregates of 2 events each, `pushes` times (one record each).
async fn push_wide(s: &EventStore, pushes: usize) {
    for p in 0..pushes {
        let entries: Vec<String> = (0..20)
            .map(|a| {
                format!(
                    r#"{{"aggregate":"w.a{a}","commands":[{{"action":"w.a{a}.x","payload":{{"p":{p}}}}},{{"action":"w.a{a}.y"}}]}}"#
                )
            })
            .collect();
        s.push(js(&format!("[{}]", entries.join(","))))
            .await
            .unwrap();
    }
}

/// Everything a page reads of the wide log: all events, an aggregate, a
/// prefix, backwards, counts.
async fn wide_reads(s: &EventStore) -> Vec<String> {
    let mut out = Vec::new();
    for filter in [
        "{}",
        r#"{"queries":[{"aggregate":"w.a7"}]}"#,
        r#"{"queries":[{"subjects":"w.*.y"}]}"#,
        r#"{"queries":[{"aggregate":"w.>","position":{"from":30,"to":90}}]}"#,
        r#"{"reverse":true,"limit":25}"#,
    ] {
        let events = read(s, filter).await;
        out.push(
            js_sys::JSON::stringify(&events)
                .unwrap()
                .as_string()
                .unwrap(),
        );
    }
    out.push(
        s.count(js(r#"{"queries":[{"aggregate":"w.a3"}]}"#))
            .await
            .unwrap()
            .to_string(),
    );
    out
}

#[wasm_bindgen_test]
async fn a_fold_cut_short_loses_and_duplicates_nothing() {
    eventstore_wasm::pause_folding(true);
    let s = fresh("web-fold-abort").await;
    push_wide(&s, 4).await;
    assert_eq!(unfolded_records("web-fold-abort").await, 4);
    let before = wide_reads(&s).await;
    assert!(before[0].contains(r#""position":160"#));
    // A tab closed in the middle of a fold: its transaction aborts.
    s.fold_aborted(30).await.unwrap();
    assert_eq!(unfolded_records("web-fold-abort").await, 4);
    assert_eq!(wide_reads(&s).await, before);
    assert_eq!(raw_records("web-fold-abort").await.len(), 4);
    // Folded for good: one record per aggregate and push, read the same.
    assert_eq!(s.fold_all(30).await.unwrap(), 4);
    assert_eq!(unfolded_records("web-fold-abort").await, 0);
    assert_eq!(raw_records("web-fold-abort").await.len(), 80);
    assert_eq!(wide_reads(&s).await, before);
    // Pushes go on from the folded log, by guess and checked alike.
    let e = s
        .push(js(
            r#"[{"aggregate":"w.a1","expectedSequence":8,"commands":[{"action":"w.a1.z"}]}]"#,
        ))
        .await
        .unwrap();
    assert_eq!(field_list(&e, "position"), ["161"]);
    let other = EventStore::open("web-fold-abort".into(), None)
        .await
        .unwrap();
    let e = other
        .push(js(
            r#"[{"aggregate":"w.a1","expectedSequence":9,"commands":[{"action":"w.a1.z"}]}]"#,
        ))
        .await
        .unwrap();
    assert_eq!(field_list(&e, "sequence"), ["10"]);
    other.close();
    s.close();
    eventstore_wasm::pause_folding(false);
}

#[wasm_bindgen_test]
async fn long_scans_over_folded_and_unfolded_records_read_as_folded() {
    eventstore_wasm::pause_folding(true);
    let name = "web-fold-long";
    let s = fresh(name).await;
    // Folded batches, then unfolded records with a folded one among them
    // (a forget folds the records it touches), then more unfolded ones:
    // more batches than a page of a scan (256) on either side.
    push_wide(&s, 8).await;
    s.fold_all(128).await.unwrap();
    push_wide(&s, 10).await;
    s.forget(js(
        r#"{"queries":[{"aggregate":"w.a5","position":{"from":450,"to":455}}]}"#,
    ))
    .await
    .unwrap();
    push_wide(&s, 10).await;
    assert_eq!(unfolded_records(name).await, 19);
    let reads = |s: EventStore| async move {
        let mut out = wide_reads(&s).await;
        for filter in [
            r#"{"reverse":true}"#,
            r#"{"queries":[{"position":{"from":300,"to":900}}],"reverse":true,"limit":400}"#,
            r#"{"queries":[{"subjects":"w.>","position":{"from":100}}],"limit":700}"#,
        ] {
            let events = read(&s, filter).await;
            out.push(JSON::stringify(&events).unwrap().as_string().unwrap());
        }
        (s, out)
    };
    let (s, before) = reads(s).await;
    assert!(before[0].contains(r#""position":1120"#));
    assert_eq!(before[6].matches(r#""position""#).count(), 1120);
    // The same in a connection that decodes the unfolded records afresh.
    let other = EventStore::open(name.into(), None).await.unwrap();
    let (other, fresh_reads) = reads(other).await;
    assert_eq!(fresh_reads, before);
    assert_eq!(s.fold_all(128).await.unwrap(), 19);
    let (s, after) = reads(s).await;
    assert_eq!(after, before);
    other.close();
    s.close();
    eventstore_wasm::pause_folding(false);
}

#[wasm_bindgen_test]
async fn two_connections_folding_at_once_fold_each_record_once() {
    eventstore_wasm::pause_folding(true);
    let a = fresh("web-fold-two").await;
    push_wide(&a, 6).await;
    let b = EventStore::open("web-fold-two".into(), None).await.unwrap();
    let before = wide_reads(&b).await;
    let (x, y) = futures::join!(a.fold_all(25), b.fold_all(25));
    assert_eq!(x.unwrap() + y.unwrap(), 6);
    assert_eq!(unfolded_records("web-fold-two").await, 0);
    assert_eq!(raw_records("web-fold-two").await.len(), 120);
    assert_eq!(wide_reads(&a).await, before);
    assert_eq!(wide_reads(&b).await, before);
    a.close();
    b.close();
    eventstore_wasm::pause_folding(false);
}

#[wasm_bindgen_test]
async fn a_forget_in_unfolded_records_leaves_no_copy() {
    eventstore_wasm::pause_folding(true);
    let s = fresh("web-forget-unfolded").await;
    s.push(js(r#"[{"aggregate":"user.A","commands":[{"action":"user.A.added","payload":{"email":"ada-secret@example.com"}}]},
        {"aggregate":"user.B","commands":[{"action":"user.B.added","payload":{"email":"bob@example.com"}}]}]"#))
        .await
        .unwrap();
    s.push(js(r#"[{"aggregate":"user.C","commands":[{"action":"user.C.added","payload":{"email":"cy@example.com"}}]},
        {"aggregate":"user.A","commands":[{"action":"user.A.renamed","payload":{"name":"Ada Secret"}}]}]"#))
        .await
        .unwrap();
    s.push(js(r#"[{"aggregate":"user.D","commands":[{"action":"user.D.added","payload":{"email":"dee@example.com"}}]}]"#))
        .await
        .unwrap();
    assert_eq!(unfolded_records("web-forget-unfolded").await, 3);
    let n = s
        .forget(js(r#"{"queries":[{"aggregate":"user.A"}]}"#))
        .await
        .unwrap();
    assert_eq!(n, 2.0);
    let raw = raw_records("web-forget-unfolded").await;
    let all = raw.join("\n");
    assert!(
        !all.contains("ada-secret") && !all.contains("Ada Secret"),
        "{all}"
    );
    assert!(all.contains("bob@example.com") && all.contains("cy@example.com"));
    // The two records it touched were folded; the other is untouched.
    assert_eq!(unfolded_records("web-forget-unfolded").await, 1);
    let events = read(&s, "{}").await;
    assert_eq!(
        field_list(&events, "forgotten"),
        ["true", "false", "false", "true", "false"]
    );
    assert_eq!(field_list(&events, "position"), ["1", "2", "3", "4", "5"]);
    s.fold_all(128).await.unwrap();
    assert_eq!(
        JSON::stringify(&read(&s, "{}").await).unwrap(),
        JSON::stringify(&events).unwrap()
    );
    assert_eq!(
        field_list(&read(&s, "{}").await, "forgotten"),
        ["true", "false", "false", "true", "false"]
    );
    s.close();
    eventstore_wasm::pause_folding(false);
}

#[wasm_bindgen_test]
async fn pushes_are_folded_in_the_background() {
    let s = fresh("web-fold-background").await;
    push_wide(&s, 3).await;
    let before = wide_reads(&s).await;
    let mut waited = 0;
    while unfolded_records("web-fold-background").await > 0 {
        assert!(waited < 5000, "not folded after {waited} ms");
        sleep(50).await;
        waited += 50;
    }
    assert_eq!(raw_records("web-fold-background").await.len(), 60);
    assert_eq!(wide_reads(&s).await, before);
    s.close();
}
