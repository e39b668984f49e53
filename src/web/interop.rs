//! Conversions between JavaScript values and the core's types, and errors
//! as JavaScript `Error`s with a `code`.

use js_sys::{Array, Reflect};
use serde_json::value::RawValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::error::{Error, Result};
use crate::filter::{Filter, Query, Range};
use crate::push::{Command, PushEntry};
use crate::subject::{Pattern, Subject};

#[wasm_bindgen(inline_js = r#"
export function payloadJson(value) {
  if (value === undefined) return "null";
  // The usual payload takes JSON.stringify's fast path; anything
  // plainJson does not vouch for goes through the replacer, which says
  // what JSON cannot represent (and gives the same text otherwise).
  if (plainJson(value, 0)) return JSON.stringify(value);
  return JSON.stringify(value, function (key, v) {
    const where = () => (key === "" ? "the payload" : JSON.stringify(key));
    switch (typeof v) {
      case "function": case "symbol": case "bigint":
        throw new TypeError(`${where()} is a ${typeof v}, which JSON cannot represent`);
      case "number":
        if (!Number.isFinite(v)) throw new TypeError(`${where()} is ${v}, which JSON cannot represent`);
        break;
      case "undefined":
        if (Array.isArray(this)) throw new TypeError(`array element ${key} is undefined`);
        break;
    }
    return v;
  });
}
// Whether JSON.stringify(v) alone is exact: strings, finite numbers,
// booleans, null, arrays of such (no undefined element, no hole) and
// plain objects of such (undefined properties are left out either way),
// none with a toJSON, at most 64 levels deep (a cycle is deeper).
function plainJson(v, depth) {
  switch (typeof v) {
    case "string": case "boolean": return true;
    case "number": return Number.isFinite(v);
    case "object": {
      if (v === null) return true;
      if (depth >= 64 || typeof v.toJSON === "function") return false;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!plainJson(v[i], depth + 1)) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return false;
      for (const k in v) {
        const x = v[k];
        if (x !== undefined && !plainJson(x, depth + 1)) return false;
      }
      return true;
    }
    default: return false;
  }
}
// The argument of push as one JSON text, when every part of it has the
// usual shape: an array of entries, each a record with only the allowed
// keys, an aggregate and actions given as a string or an array of
// strings, a safe non-negative integer expectedSequence, a revision in
// 0..=65535, a payload plainJson vouches for. Otherwise (or when a getter
// throws) undefined: the field-by-field path reads the argument again and
// says what is wrong. (One text for a whole push instead of calls into
// JavaScript for every field of every command.)
export function pushJson(entries) {
  if (!Array.isArray(entries)) return undefined;
  const out = new Array(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (unknownKey(entry, "aggregate,expectedSequence,commands") !== undefined) return undefined;
    const { aggregate, expectedSequence, commands } = entry;
    if (!subjectLike(aggregate) || !Array.isArray(commands)) return undefined;
    if (expectedSequence != null && !(Number.isSafeInteger(expectedSequence) && expectedSequence >= 0)) return undefined;
    const given = new Array(commands.length);
    for (let j = 0; j < commands.length; j++) {
      const command = commands[j];
      if (unknownKey(command, "action,revision,payload") !== undefined) return undefined;
      const { action, revision, payload } = command;
      if (!subjectLike(action)) return undefined;
      if (revision != null && !(Number.isInteger(revision) && revision >= 0 && revision <= 65535)) return undefined;
      if (payload !== undefined && !plainJson(payload, 0)) return undefined;
      given[j] = { a: action, r: revision ?? 1, p: payload === undefined ? null : payload };
    }
    out[i] = { a: aggregate, s: expectedSequence ?? null, c: given };
  }
  return JSON.stringify(out);
}
function subjectLike(v) {
  if (typeof v === "string") return true;
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== "string") return false;
  return true;
}
export function makeUpcasters(entries, chainOf) {
  return { entries, chainOf, cache: new Map() };
}
export function upcastEvents(events, state) {
  const cache = state.cache;
  for (const event of events) {
    if (event.forgotten) continue;
    const action = event.action.join(".");
    let chain = cache.get(action);
    if (chain === undefined) {
      // Which upcasters apply to this action: asked of the core's matcher
      // once per distinct action; the first registered wins per revision.
      chain = null;
      for (const i of state.chainOf(action)) {
        const u = state.entries[i];
        chain ??= new Map();
        if (!chain.has(u.from)) chain.set(u.from, u);
      }
      if (cache.size >= 10000) cache.clear();
      cache.set(action, chain);
    }
    if (chain === null) continue;
    for (let u = chain.get(event.revision); u !== undefined; u = chain.get(event.revision)) {
      let payload;
      try {
        payload = u.upcast(event.payload, event);
        if (payload === undefined) throw new TypeError("it returned undefined (return null for no payload)");
        payload = JSON.parse(payloadJson(payload));
      } catch (cause) {
        const why = cause instanceof Error ? cause.message : describe(cause);
        const error = new Error(`upcaster ${u.index} (${u.action}, revision ${u.from} to ${u.to}) failed on event ${event.id} (action ${action}, revision ${event.revision}, position ${event.position}): ${why}`, { cause });
        error.code = "INVALID_PAYLOAD";
        throw error;
      }
      event.payload = payload;
      event.revision = u.to;
    }
  }
}
export function describe(v) {
  switch (typeof v) {
    case "string": return JSON.stringify(v);
    case "bigint": return `${v}n`;
    case "symbol": case "function": return String(v);
    case "object":
      if (v === null) return "null";
      try { const s = JSON.stringify(v); return s.length > 80 ? s.slice(0, 77) + "..." : s; }
      catch { return Object.prototype.toString.call(v); }
    default: return String(v);
  }
}
// The allowed names of each list unknownKey was given, as a Set (it runs
// for every entry and command of a push: building two strings per key
// took six times as long).
const ALLOWED = new Map();
export function unknownKey(v, allowed) {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "";
  let names = ALLOWED.get(allowed);
  if (names === undefined) ALLOWED.set(allowed, (names = new Set(allowed.split(","))));
  for (const key in v) {
    if (!names.has(key) && Object.prototype.hasOwnProperty.call(v, key)) return key;
  }
  return undefined;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = payloadJson, catch)]
    fn payload_json(value: &JsValue) -> std::result::Result<String, JsValue>;
    /// The argument of `push` as one JSON text (see [`GivenEntry`]), or
    /// `undefined` when some part of it is not of the usual shape.
    #[wasm_bindgen(js_name = pushJson, catch)]
    fn push_json(entries: &JsValue) -> std::result::Result<Option<String>, JsValue>;
    /// The state `upcastEvents` works on: the entries (`{ index, action,
    /// from, to, upcast }`), `chainOf(action)` (indices of the entries
    /// whose pattern matches) and a cache of chains per action.
    #[wasm_bindgen(js_name = makeUpcasters)]
    pub fn make_upcasters(entries: &Array, chain_of: &JsValue) -> JsValue;
    /// Upcasts the events in place; throws an `INVALID_PAYLOAD` error
    /// naming the event and the upcaster when one fails.
    #[wasm_bindgen(js_name = upcastEvents, catch)]
    pub fn upcast_events(events: &Array, state: &JsValue) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(js_name = describe)]
    pub fn describe_value(value: &JsValue) -> String;
    /// The first own enumerable property of `v` not in `allowed` (names
    /// separated by commas); `""` when `v` is not a plain object (or an
    /// array); `undefined` if none.
    #[wasm_bindgen(js_name = unknownKey)]
    fn unknown_key(v: &JsValue, allowed: &JsValue) -> Option<String>;
}

/// A core error as a JavaScript `Error` with `code` (and, for
/// `SEQUENCE_MISMATCH`, `aggregate`, `expected` and `actual`; for
/// `DATA_LOST`, `lastPosition`, `position` and `reason`).
pub fn js_error(e: Error) -> JsValue {
    let error = js_sys::Error::new(&e.to_string());
    let _ = Reflect::set(&error, &"code".into(), &e.code().into());
    if let Error::SequenceMismatch {
        aggregate,
        expected,
        actual,
    } = &e
    {
        let tokens: Array = aggregate.split('.').map(JsValue::from_str).collect();
        let _ = Reflect::set(&error, &"aggregate".into(), &tokens);
        let _ = Reflect::set(&error, &"expected".into(), &(*expected as f64).into());
        let _ = Reflect::set(&error, &"actual".into(), &(*actual as f64).into());
    }
    if let Error::DataLost {
        last_position,
        position,
        reason,
        ..
    } = &e
    {
        let _ = Reflect::set(
            &error,
            &"lastPosition".into(),
            &(*last_position as f64).into(),
        );
        let _ = Reflect::set(&error, &"position".into(), &(*position as f64).into());
        let _ = Reflect::set(&error, &"reason".into(), &(*reason).into());
    }
    error.into()
}

/// Where a value sits in an argument, for error messages. It is only
/// formatted when an error is reported: parsing a push of 10,000 commands
/// allocates no message.
#[derive(Clone, Copy)]
pub struct At<'a> {
    parent: Option<&'a At<'a>>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> At<'a> {
    /// A top-level argument or option, e.g. `limit`.
    pub const fn root(name: &'a str) -> Self {
        At {
            parent: None,
            name,
            index: None,
        }
    }

    /// The `index`-th element, e.g. `push entry 3` or `…, command 2`.
    fn item(parent: Option<&'a At<'a>>, name: &'a str, index: usize) -> Self {
        At {
            parent,
            name,
            index: Some(index),
        }
    }

    /// A property of this value, e.g. `…: action`.
    fn field(&'a self, name: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            name,
            index: None,
        }
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(parent) = self.parent {
            let nested_field =
                self.index.is_none() && parent.index.is_none() && parent.parent.is_some();
            let separator = match (self.index, nested_field) {
                (Some(_), _) => ", ",
                (None, true) => ".",
                (None, false) => ": ",
            };
            write!(f, "{parent}{separator}")?;
        }
        f.write_str(self.name)?;
        match self.index {
            Some(i) => write!(f, " {i}"),
            None => Ok(()),
        }
    }
}

/// A property of a plain object (after [`check_keys`]).
/// A property.
fn field(obj: &JsValue, name: &'static str) -> JsValue {
    Reflect::get(obj, &key(name)).unwrap_or(JsValue::UNDEFINED)
}

/// A property name as a JS string, made once per name: property names are
/// read for every command of a push. (wasm-bindgen's `enable-interning`
/// does this for every string, at 2 KiB of module size.)
pub fn key(name: &'static str) -> JsValue {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        match keys.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => v.clone(),
            None => {
                let v = JsValue::from_str(name);
                keys.push((name, v.clone()));
                v
            }
        }
    })
}

thread_local! {
    static KEYS: std::cell::RefCell<Vec<(&'static str, JsValue)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn absent(v: &JsValue) -> bool {
    v.is_undefined() || v.is_null()
}

/// Requires a plain object with only the `allowed` keys (names separated by
/// commas): a typo such as `expectedSeq` must not silently skip a check.
/// One call into JavaScript: this runs for every command of a push.
fn check_keys(v: &JsValue, what: At<'_>, allowed: &'static str) -> Result<()> {
    match unknown_key(v, &key(allowed)) {
        None => Ok(()),
        Some(name) if name.is_empty() => Err(Error::argument(format!(
            "{what} must be an object, got {}",
            describe_value(v)
        ))),
        Some(name) => Err(Error::argument(format!(
            "{what} has an unknown property {name:?} (allowed: {})",
            allowed.replace(',', ", ")
        ))),
    }
}

/// A subject or pattern as given: dotted, or as tokens.
enum Written {
    Dotted(String),
    Tokens(Vec<String>),
}

impl Written {
    fn subject(&self) -> Result<Subject> {
        match self {
            Written::Dotted(d) => Subject::parse(d),
            Written::Tokens(t) => Subject::from_tokens(t),
        }
    }
}

/// A string or an array of strings, in `pushJson`'s text (by hand:
/// `#[serde(untagged)]` would buffer each value, and cost the package
/// 3.4 KB gzipped).
impl<'de> serde::Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Written::Dotted(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut tokens = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    tokens.push(t);
                }
                Ok(Written::Tokens(tokens))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn written(v: &JsValue, what: At<'_>) -> Result<Written> {
    if let Some(dotted) = v.as_string() {
        return Ok(Written::Dotted(dotted));
    }
    if !Array::is_array(v) {
        return Err(Error::argument(format!(
            "{what} must be a string or an array of strings, got {}",
            describe_value(v)
        )));
    }
    Array::from(v)
        .iter()
        .map(|t| {
            t.as_string().ok_or_else(|| {
                Error::subject(
                    describe_value(v),
                    format!("token {} is not a string", describe_value(&t)),
                )
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Written::Tokens)
}

/// A subject given as `"a.b"` or `["a", "b"]`.
pub fn subject(v: &JsValue, what: At<'_>) -> Result<Subject> {
    written(v, what)?.subject().map_err(|e| located(e, what))
}

/// A pattern given as `"a.*"` or `["a", "*"]`.
pub fn pattern(v: &JsValue, what: At<'_>) -> Result<Pattern> {
    match written(v, what)? {
        Written::Dotted(d) => Pattern::parse(&d),
        Written::Tokens(t) => Pattern::from_tokens(&t),
    }
    .map_err(|e| located(e, what))
}

/// Says where a bad subject was given.
fn located(e: Error, what: At<'_>) -> Error {
    match e {
        Error::InvalidSubject { subject, reason } => Error::InvalidSubject {
            subject,
            reason: format!("{reason} (in {what})"),
        },
        e => e,
    }
}

/// A non-negative integer (`undefined`/`null` = absent).
fn uint(v: &JsValue, what: At<'_>) -> Result<Option<u64>> {
    if absent(v) {
        return Ok(None);
    }
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => {
            Ok(Some(n as u64))
        }
        _ => Err(Error::argument(format!(
            "{what} must be a non-negative integer, got {}",
            describe_value(v)
        ))),
    }
}

/// A push entry as `pushJson` writes it.
#[derive(serde::Deserialize)]
struct GivenEntry {
    a: Written,
    s: Option<u64>,
    c: Vec<GivenCommand>,
}

/// A command as `pushJson` writes it.
#[derive(serde::Deserialize)]
struct GivenCommand {
    a: Written,
    r: u16,
    p: Box<RawValue>,
}

/// The entries of a push of the usual shape, read from the one JSON text
/// of `pushJson`; `None` when anything in it is not valid (a subject
/// breaking the rules, a string JSON cannot carry into Rust): the
/// field-by-field path then says what and where.
fn given_entries(json: &str) -> Option<Vec<PushEntry>> {
    let given: Vec<GivenEntry> = serde_json::from_str(json).ok()?;
    given
        .into_iter()
        .map(|entry| {
            let commands = entry
                .c
                .into_iter()
                .map(|c| {
                    Some(Command {
                        action: c.a.subject().ok()?,
                        revision: c.r,
                        payload: c.p,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(PushEntry {
                aggregate: entry.a.subject().ok()?,
                expected_sequence: entry.s,
                commands,
            })
        })
        .collect()
}

/// The argument of `push`: at once from one JSON text when it has the
/// usual shape, else field by field (which names what is wrong).
pub fn push_entries(v: &JsValue) -> Result<Vec<PushEntry>> {
    if let Some(entries) = push_json(v).ok().flatten().and_then(|j| given_entries(&j)) {
        return Ok(entries);
    }
    if !Array::is_array(v) {
        return Err(Error::argument(format!(
            "push takes an array of entries, got {}",
            describe_value(v)
        )));
    }
    Array::from(v)
        .iter()
        .enumerate()
        .map(|(i, entry)| push_entry(&entry, At::item(None, "push entry", i)))
        .collect()
}

fn push_entry(v: &JsValue, what: At<'_>) -> Result<PushEntry> {
    check_keys(v, what, "aggregate,expectedSequence,commands")?;
    let aggregate = subject(&field(v, "aggregate"), what.field("aggregate"))?;
    let expected_sequence = uint(
        &field(v, "expectedSequence"),
        what.field("expectedSequence"),
    )?;
    let commands = field(v, "commands");
    if !Array::is_array(&commands) {
        return Err(Error::argument(format!(
            "{what} (aggregate {aggregate}): commands must be an array, got {}",
            describe_value(&commands)
        )));
    }
    let commands = Array::from(&commands)
        .iter()
        .enumerate()
        .map(|(j, c)| command(&c, At::item(Some(&what), "command", j)))
        .collect::<Result<Vec<_>>>()?;
    Ok(PushEntry {
        aggregate,
        expected_sequence,
        commands,
    })
}

fn command(v: &JsValue, what: At<'_>) -> Result<Command> {
    check_keys(v, what, "action,revision,payload")?;
    let action = subject(&field(v, "action"), what.field("action"))?;
    let revision = match uint(&field(v, "revision"), what.field("revision"))? {
        None => 1,
        Some(r) => u16::try_from(r)
            .map_err(|_| Error::argument(format!("{what}: revision must be 0..=65535, got {r}")))?,
    };
    let json = payload_json(&field(v, "payload")).map_err(|e| Error::InvalidPayload {
        at: format!("in {what} ({action})"),
        reason: js_sys::Error::from(e).message().into(),
    })?;
    let payload = RawValue::from_string(json).map_err(|e| Error::InvalidPayload {
        at: format!("in {what} ({action})"),
        reason: e.to_string(),
    })?;
    Ok(Command {
        action,
        revision,
        payload,
    })
}

/// The argument of `filter` and `forget` (`undefined` = every event).
pub fn filter(v: &JsValue) -> Result<Filter> {
    if absent(v) {
        return Ok(Filter::default());
    }
    check_keys(v, At::root("the filter"), "queries,limit,reverse")?;
    let limit = uint(&field(v, "limit"), At::root("limit"))?.map(|n| n as usize);
    let reverse = field(v, "reverse");
    let reverse = match reverse.as_bool() {
        Some(b) => b,
        None if absent(&reverse) => false,
        None => {
            return Err(Error::argument(format!(
                "reverse must be a boolean, got {}",
                describe_value(&reverse)
            )))
        }
    };
    let queries = field(v, "queries");
    let queries = if absent(&queries) {
        Vec::new()
    } else if Array::is_array(&queries) {
        Array::from(&queries)
            .iter()
            .enumerate()
            .map(|(i, q)| query(&q, At::item(None, "query", i)))
            .collect::<Result<Vec<_>>>()?
    } else {
        return Err(Error::argument(format!(
            "queries must be an array, got {}",
            describe_value(&queries)
        )));
    };
    Ok(Filter {
        queries,
        limit,
        reverse,
    })
}

fn query(v: &JsValue, what: At<'_>) -> Result<Query> {
    check_keys(v, what, "subjects,aggregate,sequence,createdAt,position")?;
    let optional_pattern = |key: &'static str| {
        let p = field(v, key);
        if absent(&p) {
            Ok(None)
        } else {
            pattern(&p, what.field(key)).map(Some)
        }
    };
    let int_range = |key: &'static str| {
        let range = field(v, key);
        if absent(&range) {
            return Ok(Range::default());
        }
        let at = what.field(key);
        check_keys(&range, at, "from,to")?;
        Ok::<_, Error>(Range {
            from: uint(&field(&range, "from"), at.field("from"))?,
            to: uint(&field(&range, "to"), at.field("to"))?,
        })
    };
    let sequence = int_range("sequence")?;
    let position = int_range("position")?;
    let created = field(v, "createdAt");
    let created_at = if absent(&created) {
        Range::default()
    } else {
        check_keys(&created, what.field("createdAt"), "from,to")?;
        let bound = |key: &'static str| {
            let b = field(&created, key);
            if absent(&b) {
                return Ok(None);
            }
            match b.as_f64() {
                Some(n) if n.is_finite() => Ok(Some(n)),
                _ => Err(Error::argument(format!(
                    "{what}: createdAt.{key} must be a finite number of ms, got {}",
                    describe_value(&b)
                ))),
            }
        };
        Range {
            from: bound("from")?,
            to: bound("to")?,
        }
    };
    Ok(Query {
        subjects: optional_pattern("subjects")?,
        aggregate: optional_pattern("aggregate")?,
        sequence,
        created_at,
        position,
    })
}

/// A function argument.
pub fn function(v: &JsValue, what: At<'_>) -> Result<js_sys::Function> {
    v.dyn_ref::<js_sys::Function>().cloned().ok_or_else(|| {
        Error::argument(format!(
            "{what} must be a function, got {}",
            describe_value(v)
        ))
    })
}

/// The options of `subscribe`.
pub struct SubscribeOptions {
    pub start: crate::web::live::Start,
    pub on_forget: Option<js_sys::Function>,
    pub on_withdraw: Option<js_sys::Function>,
    pub on_error: Option<js_sys::Function>,
}

/// Reads `{ fromPosition?, onForget?, onWithdraw?, onError? }`.
pub fn subscribe_options(v: &JsValue) -> Result<SubscribeOptions> {
    use crate::web::live::Start;
    let mut options = SubscribeOptions {
        start: Start::After(0),
        on_forget: None,
        on_withdraw: None,
        on_error: None,
    };
    if absent(v) {
        return Ok(options);
    }
    check_keys(
        v,
        At::root("the subscribe options"),
        "fromPosition,onForget,onWithdraw,onError",
    )?;
    let from = field(v, "fromPosition");
    if from.as_string().as_deref() == Some("end") {
        options.start = Start::End;
    } else if let Some(p) = uint(&from, At::root("fromPosition (a position or \"end\")"))? {
        options.start = Start::After(p);
    }
    for (key, slot) in [
        ("onForget", &mut options.on_forget),
        ("onWithdraw", &mut options.on_withdraw),
        ("onError", &mut options.on_error),
    ] {
        let f = field(v, key);
        if !absent(&f) {
            *slot = Some(function(&f, At::root(key))?);
        }
    }
    Ok(options)
}

/// The options of `EventStore.open`.
#[derive(Default)]
pub struct OpenOptions {
    pub upcasters: Vec<Upcaster>,
    /// Told when events this origin had written are gone (see `DATA_LOST`).
    pub on_data_lost: Option<js_sys::Function>,
    /// `encryption: true`: payloads encrypted at rest (docs/privacy.md).
    pub encryption: bool,
}

/// One entry of `upcasters`: turns payloads of `action` at revision
/// `from` into revision `to`.
pub struct Upcaster {
    pub action: Pattern,
    /// Revisions, 0..=65535.
    pub from: u64,
    pub to: u64,
    pub upcast: js_sys::Function,
}

/// Reads `{ upcasters?, onDataLost?, encryption? }` (`undefined` = no options).
pub fn open_options(v: &JsValue) -> Result<OpenOptions> {
    let mut options = OpenOptions::default();
    if absent(v) {
        return Ok(options);
    }
    check_keys(
        v,
        At::root("the open options"),
        "upcasters,onDataLost,encryption",
    )?;
    let encryption = field(v, "encryption");
    match encryption.as_bool() {
        Some(on) => options.encryption = on,
        None if absent(&encryption) => {}
        None => {
            return Err(Error::argument(format!(
                "encryption must be true or false, got {}",
                describe_value(&encryption)
            )))
        }
    }
    let f = field(v, "onDataLost");
    if !absent(&f) {
        options.on_data_lost = Some(function(&f, At::root("onDataLost"))?);
    }
    let list = field(v, "upcasters");
    if absent(&list) {
        return Ok(options);
    }
    if !Array::is_array(&list) {
        return Err(Error::argument(format!(
            "upcasters must be an array, got {}",
            describe_value(&list)
        )));
    }
    for (i, entry) in Array::from(&list).iter().enumerate() {
        let what = At::item(None, "upcaster", i);
        check_keys(&entry, what, "action,from,to,upcast")?;
        let action = pattern(&field(&entry, "action"), what.field("action"))?;
        let revision = |key: &'static str| -> Result<u64> {
            let value = field(&entry, key);
            uint(&value, what.field(key))
                .ok()
                .flatten()
                .filter(|r| *r <= u64::from(crate::push::MAX_REVISION))
                .ok_or_else(|| {
                    Error::argument(format!(
                        "{}: a revision (0..=65535) is required, got {}",
                        what.field(key),
                        describe_value(&value)
                    ))
                })
        };
        let (from, to) = (revision("from")?, revision("to")?);
        if to <= from {
            return Err(Error::argument(format!(
                "{what} ({action}): to ({to}) must be greater than from ({from})"
            )));
        }
        let upcast = function(&field(&entry, "upcast"), what.field("upcast"))?;
        if let Some(j) = options
            .upcasters
            .iter()
            .position(|u| u.action == action && u.from == from)
        {
            return Err(Error::argument(format!(
                "{what} and upcaster {j} both upcast {action} from revision {from}"
            )));
        }
        options.upcasters.push(Upcaster {
            action,
            from,
            to,
            upcast,
        });
    }
    Ok(options)
}

/// The argument of `get`: an event id.
pub fn event_id(v: &JsValue) -> Result<String> {
    v.as_string().ok_or_else(|| {
        Error::argument(format!(
            "get takes an event id (a string), got {}",
            describe_value(v)
        ))
    })
}

/// What `onDataLost` receives: `{ name, lastPosition, position, reason }`.
pub fn data_lost_info(name: &str, last_position: u64, position: u64, reason: &str) -> JsValue {
    let info = js_sys::Object::new();
    let _ = Reflect::set(&info, &"name".into(), &name.into());
    let _ = Reflect::set(
        &info,
        &"lastPosition".into(),
        &(last_position as f64).into(),
    );
    let _ = Reflect::set(&info, &"position".into(), &(position as f64).into());
    let _ = Reflect::set(&info, &"reason".into(), &reason.into());
    info.into()
}

/// Whether a public event object (as `filter` returns them) matches `filter`.
pub fn event_matches(filter: &Filter, event: &JsValue) -> bool {
    let dotted = |key: &'static str| String::from(Array::from(&field(event, key)).join("."));
    let number = |key: &'static str| field(event, key).as_f64().unwrap_or(0.0);
    filter.matches_fields(&crate::filter::Fields {
        aggregate: &dotted("aggregate"),
        action: &dotted("action"),
        sequence: number("sequence") as u64,
        position: number("position") as u64,
        created_at: number("createdAt"),
    })
}

/// Fills a buffer with random bytes from the platform's CSPRNG (window or worker).
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let crypto: web_sys::Crypto = Reflect::get(&js_sys::global(), &"crypto".into())
        .ok()
        .and_then(|c| c.dyn_into().ok())
        .ok_or_else(|| Error::Storage("crypto.getRandomValues is not available".into()))?;
    // getRandomValues takes at most 65536 bytes a call.
    for chunk in buf.chunks_mut(65536) {
        crypto
            .get_random_values_with_u8_array(chunk)
            .map_err(|e| Error::Storage(describe_value(&e)))?;
    }
    Ok(())
}

/// A random UUIDv7 of now (for ids the store makes outside a push, such as
/// a forget's idempotency id); a fixed one if no randomness is available.
pub fn random_uuid() -> String {
    let mut bytes = [0u8; 10];
    let _ = random_bytes(&mut bytes);
    uuid::Builder::from_unix_timestamp_millis(js_sys::Date::now() as u64, &bytes)
        .into_uuid()
        .to_string()
}
