//! Encryption at rest in a browser (docs/privacy.md): `wasm-pack test
//! --headless --chrome -- --test encryption`. Where the browser has no
//! OPFS sync access handles (WebKitGTK), opening an encrypted store is a
//! clear `STORAGE` error, which these tests check there instead.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use eventstore_wasm::{EventStore, OpenOptionsArg};
use js_sys::{Array, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

mod browser;
use browser::{call, code, collector, get, js, raw_records, until_len};

wasm_bindgen_test_configure!(run_in_browser);

fn message(err: &JsValue) -> String {
    get(err, "message").as_string().unwrap_or_default()
}

fn encrypted() -> Option<OpenOptionsArg> {
    Some(js(r#"{"encryption":true}"#).unchecked_into())
}

/// Removes the store's vault file from OPFS (keys lost).
async fn remove_vault(name: &str) {
    call(
        "arg",
        r#"return navigator.storage.getDirectory()
            .then((root) => root.getDirectoryHandle("eventstore-wasm"))
            .then((dir) => dir.removeEntry(`${encodeURIComponent(arg)}.keys`));"#,
        &name.into(),
    )
    .await;
}

/// Loads js/vault.js (from a Blob URL: the test server is not needed) and
/// hands its `Vault` class to the wasm side, as the package's entry does.
async fn load_vault() {
    let module = call(
        "arg",
        "return import(URL.createObjectURL(new Blob([arg], { type: 'text/javascript' })))",
        &include_str!("../js/vault.js").into(),
    )
    .await;
    eventstore_wasm::set_vault(get(&module, "Vault"));
}

/// Whether this engine is one whose key vault must work (Chromium and
/// Firefox have OPFS sync access handles; WebKitGTK does not).
async fn vault_expected() -> bool {
    call(
        "arg",
        "return /Chrome\\/|Firefox\\//.test(navigator.userAgent)",
        &JsValue::UNDEFINED,
    )
    .await
    .is_truthy()
}

/// A fresh encrypted store, or `None` (after checking the error) where the
/// browser cannot keep a key vault (never in Chromium or Firefox).
async fn fresh(name: &str) -> Option<EventStore> {
    load_vault().await;
    EventStore::delete_store(name.into()).await.unwrap();
    match EventStore::open(name.into(), encrypted()).await {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                !vault_expected().await,
                "this engine has OPFS sync access handles: {}",
                message(&e)
            );
            assert_eq!(code(&e), "STORAGE", "{}", message(&e));
            assert!(
                message(&e).contains("FileSystemSyncAccessHandle")
                    || message(&e).contains("Origin Private File System"),
                "{}",
                message(&e)
            );
            // Never a silent unencrypted store.
            let plain = EventStore::open(name.into(), None).await.unwrap();
            assert_eq!(plain.count(JsValue::UNDEFINED).await.unwrap(), 0.0);
            plain.close();
            None
        }
    }
}

/// The error `EventStore.open(name, options)` rejects with (it must reject).
async fn open_error(name: &str, options: Option<OpenOptionsArg>) -> JsValue {
    match EventStore::open(name.into(), options).await {
        Ok(_) => panic!("open({name:?}) succeeded"),
        Err(e) => e,
    }
}

fn entry(aggregate: &str, n: usize) -> String {
    let cmds: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"action":"{aggregate}.e","payload":{{"i":{i},"secret":"MARK-{aggregate}-{i}"}}}}"#))
        .collect();
    format!(
        r#"{{"aggregate":"{aggregate}","commands":[{}]}}"#,
        cmds.join(",")
    )
}

fn payloads(events: &JsValue) -> Vec<String> {
    Array::from(events)
        .iter()
        .map(|e| JSON::stringify(&get(&e, "payload")).unwrap().into())
        .collect()
}

async fn of(s: &EventStore, aggregate: &str) -> Vec<String> {
    let f = format!(r#"{{"queries":[{{"aggregate":"{aggregate}"}}]}}"#);
    payloads(&s.filter(js(&f), JsValue::UNDEFINED).await.unwrap())
}

#[wasm_bindgen_test]
async fn payloads_are_sealed_on_disk_and_read_back_everywhere() {
    let name = "enc-round-trip";
    let Some(s) = fresh(name).await else { return };
    let (seen, on_event) = collector();
    let _unsub = s
        .subscribe(JsValue::UNDEFINED, on_event, JsValue::UNDEFINED)
        .unwrap();
    let pushed = s
        .push(js(&format!(
            "[{},{}]",
            entry("user.a", 3),
            entry("user.b", 2)
        )))
        .await
        .unwrap();
    assert_eq!(
        payloads(&pushed)[0],
        r#"{"i":0,"secret":"MARK-user.a-0"}"#,
        "push returns plaintext"
    );
    let raw = raw_records(name).await.join("\n");
    assert!(!raw.contains("MARK-"), "no payload in the clear: {raw}");
    assert!(raw.contains(r#"\"sealed\":\""#), "{raw}");
    assert!(
        raw.contains(r#"{\"format\":2,\"vault\":\"opfs\"}"#),
        "the flag: {raw}"
    );
    assert_eq!(of(&s, "user.a").await.len(), 3);
    assert_eq!(
        of(&s, "user.b").await[1],
        r#"{"i":1,"secret":"MARK-user.b-1"}"#
    );
    // A reducer, get, and a subscription see plaintext too.
    let total = Array::new();
    let reducer = js_sys::Function::new_with_args("t", "return (e) => t.push(e.payload.secret)")
        .call1(&JsValue::NULL, &total)
        .unwrap();
    s.filter(JsValue::UNDEFINED, reducer).await.unwrap();
    let secrets: Vec<String> = total.iter().map(|t| t.as_string().unwrap()).collect();
    assert_eq!(
        secrets,
        [
            "MARK-user.a-0",
            "MARK-user.a-1",
            "MARK-user.a-2",
            "MARK-user.b-0",
            "MARK-user.b-1"
        ]
    );
    let id = get(&Array::from(&pushed).get(4), "id");
    let one = s.get(id.clone()).await.unwrap();
    assert_eq!(
        JSON::stringify(&get(&one, "payload")).unwrap(),
        r#"{"i":1,"secret":"MARK-user.b-1"}"#
    );
    until_len(&seen, 5).await;
    assert_eq!(
        payloads(&seen.clone().into()),
        payloads(&pushed),
        "the subscription saw every event once, in order, in plaintext"
    );
    // Folded records are sealed too, and still read.
    s.fold_all(1000).await.unwrap();
    assert!(!raw_records(name).await.join("\n").contains("MARK-"));
    assert_eq!(
        of(&s, "user.a").await[2],
        r#"{"i":2,"secret":"MARK-user.a-2"}"#
    );
    // Some events of a folded record (only theirs are opened), backwards
    // and with a limit too; get after the fold.
    let some = s
        .filter(
            js(r#"{"queries":[{"aggregate":"user.a","sequence":{"from":2,"to":3}}]}"#),
            JsValue::UNDEFINED,
        )
        .await
        .unwrap();
    assert_eq!(payloads(&some), [r#"{"i":1,"secret":"MARK-user.a-1"}"#]);
    let last = s
        .filter(
            js(r#"{"queries":[{"aggregate":"user.a","sequence":{"from":2}}],"reverse":true,"limit":1}"#),
            JsValue::UNDEFINED,
        )
        .await
        .unwrap();
    assert_eq!(payloads(&last), [r#"{"i":2,"secret":"MARK-user.a-2"}"#]);
    let one = s.get(id).await.unwrap();
    assert_eq!(
        JSON::stringify(&get(&one, "payload")).unwrap(),
        r#"{"i":1,"secret":"MARK-user.b-1"}"#
    );
    // Forget: all of user.a, one event of user.b.
    let n = s
        .forget(js(r#"{"queries":[{"aggregate":"user.a"}]}"#))
        .await
        .unwrap();
    assert_eq!(n, 3.0);
    let n = s
        .forget(js(
            r#"{"queries":[{"aggregate":"user.b","sequence":{"from":1,"to":2}}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(n, 1.0);
    s.close();
    let again = EventStore::open(name.into(), encrypted()).await.unwrap();
    assert_eq!(of(&again, "user.a").await, vec!["null"; 3]);
    assert_eq!(
        of(&again, "user.b").await,
        ["null", r#"{"i":1,"secret":"MARK-user.b-1"}"#]
    );
    again.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_partial_forget_keeps_the_rest_readable_under_a_new_key() {
    let name = "enc-partial";
    let Some(s) = fresh(name).await else { return };
    s.push(js(&format!("[{}]", entry("order.x", 1))))
        .await
        .unwrap();
    s.push(js(r#"[{"aggregate":"order.x","commands":[{"action":"order.x.noted","payload":{"secret":"MARK-keep"}}]}]"#))
        .await
        .unwrap();
    let n = s
        .forget(js(r#"{"queries":[{"subjects":"order.x.e"}]}"#))
        .await
        .unwrap();
    assert_eq!(n, 1.0);
    assert_eq!(
        of(&s, "order.x").await,
        vec!["null".to_owned(), r#"{"secret":"MARK-keep"}"#.to_owned()]
    );
    let raw = raw_records(name).await.join("\n");
    // The shred entry (the JSON text `["order.x"]` in the sync store) is gone.
    assert!(
        !raw.contains(SHRED_ENTRY),
        "the shred cleared its entry: {raw}"
    );
    s.close();
    let again = EventStore::open(name.into(), encrypted()).await.unwrap();
    assert_eq!(of(&again, "order.x").await[1], r#"{"secret":"MARK-keep"}"#);
    again.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

/// The `"shred"` entry of `order.x`, as `raw_records` shows it.
const SHRED_ENTRY: &str = r#""[\"order.x\"]""#;

#[wasm_bindgen_test]
async fn a_shred_left_unfinished_is_finished_by_the_next_open() {
    let name = "enc-shred-left";
    let Some(s) = fresh(name).await else { return };
    s.push(js(&format!("[{}]", entry("order.x", 2))))
        .await
        .unwrap();
    // The test hook: the forget commits, its keys are not destroyed (as a
    // tab closed before the shred ended).
    s.keep_keys();
    s.forget(js(r#"{"queries":[{"aggregate":"order.x"}]}"#))
        .await
        .unwrap();
    assert!(
        raw_records(name).await.join("\n").contains(SHRED_ENTRY),
        "the forget wrote its shred entry"
    );
    s.close();
    let again = EventStore::open(name.into(), encrypted()).await.unwrap();
    assert!(
        !raw_records(name).await.join("\n").contains(SHRED_ENTRY),
        "the open finished the shred"
    );
    assert_eq!(of(&again, "order.x").await, vec!["null"; 2]);
    again.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn the_option_must_match_the_store() {
    let name = "enc-flag";
    // A value that is not a boolean, in every engine (no vault is needed).
    load_vault().await;
    EventStore::delete_store(name.into()).await.unwrap();
    let e = open_error(name, Some(js(r#"{"encryption":"yes"}"#).unchecked_into())).await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    let Some(s) = fresh(name).await else { return };
    s.push(js(&format!("[{}]", entry("a.b", 1)))).await.unwrap();
    s.close();
    let e = open_error(name, None).await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    assert!(
        message(&e).contains("enc-flag") && message(&e).contains("encryption: true"),
        "{}",
        message(&e)
    );
    let e = open_error(name, Some(js(r#"{"encryption":"yes"}"#).unchecked_into())).await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    // The vault gone: the keys are lost.
    remove_vault(name).await;
    let e = open_error(name, encrypted()).await;
    assert_eq!(code(&e), "DATA_LOST", "{}", message(&e));
    assert!(message(&e).contains("keys are lost"), "{}", message(&e));
    // A store with unencrypted events cannot be opened with the option.
    let plain_name = "enc-flag-plain";
    EventStore::delete_store(plain_name.into()).await.unwrap();
    let plain = EventStore::open(plain_name.into(), None).await.unwrap();
    plain
        .push(js(&format!("[{}]", entry("a.b", 1))))
        .await
        .unwrap();
    plain.close();
    let e = open_error(plain_name, encrypted()).await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    assert!(
        message(&e).contains("without encryption"),
        "{}",
        message(&e)
    );
    EventStore::delete_store(plain_name.into()).await.unwrap();
    EventStore::delete_store(name.into()).await.unwrap();
}

/// Writes `value` under `key` in store `name`'s `sync` object store, with
/// the raw IndexedDB API (the store must be closed).
async fn put_sync_entry(name: &str, key: &str, value: &str) {
    call(
        "arg",
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(arg[0]);
            r.onerror = () => fail(r.error);
            r.onsuccess = () => {
              const tx = r.result.transaction("sync", "readwrite");
              tx.objectStore("sync").put(arg[2], arg[1]);
              tx.oncomplete = () => { r.result.close(); ok(); };
              tx.onerror = () => fail(tx.error);
            };
          });"#,
        &Array::of3(&name.into(), &key.into(), &value.into()).into(),
    )
    .await;
}

#[wasm_bindgen_test]
async fn a_store_seals_with_the_cipher_its_flag_names() {
    let name = "enc-suite";
    let Some(s) = fresh(name).await else { return };
    s.close();
    // A new store is format 2: ChaCha20-Poly1305.
    let flag = |format: u32| format!(r#"{{"format":{format},"vault":"opfs"}}"#);
    let raw = raw_records(name).await.join("\n");
    assert!(
        raw.contains(
            &JSON::stringify(&flag(2).into())
                .unwrap()
                .as_string()
                .unwrap()
        ),
        "{raw}"
    );
    // Flagged format 1 (AES-256-GCM, stores of earlier releases), the store
    // seals and opens with AES-GCM, in this connection and the next.
    put_sync_entry(name, "encryption", &flag(1)).await;
    let v1 = EventStore::open(name.into(), encrypted()).await.unwrap();
    v1.push(js(&format!("[{}]", entry("user.b", 2))))
        .await
        .unwrap();
    let want = [
        r#"{"i":0,"secret":"MARK-user.b-0"}"#,
        r#"{"i":1,"secret":"MARK-user.b-1"}"#,
    ];
    assert_eq!(of(&v1, "user.b").await, want);
    v1.fold_all(1000).await.unwrap();
    v1.close();
    assert!(!raw_records(name).await.join("\n").contains("MARK-"));
    let again = EventStore::open(name.into(), encrypted()).await.unwrap();
    assert_eq!(of(&again, "user.b").await, want);
    again.close();
    // The flag picks the cipher: read as format 2, those values do not
    // open (the open itself may meet one: it reads the log's last record).
    put_sync_entry(name, "encryption", &flag(2)).await;
    let e = match EventStore::open(name.into(), encrypted()).await {
        Err(e) => e,
        Ok(v2) => {
            let e = v2
                .filter(
                    js(r#"{"queries":[{"aggregate":"user.b"}]}"#),
                    JsValue::UNDEFINED,
                )
                .await
                .expect_err("an AES-GCM value opened as ChaCha20-Poly1305");
            v2.close();
            e
        }
    };
    assert_eq!(code(&e), "STORAGE", "{}", message(&e));
    assert!(
        message(&e).contains("cannot be decrypted"),
        "{}",
        message(&e)
    );
    // A format this release does not know: VERSION_MISMATCH, naming it.
    put_sync_entry(name, "encryption", &flag(3)).await;
    let e = open_error(name, encrypted()).await;
    assert_eq!(code(&e), "VERSION_MISMATCH", "{}", message(&e));
    assert!(
        message(&e).contains("encryption format 3"),
        "{}",
        message(&e)
    );
    EventStore::delete_store(name.into()).await.unwrap();
}
