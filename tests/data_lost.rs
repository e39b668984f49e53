//! The loss marker (docs/storage.md): a database that lost events this
//! origin wrote is reported on open (`DATA_LOST` or `onDataLost`), a
//! deliberate delete is not. `wasm-pack test --headless --chrome -- --test data_lost`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::rc::Rc;

use eventstore_wasm::EventStore;
use js_sys::{Array, Function, Object, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

mod browser;
use browser::{call, code, get, js, sleep};

wasm_bindgen_test_configure!(run_in_browser);

fn number(v: &JsValue, key: &str) -> f64 {
    get(v, key).as_f64().unwrap()
}

/// The fields a loss is reported with (on the `DATA_LOST` error and to
/// `onDataLost`): `(lastPosition, position, reason)`.
fn loss(v: &JsValue) -> (f64, f64, String) {
    (
        number(v, "lastPosition"),
        number(v, "position"),
        get(v, "reason").as_string().unwrap_or_default(),
    )
}

/// Runs a JavaScript function body with `name` bound and awaits its promise.
async fn run(body: &str, name: &str) -> JsValue {
    call("name", body, &name.into()).await
}

/// Whether this page can write a file to OPFS the way the store does
/// (`createWritable`; WebKitGTK 2.50's pages cannot): if not, the store
/// keeps no marker, and these tests check that it works without one.
async fn opfs_writable() -> bool {
    let ok = run(
        r#"return (async () => {
            try {
              const root = await navigator.storage.getDirectory();
              const handle = await root.getFileHandle("probe", { create: true });
              if (typeof handle.createWritable !== "function") return false;
              const w = await handle.createWritable(); await w.write("x"); await w.close();
              await root.removeEntry("probe");
              return true;
            } catch { return false; }
          })();"#,
        "",
    )
    .await;
    if !ok.is_truthy() {
        web_sys_console(
            "OPFS cannot be written here: the store keeps no loss marker; checking that it works without",
        );
    }
    ok.is_truthy()
}

fn web_sys_console(message: &str) {
    let log = Reflect::get(&js_sys::global(), &"console".into()).unwrap();
    let f: Function = Reflect::get(&log, &"log".into()).unwrap().unchecked_into();
    f.call1(&log, &message.into()).unwrap();
}

/// Without OPFS: a database deleted behind the store's back opens as new.
async fn works_without_a_marker(name: &str) {
    EventStore::delete_store(name.into()).await.unwrap();
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    push_one(&s, 1).await;
    s.close();
    raw_delete(name).await;
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    s.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

/// The marker in OPFS (the later of its two copies), or `null` (names here
/// need no encoding).
async fn marker(name: &str) -> JsValue {
    run(
        r#"return (async () => {
            let best = null;
            for (const f of [`${name}.json`, `${name}.2.json`]) {
              try {
                const root = await navigator.storage.getDirectory();
                const dir = await root.getDirectoryHandle("eventstore-wasm");
                const m = JSON.parse(await (await (await dir.getFileHandle(f)).getFile()).text());
                if (!best || m.lastPosition > best.lastPosition) best = m;
              } catch {}
            }
            return best;
          })();"#,
        name,
    )
    .await
}

/// Waits (at most 3 s) until the marker says `position`.
async fn marker_says(name: &str, position: f64) -> JsValue {
    for _ in 0..60 {
        let m = marker(name).await;
        if !m.is_null() && number(&m, "lastPosition") == position {
            return m;
        }
        sleep(50).await;
    }
    panic!(
        "the marker of {name} never said {position}: {:?}",
        marker(name).await
    );
}

/// Deletes the database through raw IndexedDB, behind the store's back.
async fn raw_delete(name: &str) {
    run(
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.deleteDatabase(name);
            r.onsuccess = () => ok(); r.onerror = () => fail(r.error);
          });"#,
        name,
    )
    .await;
}

/// Deletes the record with the highest key through raw IndexedDB.
async fn raw_drop_last_record(name: &str) {
    run(
        r#"return new Promise((ok, fail) => {
            const r = indexedDB.open(name);
            r.onerror = () => fail(r.error);
            r.onsuccess = () => {
              const db = r.result, tx = db.transaction("batches", "readwrite");
              const store = tx.objectStore("batches");
              store.openKeyCursor(null, "prev").onsuccess = (e) => store.delete(e.target.result.key);
              tx.oncomplete = () => { db.close(); ok(); };
              tx.onabort = () => fail(tx.error);
            };
          });"#,
        name,
    )
    .await;
}

async fn open(name: &str, options: JsValue) -> Result<EventStore, JsValue> {
    let options = (!options.is_undefined()).then(|| options.unchecked_into());
    EventStore::open(name.into(), options).await
}

async fn push_one(s: &EventStore, n: u32) -> JsValue {
    s.push(js(&format!(
        r#"[{{"aggregate":"user.A","commands":[{{"action":"user.A.step","payload":{{"n":{n}}}}}]}}]"#
    )))
    .await
    .unwrap()
}

/// A fresh store with `count` single-event pushes, closed once its marker says so.
async fn written(name: &str, count: u32) -> String {
    EventStore::delete_store(name.into()).await.unwrap();
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    let mut first_id = String::new();
    for n in 1..=count {
        let events = push_one(&s, n).await;
        if n == 1 {
            first_id = get(&Array::from(&events).get(0), "id").as_string().unwrap();
        }
    }
    s.close();
    marker_says(name, count as f64).await;
    first_id
}

/// Open options with an `onDataLost` that records what it is told.
fn recording() -> (JsValue, Rc<RefCell<Vec<JsValue>>>) {
    let told = Rc::new(RefCell::new(Vec::new()));
    let sink = told.clone();
    let f = Closure::<dyn Fn(JsValue)>::new(move |info: JsValue| sink.borrow_mut().push(info));
    let options = Object::new();
    Reflect::set(&options, &"onDataLost".into(), &f.into_js_value()).unwrap();
    (options.into(), told)
}

#[wasm_bindgen_test]
async fn the_marker_holds_the_logs_identity_and_its_last_position() {
    let name = "lost-marker";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    let first_id = written(name, 1).await;
    let m = marker(name).await;
    assert_eq!(get(&m, "format").as_f64(), Some(1.0));
    assert_eq!(get(&m, "name").as_string().as_deref(), Some(name));
    assert_eq!(get(&m, "firstId").as_string(), Some(first_id.clone()));
    // Within a second of the last write the marker lags; close() catches up.
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    for n in 2..=5 {
        push_one(&s, n).await;
    }
    s.close();
    let m = marker_says(name, 5.0).await;
    assert_eq!(get(&m, "firstId").as_string(), Some(first_id));
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_database_deleted_behind_the_stores_back_is_data_lost() {
    let name = "lost-deleted";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 3).await;
    raw_delete(name).await;

    let err = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&err), "DATA_LOST", "{err:?}");
    assert_eq!(loss(&err), (3.0, 0.0, "empty".into()));
    // The marker stays: the next open says so again.
    let again = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&again), "DATA_LOST");

    // With onDataLost: told once, then open with what is there.
    let (options, told) = recording();
    let s = open(name, options).await.unwrap();
    assert_eq!(told.borrow().len(), 1);
    let info = told.borrow()[0].clone();
    assert_eq!(get(&info, "name").as_string().as_deref(), Some(name));
    assert_eq!(loss(&info), (3.0, 0.0, "empty".into()));
    let events = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    assert_eq!(Array::from(&events).length(), 0);
    s.close();
    // The marker was reset: a plain open is fine now.
    assert!(marker(name).await.is_null());
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    s.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_shorter_log_is_data_lost_and_the_marker_follows_what_is_left() {
    let name = "lost-shorter";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 3).await;
    raw_drop_last_record(name).await;

    let err = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&err), "DATA_LOST", "{err:?}");
    assert_eq!(loss(&err), (3.0, 2.0, "shorter".into()));

    let (options, told) = recording();
    let s = open(name, options).await.unwrap();
    assert_eq!(number(&told.borrow()[0], "position"), 2.0);
    s.close();
    assert_eq!(number(&marker(name).await, "lastPosition"), 2.0);
    open(name, JsValue::UNDEFINED).await.unwrap().close();
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn another_log_under_the_same_name_is_data_lost() {
    let name = "lost-replaced";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 2).await;
    // Another log with more events: its first event is not the remembered one.
    let saved = marker(name).await;
    written(name, 4).await;
    let text: String = JSON::stringify(&saved).unwrap().into();
    run(
        &format!(
            r#"return (async () => {{
                const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("eventstore-wasm");
                for (const f of [`${{name}}.json`, `${{name}}.2.json`]) {{
                  const w = await (await dir.getFileHandle(f, {{ create: true }})).createWritable();
                  await w.write({}); await w.close();
                }}
              }})();"#,
            JSON::stringify(&text.into()).unwrap().as_string().unwrap()
        ),
        name,
    )
    .await;
    let err = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&err), "DATA_LOST", "{err:?}");
    let (_, position, reason) = loss(&err);
    assert_eq!((position, reason.as_str()), (4.0, "replaced"));
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_deliberate_delete_is_not_a_loss() {
    let name = "lost-delete";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 2).await;
    EventStore::delete_store(name.into()).await.unwrap();
    assert!(marker(name).await.is_null());
    let s = open(name, JsValue::UNDEFINED).await.unwrap();
    let events = s
        .filter(JsValue::UNDEFINED, JsValue::UNDEFINED)
        .await
        .unwrap();
    assert_eq!(Array::from(&events).length(), 0);
    s.close();
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_throwing_on_data_lost_fails_the_open_and_keeps_the_marker() {
    let name = "lost-throwing";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 1).await;
    raw_delete(name).await;
    let options = js("{}");
    let thrower = Function::new_no_args("throw new Error('app says no')");
    Reflect::set(&options, &"onDataLost".into(), &thrower).unwrap();
    let err = open(name, options).await.err().unwrap();
    assert_eq!(
        get(&err, "message").as_string().as_deref(),
        Some("app says no")
    );
    assert_eq!(number(&marker(name).await, "lastPosition"), 1.0);
    let err = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&err), "DATA_LOST");
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn open_options_are_checked() {
    let name = "lost-options";
    let typo = open(name, js(r#"{"onDataLots": 1}"#)).await.err().unwrap();
    assert_eq!(code(&typo), "INVALID_ARGUMENT");
    assert!(get(&typo, "message")
        .as_string()
        .unwrap()
        .contains("onDataLots"));
    let not_a_function = open(name, js(r#"{"onDataLost": 5}"#)).await.err().unwrap();
    assert_eq!(code(&not_a_function), "INVALID_ARGUMENT");
    let not_an_object = open(name, js("5")).await.err().unwrap();
    assert_eq!(code(&not_an_object), "INVALID_ARGUMENT");
    // No marker for a store that never held events.
    let s = open(name, js("{}")).await.unwrap();
    s.close();
    assert!(marker(name).await.is_null());
    EventStore::delete_store(name.into()).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_marker_write_cut_short_leaves_the_other_copy() {
    let name = "lost-damaged";
    if !opfs_writable().await {
        return works_without_a_marker(name).await;
    }
    written(name, 3).await;
    // Empty both copies but one, as a write cut short by a full disk could.
    let kept = run(
        r#"return (async () => {
            const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("eventstore-wasm");
            const copies = [];
            for (const f of [`${name}.json`, `${name}.2.json`]) {
              try { copies.push({ f, m: JSON.parse(await (await (await dir.getFileHandle(f)).getFile()).text()) }); } catch {}
            }
            copies.sort((a, b) => b.m.lastPosition - a.m.lastPosition);
            const w = await (await dir.getFileHandle(copies[0].f)).createWritable();
            await w.write(""); await w.close();
            return copies.length > 1 ? copies[1].m.lastPosition : 0;
          })();"#,
        name,
    )
    .await
    .as_f64()
    .unwrap();
    assert!(kept >= 1.0, "two copies were written");
    raw_delete(name).await;
    let err = open(name, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(code(&err), "DATA_LOST", "{err:?}");
    assert_eq!(number(&err, "lastPosition"), kept);
    EventStore::delete_store(name.into()).await.unwrap();
}
