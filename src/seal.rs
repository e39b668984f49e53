//! Encryption at rest (docs/privacy.md, "Encryption at rest"): the sealed
//! form of a batch's events text and the keyring that seals and unseals it.
//!
//! In an encrypted store every event of a record's `events` text that has a
//! payload carries `"sealed":"<slot>:<base64 of nonce ‖ ciphertext ‖ tag>"`
//! instead of `"payload"`: the payload's JSON text sealed by the store's
//! AEAD ([`Suite`]: ChaCha20-Poly1305 since format 2, AES-256-GCM in stores
//! of format 1) under the key of vault slot `<slot>`, with a 96-bit random
//! nonce and the event id (UTF-8) as additional data, so that a sealed
//! payload moved to another event does not open. Ids, actions, revisions,
//! sequences, positions and times stay in the clear. A forgotten event has
//! neither field.
//!
//! The core does the transform; the keys come from the key vault
//! (`js/vault.js`) and the nonces from the caller (`crypto.getRandomValues`
//! in the browser), so this module stays pure and testable natively.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use chacha20poly1305::ChaCha20Poly1305;
use serde_json::value::RawValue;

use crate::batch::{Opened, StoredEvent};
use crate::error::{Error, Result};

/// Nonce bytes per seal (96 bits, both suites).
pub const NONCE: usize = 12;
/// Key bytes (256 bits, both suites).
pub const KEY: usize = 32;
/// Tag bytes at the end of a sealed value (128 bits, both suites).
const TAG: usize = 16;

/// The AEAD a store seals its payloads with, named by the `format` of its
/// `"encryption"` entry in the `sync` object store (docs/privacy.md). A
/// store keeps the suite it was created with; the sealed form is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suite {
    /// Format 1, stores created before format 2: AES-256-GCM.
    Aes256Gcm,
    /// Format 2, what a new store gets: ChaCha20-Poly1305 (RFC 8439), about
    /// six times as fast as AES-256-GCM in wasm, where AES and GHASH run
    /// in constant-time software on 32-bit words.
    #[default]
    ChaCha20Poly1305,
}

impl Suite {
    /// The `format` number of the flag.
    pub fn format(self) -> u64 {
        match self {
            Suite::Aes256Gcm => 1,
            Suite::ChaCha20Poly1305 => 2,
        }
    }

    /// The text of the `"encryption"` entry of a store sealed with it.
    pub fn flag(self) -> String {
        format!(r#"{{"format":{},"vault":"opfs"}}"#, self.format())
    }

    /// The suite the `"encryption"` entry `flag` of store `name` names: a
    /// format this library does not know is `VERSION_MISMATCH` (a newer
    /// release wrote it), an entry that is not such a flag `STORAGE`.
    pub fn of_flag(name: &str, flag: &str) -> Result<Suite> {
        #[derive(serde::Deserialize)]
        struct Flag {
            format: u64,
        }
        let format = serde_json::from_str::<Flag>(flag)
            .map_err(|e| {
                Error::Storage(format!(
                    "store {name:?}: corrupt encryption entry {flag:?}: {e}"
                ))
            })?
            .format;
        [Suite::Aes256Gcm, Suite::ChaCha20Poly1305]
            .into_iter()
            .find(|s| s.format() == format)
            .ok_or_else(|| Error::VersionMismatch {
                name: name.to_owned(),
                found: format!("encryption format {format}"),
                supported: format!("encryption format {}", Suite::default().format()),
            })
    }
}

/// One slot's key, expanded for its suite.
enum Cipher {
    Aes(Box<Aes256Gcm>),
    ChaCha(ChaCha20Poly1305),
}

impl Cipher {
    fn new(suite: Suite, key: &[u8; KEY]) -> Self {
        match suite {
            Suite::Aes256Gcm => Cipher::Aes(Box::new(Aes256Gcm::new(key.into()))),
            Suite::ChaCha20Poly1305 => Cipher::ChaCha(ChaCha20Poly1305::new(key.into())),
        }
    }

    /// Encrypts `buf` in place; the tag.
    fn seal(&self, nonce: &[u8; NONCE], aad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG]> {
        let tag = match self {
            Cipher::Aes(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::ChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        tag.ok().map(Into::into)
    }

    /// Decrypts `buf` (ciphertext ‖ tag) in place, leaving the plaintext;
    /// `None` when it does not open.
    fn open(&self, nonce: &[u8; NONCE], aad: &[u8], buf: &mut Vec<u8>) -> Option<()> {
        let opened = match self {
            Cipher::Aes(c) => c.decrypt_in_place(nonce.into(), aad, buf),
            Cipher::ChaCha(c) => c.decrypt_in_place(nonce.into(), aad, buf),
        };
        opened.ok()
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What a seal or unseal lacked: filled by the keyring, fetched from the
/// vault by the caller before it tries again (see [`Keyring::take_wanted`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Slots met while unsealing that the keyring does not know.
    pub slots: BTreeSet<u32>,
    /// Aggregates written whose live slot the keyring does not know.
    pub aggregates: BTreeSet<String>,
}

impl Wanted {
    /// Whether nothing is wanted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.aggregates.is_empty()
    }
}

/// The SHA-256 of an aggregate's name, by which the key vault knows it.
pub type NameHash = [u8; 32];

/// The SHA-256 of `aggregate`'s UTF-8 (the vault's name for it).
pub fn name_hash(aggregate: &str) -> NameHash {
    use sha2::Digest as _;
    sha2::Sha256::digest(aggregate.as_bytes()).into()
}

/// The keys one connection knows: slot → cipher (key expansion done once;
/// `None` for a destroyed slot), aggregate → its live slot, and the live
/// slots of the vault by their aggregate's name hash (as last loaded).
#[derive(Default)]
pub struct Keyring {
    suite: Suite,
    ciphers: HashMap<u32, Option<Cipher>>,
    live: HashMap<String, u32>,
    hashes: HashMap<NameHash, u32>,
    wanted: RefCell<Wanted>,
}

impl Keyring {
    /// An empty keyring sealing and opening with `suite`.
    pub fn with_suite(suite: Suite) -> Self {
        Keyring {
            suite,
            ..Self::default()
        }
    }

    /// Learns slot `slot`'s key (a destroyed slot: [`Keyring::destroyed`]).
    pub fn insert(&mut self, slot: u32, key: &[u8]) -> Result<()> {
        let key: &[u8; KEY] = key.try_into().map_err(|_| {
            Error::Storage(format!(
                "encryption: the key of slot {slot} has {} bytes, not {KEY}",
                key.len()
            ))
        })?;
        // A destroyed slot stays destroyed (an answer that overtook its destroy).
        if !matches!(self.ciphers.get(&slot), Some(None)) {
            self.ciphers
                .insert(slot, Some(Cipher::new(self.suite, key)));
        }
        Ok(())
    }

    /// Whether slot `slot`'s key is known (not destroyed).
    pub fn opens(&self, slot: u32) -> bool {
        matches!(self.ciphers.get(&slot), Some(Some(_)))
    }

    /// Learns that `aggregate` seals under `slot` (whose key must be inserted too).
    pub fn set_live(&mut self, aggregate: &str, slot: u32) {
        self.set_live_hashed(aggregate, name_hash(aggregate), slot);
    }

    /// [`Keyring::set_live`] with the name's hash already computed.
    pub fn set_live_hashed(&mut self, aggregate: &str, hash: NameHash, slot: u32) {
        self.live.insert(aggregate.to_owned(), slot);
        self.hashes.insert(hash, slot);
    }

    /// Learns that the vault's live slot of the aggregate whose name hashes
    /// to `hash` is `slot` (from a load of every slot).
    pub fn set_live_hash(&mut self, hash: NameHash, slot: u32) {
        self.hashes.insert(hash, slot);
    }

    /// The slot `aggregate` seals under: its live slot, else the vault's
    /// live slot of its name as last loaded (so that a write after a reload
    /// needs no try more to learn it), if its key is known.
    pub fn sealing_slot(&self, aggregate: &str) -> Option<u32> {
        self.live(aggregate).or_else(|| {
            self.hashes
                .get(&name_hash(aggregate))
                .copied()
                .filter(|s| self.opens(*s))
        })
    }

    /// Makes `aggregate`'s live slot known from the vault's live slots as
    /// last loaded, if one is there (and its key known); whether it is known now.
    pub fn resolve(&mut self, aggregate: &str) -> bool {
        if self.live.contains_key(aggregate) {
            return true;
        }
        let found = self
            .hashes
            .get(&name_hash(aggregate))
            .copied()
            .filter(|s| self.opens(*s));
        match found {
            Some(slot) => {
                self.live.insert(aggregate.to_owned(), slot);
                true
            }
            None => false,
        }
    }

    /// The live slot of `aggregate`, if known.
    pub fn live(&self, aggregate: &str) -> Option<u32> {
        self.live.get(aggregate).copied()
    }

    /// Whether slot `slot` is known (live, retired or destroyed).
    pub fn knows(&self, slot: u32) -> bool {
        self.ciphers.contains_key(&slot)
    }

    /// Slot `slot` was destroyed (here or elsewhere): its cipher is dropped.
    pub fn destroyed(&mut self, slot: u32) {
        self.retired(slot);
        self.ciphers.insert(slot, None);
    }

    /// Forgets which slot each aggregate seals under (another tab rotated
    /// keys: they are loaded from the vault again); keys stay known.
    pub fn forget_live(&mut self) {
        self.live.clear();
        self.hashes.clear();
    }

    /// Slot `slot` was retired (rotated): it still opens, but no longer seals.
    pub fn retired(&mut self, slot: u32) {
        self.live.retain(|_, s| *s != slot);
        self.hashes.retain(|_, s| *s != slot);
    }

    /// What seals and unseals lacked since the last call, cleared.
    pub fn take_wanted(&self) -> Wanted {
        self.wanted.take()
    }

    /// Whether a seal or unseal lacked a key since [`Keyring::take_wanted`].
    pub fn wants(&self) -> bool {
        !self.wanted.borrow().is_empty()
    }

    /// The events text `text` of a batch of `aggregate` with every
    /// payload sealed under the aggregate's live slot; `nonce` gives 12
    /// fresh random bytes per call. An event already sealed is carried
    /// as it is.
    pub fn seal(
        &self,
        aggregate: &str,
        text: &str,
        nonce: &mut dyn FnMut() -> Result<[u8; NONCE]>,
    ) -> Result<String> {
        let mut events: Vec<StoredEvent<'_>> = serde_json::from_str(text)
            .map_err(|e| Error::Storage(format!("encryption: cannot read events: {e}")))?;
        if events.iter().all(|e| e.payload.is_none()) {
            return Ok(text.to_owned());
        }
        let Some((slot, cipher)) = self.sealing_slot(aggregate).and_then(|s| {
            self.ciphers
                .get(&s)
                .and_then(Option::as_ref)
                .map(|c| (s, c))
        }) else {
            self.wanted
                .borrow_mut()
                .aggregates
                .insert(aggregate.to_owned());
            return Err(Error::Storage(format!(
                "encryption: the key of aggregate {aggregate:?} is not in this connection's keyring"
            )));
        };
        // The text is compact JSON as the core writes it: each payload's
        // `"payload":<value>` is replaced by `"sealed":"<slot>:<base64>"`
        // in a copy of the text (no re-encoding of the events). Text laid
        // out otherwise is encoded again instead.
        const KEY_TEXT: &str = "\"payload\":";
        let base = text.as_ptr() as usize;
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        let mut copied = 0;
        let mut buf = Vec::new();
        let mut spliced = true;
        for e in &events {
            let Some(payload) = e.payload else { continue };
            let raw = payload.get();
            let start = (raw.as_ptr() as usize).wrapping_sub(base);
            let key_at = start.wrapping_sub(KEY_TEXT.len());
            if start > text.len() || key_at > start || text.get(key_at..start) != Some(KEY_TEXT) {
                spliced = false;
                break;
            }
            out.push_str(&text[copied..key_at]);
            out.push_str("\"sealed\":\"");
            seal_one(cipher, slot, &e.id, raw, nonce()?, &mut buf, &mut out)?;
            out.push('"');
            copied = start + raw.len();
        }
        if spliced {
            out.push_str(&text[copied..]);
            return Ok(out);
        }
        for e in &mut events {
            let Some(payload) = e.payload.take() else {
                continue;
            };
            let mut sealed = String::new();
            seal_one(
                cipher,
                slot,
                &e.id,
                payload.get(),
                nonce()?,
                &mut buf,
                &mut sealed,
            )?;
            e.sealed = Some(Cow::Owned(sealed));
        }
        serde_json::to_string(&events)
            .map_err(|e| Error::Storage(format!("encryption: cannot write events: {e}")))
    }

    /// The events text `text` with every sealed payload opened. An event
    /// whose slot was destroyed reads as forgotten (its key is gone: that
    /// is what a forget does). A wrong key, a sealed payload moved to
    /// another event or a damaged byte is a `STORAGE` error; a slot this
    /// keyring does not know is one too, and is remembered as wanted.
    pub fn unseal(&self, text: &str) -> Result<String> {
        if !text.contains("\"sealed\"") {
            return Ok(text.to_owned());
        }
        // Text this module sealed holds no payload in the clear, so its
        // only strings are ids, actions and sealed values: unless one of
        // them has an escape, the sealed values are opened in place,
        // without decoding the events.
        if !text.contains("\"payload\"") && !text.contains('\\') {
            return self.unseal_in_place(text);
        }
        let events: Vec<StoredEvent<'_>> = serde_json::from_str(text)
            .map_err(|e| Error::Storage(format!("encryption: cannot read events: {e}")))?;
        let mut opened = Vec::with_capacity(events.len());
        let mut missing = false;
        for e in &events {
            opened.push(match e.sealed.as_deref() {
                None => Opened::Clear,
                // Every unknown slot of the text is wanted, not only the first.
                Some(sealed) => match self.open_one(&e.id, sealed)? {
                    Opening::Missing => {
                        missing = true;
                        Opened::Clear
                    }
                    found => found.into_opened()?,
                },
            });
        }
        if missing {
            return Err(Error::Storage(MISSING.into()));
        }
        let out: Vec<_> = events
            .iter()
            .zip(&opened)
            .map(|(e, o)| o.apply(e))
            .collect();
        serde_json::to_string(&out)
            .map_err(|e| Error::Storage(format!("encryption: cannot write events: {e}")))
    }
}

/// Appends `<slot>:<base64 of nonce ‖ ciphertext ‖ tag>` of `payload`
/// (JSON text) sealed for event `id` to `out`; `buf` is scratch space.
fn seal_one(
    cipher: &Cipher,
    slot: u32,
    id: &str,
    payload: &str,
    nonce: [u8; NONCE],
    buf: &mut Vec<u8>,
    out: &mut String,
) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(payload.as_bytes());
    let tag = cipher
        .seal(&nonce, id.as_bytes(), &mut buf[NONCE..])
        .ok_or_else(|| Error::Storage("encryption: sealing failed".into()))?;
    buf.extend_from_slice(&tag);
    use std::fmt::Write as _;
    let _ = write!(out, "{slot}:");
    B64.encode_string(&*buf, out);
    Ok(())
}

/// The `"shred"` entry (a JSON array of aggregates whose keys a forget left
/// to shred) with `more` added.
pub fn shred_list<'a>(
    before: Option<&str>,
    more: impl IntoIterator<Item = &'a String>,
) -> Result<String> {
    let mut list: BTreeSet<String> = match before {
        Some(t) => serde_json::from_str(t)
            .map_err(|e| Error::Storage(format!("encryption: corrupt shred entry: {e}")))?,
        None => BTreeSet::new(),
    };
    list.extend(more.into_iter().cloned());
    serde_json::to_string(&list).map_err(|e| Error::Storage(format!("encryption: {e}")))
}

/// The pairs of a `binds:<token>` entry of the `sync` object store:
/// `[[aggregate, slot], ...]`, reserved slots a connection sealed stored
/// payloads under before the vault confirmed their binds.
pub fn binds_entry(text: &str) -> Result<Vec<(String, u32)>> {
    serde_json::from_str(text)
        .map_err(|e| Error::Storage(format!("encryption: corrupt binds entry: {e}")))
}

/// The aggregates of a `"shred"` entry.
pub fn shred_entry(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| Error::Storage(format!("encryption: corrupt shred entry: {e}")))
}

/// What opening one sealed value gave.
enum Opening {
    /// The payload's plaintext (JSON text).
    Plain(Vec<u8>),
    /// Its slot was destroyed: the event reads as forgotten.
    Destroyed,
    /// Its slot is not in the keyring (remembered as wanted).
    Missing,
}

impl Opening {
    /// The event's payload as read (`STORAGE` for a missing key).
    fn into_opened(self) -> Result<Opened> {
        match self {
            Opening::Plain(plain) => {
                let text = String::from_utf8(plain).map_err(|_| {
                    Error::Storage("encryption: a decrypted payload is not UTF-8".into())
                })?;
                RawValue::from_string(text)
                    .map(Opened::Payload)
                    .map_err(|_| {
                        Error::Storage("encryption: a decrypted payload is not JSON".into())
                    })
            }
            Opening::Destroyed => Ok(Opened::Forgotten),
            Opening::Missing => Err(Error::Storage(MISSING.into())),
        }
    }
}

/// Why an unseal failed for want of a key (fetched, then read again).
const MISSING: &str = "encryption: a key slot of this record is not in this connection's keyring";

impl Keyring {
    /// The payload of `event`, decoded from sealed text, opened: its
    /// plaintext, [`Opened::Forgotten`] when its slot was destroyed,
    /// [`Opened::Clear`] when it was not sealed. Errors as [`Keyring::unseal`].
    pub fn open(&self, event: &StoredEvent<'_>) -> Result<Opened> {
        let Some(sealed) = event.sealed.as_deref() else {
            return Ok(Opened::Clear);
        };
        self.open_one(&event.id, sealed)?.into_opened()
    }

    /// Opens the sealed value `sealed` (`<slot>:<base64>`) of event `id`.
    fn open_one(&self, id: &str, sealed: &str) -> Result<Opening> {
        let damaged = || {
            Error::Storage(format!(
                "encryption: the payload of event {id} cannot be decrypted (a wrong key or a damaged record)"
            ))
        };
        let (slot, body) = sealed.split_once(':').ok_or_else(damaged)?;
        let slot: u32 = slot.parse().map_err(|_| damaged())?;
        let cipher = match self.ciphers.get(&slot) {
            Some(Some(c)) => c,
            Some(None) => return Ok(Opening::Destroyed),
            None => {
                self.wanted.borrow_mut().slots.insert(slot);
                return Ok(Opening::Missing);
            }
        };
        let mut bytes = B64.decode(body).map_err(|_| damaged())?;
        if bytes.len() < NONCE + TAG {
            return Err(damaged());
        }
        let mut nonce = [0; NONCE];
        nonce.copy_from_slice(&bytes[..NONCE]);
        bytes.drain(..NONCE);
        cipher
            .open(&nonce, id.as_bytes(), &mut bytes)
            .ok_or_else(damaged)?;
        Ok(Opening::Plain(bytes))
    }

    /// [`Keyring::unseal`] of a text holding no clear payload and no
    /// escape: each `"sealed":"…"` is replaced by `"payload":<plaintext>`
    /// (or `"forgotten":true`), its event's id being the last `"id":"…"`
    /// before it.
    fn unseal_in_place(&self, text: &str) -> Result<String> {
        const SEALED: &str = "\"sealed\":\"";
        const ID: &str = "\"id\":\"";
        let corrupt = || Error::Storage("encryption: corrupt sealed events".into());
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut id: &str = "";
        let mut missing = false;
        while let Some(at) = rest.find(SEALED) {
            let before = &rest[..at];
            if let Some(i) = before.rfind(ID) {
                let start = i + ID.len();
                let end = before[start..].find('"').ok_or_else(corrupt)? + start;
                id = &before[start..end];
            }
            if id.is_empty() {
                return Err(corrupt());
            }
            out.push_str(before);
            let value = &rest[at + SEALED.len()..];
            let end = value.find('"').ok_or_else(corrupt)?;
            match self.open_one(id, &value[..end])? {
                Opening::Plain(plain) => {
                    out.push_str("\"payload\":");
                    out.push_str(std::str::from_utf8(&plain).map_err(|_| corrupt())?);
                }
                Opening::Destroyed => out.push_str("\"forgotten\":true"),
                // Every unknown slot of the text is wanted, not only the first.
                Opening::Missing => missing = true,
            }
            rest = &value[end + 1..];
        }
        if missing {
            return Err(Error::Storage(MISSING.into()));
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> Result<[u8; NONCE]> {
        let mut n = 0u8;
        move || {
            n = n.wrapping_add(1);
            Ok([n; NONCE])
        }
    }

    fn ring(key: u8) -> Keyring {
        let mut r = Keyring::default();
        r.insert(3, &[key; KEY]).expect("key");
        r.set_live("user.A", 3);
        r
    }

    const TEXT: &str = r#"[{"id":"e1","action":"user.A.added","revision":1,"payload":{"name":"SECRET"}},{"id":"e2","action":"user.A.renamed","revision":2,"forgotten":true,"remote":4},{"id":"e3","action":"x","revision":1,"payload":"SECRET2","remote":9}]"#;

    #[test]
    fn live_slots_are_found_by_the_hash_of_the_name_until_retired_or_destroyed() {
        // The SHA-256 the vault keeps, as js/vault.js computes it (WebCrypto).
        let hash = name_hash("user.A");
        assert_eq!(hash[..4], [0x77, 0x90, 0x42, 0xff], "{hash:02x?}");
        let mut r = Keyring::default();
        r.insert(3, &[1; KEY]).expect("key");
        r.set_live_hash(name_hash("user.A"), 3);
        // user.B's key is unknown: its hash is not used.
        r.set_live_hash(name_hash("user.B"), 4);
        // A seal after a reload finds the live slot by the name's hash.
        assert_eq!(r.sealing_slot("user.A"), Some(3));
        assert!(r.seal("user.A", TEXT, &mut counter()).is_ok());
        assert_eq!(r.sealing_slot("user.B"), None);
        assert!(r.resolve("user.A"));
        assert_eq!(r.live("user.A"), Some(3));
        assert!(!r.resolve("user.B"));
        assert!(!r.resolve("user.C"));
        r.retired(3);
        assert_eq!(r.live("user.A"), None);
        assert!(!r.resolve("user.A"), "a retired slot is not found again");
        r.set_live("user.A", 3);
        r.destroyed(3);
        assert!(!r.resolve("user.A"), "nor a destroyed one");
        r.insert(3, &[1; KEY]).expect("key");
        assert!(
            !r.opens(3),
            "a destroyed slot stays destroyed (an answer that overtook its destroy)"
        );
        r.insert(5, &[2; KEY]).expect("key");
        r.set_live("user.D", 5);
        r.forget_live();
        assert!(!r.resolve("user.D"), "forget_live forgets the hashes too");
    }

    #[test]
    fn opens_the_events_picked_one_by_one() {
        let r = ring(1);
        let sealed = r.seal("user.A", TEXT, &mut counter()).expect("seal");
        let events: Vec<StoredEvent<'_>> = serde_json::from_str(&sealed).expect("decode");
        let opened: Vec<String> = events
            .iter()
            .map(|e| {
                let o = r.open(e).expect("open");
                serde_json::to_string(&*o.apply(e)).expect("encode")
            })
            .collect();
        let plain: Vec<StoredEvent<'_>> = serde_json::from_str(TEXT).expect("decode");
        let want: Vec<String> = plain
            .iter()
            .map(|e| serde_json::to_string(e).expect("encode"))
            .collect();
        assert_eq!(opened, want);
        assert!(matches!(r.open(&plain[0]), Ok(Opened::Clear)));
        // A destroyed slot reads as forgotten; an unknown one is wanted.
        let mut gone = ring(1);
        gone.destroyed(3);
        let o = gone.open(&events[0]).expect("open");
        assert!(o.apply(&events[0]).forgotten && o.apply(&events[0]).payload.is_none());
        let empty = Keyring::default();
        assert!(empty.open(&events[0]).is_err());
        assert_eq!(empty.take_wanted().slots, BTreeSet::from([3]));
        // A wrong key or a sealed value moved to another event does not open.
        assert!(ring(2).open(&events[0]).is_err());
        let mut moved = events[0].clone();
        moved.id = "e3".into();
        assert!(r.open(&moved).is_err());
    }

    #[test]
    fn seals_payloads_only_and_opens_them_again() {
        let r = ring(1);
        let sealed = r.seal("user.A", TEXT, &mut counter()).expect("seal");
        assert!(!sealed.contains("SECRET"), "{sealed}");
        assert!(sealed.contains(r#""id":"e1""#) && sealed.contains(r#""sealed":"3:"#));
        assert!(sealed.contains(r#""remote":9"#));
        assert_eq!(r.unseal(&sealed).expect("unseal"), TEXT);
        // Text not laid out as the core writes it is encoded again: the
        // same events come back.
        let spaced = TEXT.replace(r#""payload":"#, r#""payload": "#);
        let resealed = r.seal("user.A", &spaced, &mut counter()).expect("seal");
        assert!(
            !resealed.contains("SECRET") && resealed.contains(r#""sealed":"3:"#),
            "{resealed}"
        );
        assert_eq!(r.unseal(&resealed).expect("unseal"), TEXT);
    }

    #[test]
    fn a_wrong_key_a_swapped_id_or_a_flipped_byte_is_a_storage_error() {
        let sealed = ring(1).seal("user.A", TEXT, &mut counter()).expect("seal");
        let wrong = ring(2).unseal(&sealed).expect_err("wrong key");
        assert!(
            matches!(&wrong, Error::Storage(m) if m.contains("event e1")),
            "{wrong}"
        );
        let swapped = sealed.replace(r#""id":"e1""#, r#""id":"e9""#);
        assert!(matches!(ring(1).unseal(&swapped), Err(Error::Storage(_))));
        let at = sealed.find("3:").expect("sealed") + 10;
        let mut flipped = sealed.clone().into_bytes();
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("utf8");
        assert!(matches!(ring(1).unseal(&flipped), Err(Error::Storage(_))));
    }

    #[test]
    fn unknown_keys_are_wanted_and_destroyed_slots_read_as_forgotten() {
        let empty = Keyring::default();
        assert!(empty.seal("user.A", TEXT, &mut counter()).is_err());
        let sealed = ring(1).seal("user.A", TEXT, &mut counter()).expect("seal");
        assert!(empty.unseal(&sealed).is_err());
        let wanted = empty.take_wanted();
        assert_eq!(wanted.slots.into_iter().collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            wanted.aggregates.into_iter().collect::<Vec<_>>(),
            vec!["user.A"]
        );
        assert!(!empty.wants());
        let mut r = ring(1);
        r.destroyed(3);
        assert_eq!(r.live("user.A"), None);
        let read = r.unseal(&sealed).expect("unseal");
        assert!(
            !read.contains("SECRET") && !read.contains("sealed"),
            "{read}"
        );
        let events: Vec<serde_json::Value> = serde_json::from_str(&read).expect("json");
        assert!(events.iter().all(|e| e["forgotten"] == true));
    }

    /// What format 1 (AES-256-GCM) sealed, as the release before format 2
    /// wrote it (key `[1; 32]`, nonces `[1; 12]` and `[2; 12]`).
    const SEALED_V1: &str = r#"[{"id":"e1","action":"user.A.added","revision":1,"sealed":"3:AQEBAQEBAQEBAQEByVvU+wSSJ8nI9kre/Hkai2BKH3uo5HqOhu25J9u53kX/"},{"id":"e3","action":"x","revision":1,"sealed":"3:AgICAgICAgICAgICJYWMChgSlc/xYMMtYTyVHNPUTv7tFiTSHg==","remote":9}]"#;

    #[test]
    fn each_store_opens_with_the_suite_its_flag_names() {
        let plain = r#"[{"id":"e1","action":"user.A.added","revision":1,"payload":{"name":"SECRET"}},{"id":"e3","action":"x","revision":1,"payload":"SECRET2","remote":9}]"#;
        let keyring = |suite| {
            let mut r = Keyring::with_suite(suite);
            r.insert(3, &[1; KEY]).expect("key");
            r.set_live("user.A", 3);
            r
        };
        let v1 = Suite::of_flag("s", r#"{"format":1,"vault":"opfs"}"#).expect("format 1");
        assert_eq!(v1, Suite::Aes256Gcm);
        assert_eq!(keyring(v1).unseal(SEALED_V1).expect("unseal"), plain);
        assert_eq!(
            keyring(v1)
                .seal("user.A", plain, &mut counter())
                .expect("seal"),
            SEALED_V1,
            "format 1 seals as it did"
        );
        // The suites do not open each other's values.
        assert!(matches!(
            keyring(Suite::ChaCha20Poly1305).unseal(SEALED_V1),
            Err(Error::Storage(_))
        ));
        let v2 = keyring(Suite::ChaCha20Poly1305)
            .seal("user.A", plain, &mut counter())
            .expect("seal");
        assert_ne!(v2, SEALED_V1);
        assert!(matches!(keyring(v1).unseal(&v2), Err(Error::Storage(_))));
        // New stores get format 2; its flag reads back.
        assert_eq!(Suite::default(), Suite::ChaCha20Poly1305);
        assert_eq!(Suite::default().flag(), r#"{"format":2,"vault":"opfs"}"#);
        for suite in [Suite::Aes256Gcm, Suite::ChaCha20Poly1305] {
            assert_eq!(Suite::of_flag("s", &suite.flag()).expect("flag"), suite);
        }
        // A newer format is VERSION_MISMATCH, an entry that is not a flag STORAGE.
        let newer = Suite::of_flag("s", r#"{"format":3,"vault":"opfs"}"#).expect_err("format 3");
        assert_eq!(newer.code(), "VERSION_MISMATCH");
        assert!(newer.to_string().contains("encryption format 3"), "{newer}");
        assert!(newer.to_string().contains("encryption format 2"), "{newer}");
        assert!(matches!(Suite::of_flag("s", "{}"), Err(Error::Storage(_))));
    }

    #[test]
    fn chacha20_poly1305_is_rfc_8439() {
        // RFC 8439, section 2.8.2: the AEAD test vector's tag.
        let key: [u8; KEY] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let cipher = Cipher::new(Suite::ChaCha20Poly1305, &key);
        let tag = cipher.seal(&nonce, &aad, &mut text).expect("seal");
        assert_eq!(
            tag,
            [
                0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
                0x06, 0x91
            ]
        );
        assert_eq!(text[..4], [0xd3, 0x1a, 0x8d, 0x34]);
    }

    #[test]
    fn shred_entries_merge() {
        let one = shred_list(None, &["b".to_owned(), "a".to_owned()]).expect("list");
        assert_eq!(one, r#"["a","b"]"#);
        let two = shred_list(Some(&one), &["c".to_owned(), "a".to_owned()]).expect("list");
        assert_eq!(shred_entry(&two).expect("entry"), vec!["a", "b", "c"]);
        assert!(shred_entry("{").is_err());
    }

    #[test]
    fn texts_without_payloads_are_left_alone() {
        let text = r#"[{"id":"e2","action":"a","revision":1,"forgotten":true}]"#;
        assert_eq!(
            Keyring::default()
                .seal("x", text, &mut counter())
                .expect("seal"),
            text
        );
        assert_eq!(Keyring::default().unseal(text).expect("unseal"), text);
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn seal_then_unseal_is_the_identity(
            events in proptest::collection::vec(
                ("[a-z0-9\"\\\\-]{1,36}", "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}", 0u16..5, proptest::option::of(".{0,40}"), proptest::bool::ANY, proptest::option::of(0u64..1_000_000)),
                1..12,
            ),
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            aes in proptest::bool::ANY,
        ) {
            let events: Vec<serde_json::Value> = events
                .into_iter()
                .map(|(id, action, revision, payload, forgotten, remote)| {
                    let mut e = serde_json::json!({ "id": id, "action": action, "revision": revision });
                    match payload {
                        Some(p) if !forgotten => e["payload"] = serde_json::json!({ "text": p, "n": [1, 2.5, null] }),
                        _ => e["forgotten"] = serde_json::json!(true),
                    }
                    if let Some(r) = remote {
                        e["remote"] = serde_json::json!(r);
                    }
                    e
                })
                .collect();
            let text = serde_json::to_string(&events).expect("json");
            let mut r = Keyring::with_suite(if aes { Suite::Aes256Gcm } else { Suite::ChaCha20Poly1305 });
            r.insert(0, &key).expect("key");
            r.set_live("agg", 0);
            let sealed = r.seal("agg", &text, &mut counter()).expect("seal");
            proptest::prop_assert!(!sealed.contains("\"payload\""));
            let back: serde_json::Value = serde_json::from_str(&r.unseal(&sealed).expect("unseal")).expect("json");
            proptest::prop_assert_eq!(&back, &serde_json::Value::Array(events));
            // Opened one by one (a filter picking events), the same.
            let decoded: Vec<StoredEvent<'_>> = serde_json::from_str(&sealed).expect("decode");
            let opened: Vec<serde_json::Value> = decoded
                .iter()
                .map(|e| {
                    let o = r.open(e).expect("open");
                    serde_json::to_value(&*o.apply(e)).expect("json")
                })
                .collect();
            proptest::prop_assert_eq!(serde_json::Value::Array(opened), back);
        }
    }
}
