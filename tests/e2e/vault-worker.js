// A module worker using the key vault directly (tests/e2e/vault.test.mjs):
// in a dedicated worker, Vault calls createSyncAccessHandle itself, without
// a nested worker. On { name, op } it answers { value } or { error }.
import { Vault } from "/pkg/vault.js";

const IV = new Uint8Array(12);
let vault;

const ops = {
  /** Opens the vault, makes `n` keys, and seals `text` under each: [{ slot, sealed }]. */
  async create({ name, n, text }) {
    vault ??= await Vault.open(name, { create: true });
    const made = await vault.create(n);
    const out = [];
    for (const { slot, key } of made) {
      const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: IV }, key, new TextEncoder().encode(text));
      out.push({ slot, sealed: Array.from(new Uint8Array(sealed)), extractable: key.extractable });
    }
    return out;
  },
  /** What the slots' keys decrypt `sealed` to ({ slot: text | null }), read by a vault opened here. */
  async open({ name, sealed }) {
    const v = await Vault.open(name);
    const keys = await v.keys(sealed.map((s) => s.slot));
    const out = {};
    for (const { slot, sealed: bytes } of sealed) {
      const key = keys.get(slot);
      out[slot] = key && new TextDecoder().decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv: IV }, key, new Uint8Array(bytes)));
    }
    v.close();
    return out;
  },
  /** Vault.open with createSyncAccessHandle taken away, as in a browser without it. */
  async unsupported({ name }) {
    delete FileSystemFileHandle.prototype.createSyncAccessHandle;
    try {
      await Vault.open(name, { create: true });
      return null;
    } catch (e) {
      return { code: e.code, reason: e.reason, message: e.message };
    }
  },
};

self.onmessage = async ({ data }) => {
  try {
    self.postMessage({ value: await ops[data.op](data) });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
