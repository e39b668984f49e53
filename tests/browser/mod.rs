//! Helpers shared by the browser test files (wasm-pack test): JSON values,
//! property reads, the store's error codes, JavaScript run in the page,
//! raw IndexedDB reads and waiting.
#![allow(dead_code, clippy::unwrap_used)]

use js_sys::{Array, Function, Promise, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The JSON text parsed into a JavaScript value.
pub fn js(json: &str) -> JsValue {
    JSON::parse(json).unwrap()
}

/// `v[key]`.
pub fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

/// The `code` of an error the store threw (which must be an `Error`).
pub fn code(err: &JsValue) -> String {
    assert!(err.is_instance_of::<js_sys::Error>(), "an Error instance");
    get(err, "code").as_string().unwrap_or_default()
}

/// Runs the JavaScript function body `body` with its one parameter
/// `param` set to `arg`; what it returns (or its promise resolves to).
pub async fn call(param: &str, body: &str, arg: &JsValue) -> JsValue {
    let f = Function::new_with_args(param, body);
    let p = Promise::resolve(&f.call1(&JsValue::NULL, arg).unwrap());
    JsFuture::from(p).await.unwrap()
}

/// Every record of every object store of database `name`, via the raw
/// IndexedDB API, as JSON texts.
pub async fn raw_records(name: &str) -> Vec<String> {
    let all = call(
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
        &name.into(),
    )
    .await;
    Array::from(&all)
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect()
}

/// Waits `ms` milliseconds.
pub async fn sleep(ms: i32) {
    call(
        "ms",
        "return new Promise((r) => setTimeout(r, ms))",
        &ms.into(),
    )
    .await;
}

/// A JS array collecting what a callback receives, and the callback.
pub fn collector() -> (Array, JsValue) {
    let seen = Array::new();
    let f = Function::new_with_args("seen", "return (e) => { seen.push(e); }")
        .call1(&JsValue::NULL, &seen)
        .unwrap();
    (seen, f)
}

/// Waits (bounded, 2 s) until `seen` holds `n` items.
pub async fn until_len(seen: &Array, n: u32) {
    for _ in 0..200 {
        if seen.length() >= n {
            break;
        }
        sleep(10).await;
    }
}
