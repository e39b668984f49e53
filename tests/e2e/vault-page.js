// In-page helpers of the key vault tests (tests/e2e/vault.test.mjs and
// tests/webdriver/vault.test.mjs), loaded into blank.html by loadVault():
// window.Vault, and functions that look at keys and at the vault file from
// the page. The vault file is read with getFile(), between operations.

/** Loads /pkg/vault.js (the packaged module) as window.Vault. */
window.loadVault = async () => {
  window.Vault = (await import("/pkg/vault.js")).Vault;
};

const IV = new Uint8Array(12);

/** AES-GCM encryption of `text` under `key` (fixed IV: tests only), as a byte array. */
window.seal = async (key, text) =>
  Array.from(new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: IV }, key, new TextEncoder().encode(text))));

/** The text `bytes` decrypt to under `key`, or null when they do not. */
window.unseal = async (key, bytes) => {
  try {
    return new TextDecoder().decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv: IV }, key, new Uint8Array(bytes)));
  } catch {
    return null;
  }
};

/** What each of `made` ([{ slot, sealed }]) decrypts to under the key `vault` gives its slot (null when none). */
window.unsealEach = async (vault, made) => {
  const keys = await vault.keys(made.map((m) => m.slot));
  const out = [];
  for (const m of made) out.push(await unseal(keys.get(m.slot), m.sealed));
  return out;
};

/**
 * Sends `msg` to a fresh module worker running tests/e2e/vault-worker.js
 * (the vault in a dedicated worker); resolves to its answer's value, or
 * rejects with an Error whose message is the worker's error.
 */
window.askVaultWorker = (msg) => {
  const w = new Worker("/tests/e2e/vault-worker.js", { type: "module" });
  return new Promise((ok, fail) => {
    w.onmessage = ({ data }) => { w.terminate(); data.error ? fail(new Error(data.error)) : ok(data.value); };
    w.onerror = (e) => { w.terminate(); fail(new Error(`worker: ${e.message}`)); };
    w.postMessage(msg);
  });
};

/** The vault file of store `name`, as bytes (null when missing). */
window.vaultFile = async (name) => {
  const root = await navigator.storage.getDirectory();
  try {
    const dir = await root.getDirectoryHandle("eventstore-wasm");
    const file = await (await dir.getFileHandle(`${encodeURIComponent(name)}.keys`)).getFile();
    return new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    if (e.name === "NotFoundError") return null;
    throw e;
  }
};

/** Slot `slot` of store `name`'s vault file: { status, key } (key: the 32 bytes as a Latin-1 string). */
window.rawSlot = async (name, slot) => {
  const bytes = await vaultFile(name);
  const at = 64 + slot * 96;
  return { status: bytes[at], key: String.fromCharCode(...bytes.subarray(at + 1, at + 33)), rest: Array.from(bytes.subarray(at + 33, at + 96)) };
};

/** An AES-GCM key made from a Latin-1 string of 32 bytes (to show that the file's bytes are the key). */
window.keyFromLatin1 = (s) =>
  crypto.subtle.importKey("raw", Uint8Array.from(s, (c) => c.charCodeAt(0)), "AES-GCM", false, ["encrypt", "decrypt"]);

/** What `fn` throws, as { code, reason, message }, or null. */
window.vaultError = async (fn) => {
  try {
    await fn();
    return null;
  } catch (e) {
    return { isError: e instanceof Error, code: e?.code, reason: e?.reason, message: String(e?.message ?? e) };
  }
};
