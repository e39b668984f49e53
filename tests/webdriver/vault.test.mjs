// The key vault (js/vault.js) in every engine through WebDriver: Firefox ESR,
// WebKitGTK (on disk) and Chromium; choose with ENGINES=firefox,webkit,chromium.
// WebKitGTK leaves the Origin Private File System off by default (Safari
// ships it on): there the vault must refuse with a clear error. WebKitGTK is
// then run again with its StorageAPI, FileSystem and AccessHandle features
// on, as Safari has them: OPFS is there, but createSyncAccessHandle rejects
// with NotSupportedError ("Backend does not support this operation", seen
// with WebKitGTK 2.50), so the vault must refuse there too.
// The API round trip across two tabs, two tabs creating keys at once, a
// destroy seen by the other tab and in the file, Vault.delete, and the vault
// inside a dedicated worker; in Firefox also the scan of the profile's files
// after a destroy (Chromium's is in tests/e2e/vault.test.mjs).
//
//   node --test --test-concurrency=1 tests/webdriver/vault.test.mjs   (after npm run build)
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, enginesFromEnv, startJob, finishJob, uniqueName } from "./client.mjs";
import { serve } from "../../scripts/serve.mjs";
import { scanProfile, found } from "../e2e/disk.mjs";

const ENGINES = enginesFromEnv(["firefox", "webkit", "chromium"]);



const OPFS_FEATURES = ["StorageAPI", "FileSystem", "AccessHandle"];
const RUNS = ENGINES.flatMap((engine) =>
  engine === "webkit"
    ? [{ engine, label: "webkit (WebKitGTK defaults)", opts: {}, supported: false },
      { engine, label: `webkit with ${OPFS_FEATURES.join(", ")} on`, opts: { webkitFeatures: OPFS_FEATURES }, supported: false }]
    : [{ engine, label: engine, opts: {}, supported: true }]);

for (const { engine, label, opts, supported } of RUNS) {
  describe(`key vault in ${label}`, { timeout: 300_000 }, () => {
    let server, browser, tabs, support;

    before(async () => {
      server = await serve();
      browser = await launch(engine, opts);
      const page = `${server.url}/tests/e2e/blank.html`;
      tabs = [await browser.open(page), await browser.newTab(page)];
      for (const tab of tabs) await tab.run(async () => { await import("/tests/e2e/vault-page.js"); await loadVault(); });
      // What the engine offers (printed for the report).
      support = await tabs[0].run(async () => {
        const inWorker = await new Promise((ok) => {
          const src = `self.onmessage = async () => {
            const out = { syncAccessHandle: typeof FileSystemFileHandle === "function" && typeof FileSystemFileHandle.prototype.createSyncAccessHandle === "function",
              locks: typeof navigator.locks?.request === "function", nestedWorker: typeof Worker === "function" };
            self.postMessage(out);
          };`;
          const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
          w.onmessage = ({ data }) => { w.terminate(); ok(data); };
          w.onerror = (e) => { w.terminate(); ok({ error: String(e.message) }); };
          w.postMessage(0);
        });
        return { userAgent: navigator.userAgent, opfs: typeof navigator.storage?.getDirectory === "function", locks: typeof navigator.locks?.request === "function", worker: inWorker };
      });
      console.log(`${label}: ${JSON.stringify(support)}`);
    });
    after(async () => {
      await browser?.close();
      await server?.close();
    });

    if (!supported) {
      test("without OPFS sync access handles the vault refuses with a clear error, in a window and in a worker", { timeout: 120_000 }, async () => {
        const name = uniqueName("wd-vault-none");
        const r = await tabs[0].run(async (name) => {
          const inWorker = await askVaultWorker({ op: "create", name, n: 1, text: "x" }).then(
            () => { throw new Error("the worker's vault opened"); },
            (e) => e.message,
          );
          let removed;
          const remove = await vaultError(async () => { removed = await Vault.delete(name); });
          return { open: await vaultError(() => Vault.open(name, { create: true })), remove, removed, inWorker };
        }, [name]);
        console.log(`${label}: Vault.open rejects: ${JSON.stringify(r.open)}`);
        assert.equal(r.open?.code, "STORAGE");
        assert.match(r.open.message, /this browser (has no Origin Private File System|cannot open a FileSystemSyncAccessHandle)/);
        // The first refusal names the missing feature (later ones in WebKit
        // with OPFS on are InvalidStateError for the same file).
        if (!opts.webkitFeatures) assert.equal(r.open?.reason, "unsupported");
        // Deleting is not an error: there was no vault, or (WebKit with
        // OPFS on) a file without keys, made by the refused open, is removed.
        assert.equal(r.remove, null, `Vault.delete: ${JSON.stringify(r.remove)}`);
        assert.equal(typeof r.removed, "boolean");
        assert.match(r.inWorker, /^STORAGE: vault: this browser (has no|cannot open a FileSystemSyncAccessHandle \(NotSupportedError)/);
      });
      return;
    }

    test("the API round trip across two tabs: create, keys, destroy, delete", { timeout: 120_000 }, async () => {
      const name = uniqueName("wd-vault");
      const [a, b] = tabs;
      const made = await a.run(async (name) => {
        window.vault = await Vault.open(name, { create: true });
        const keys = await vault.create(3);
        const out = [];
        for (const { slot, key } of keys) out.push({ slot, sealed: await seal(key, `secret ${slot}`), extractable: key.extractable });
        return out;
      }, [name]);
      assert.deepEqual(made.map((m) => [m.slot, m.extractable]), [[0, false], [1, false], [2, false]]);
      const read = await b.run(async (name, made) => {
        window.vault = await Vault.open(name);
        return unsealEach(vault, made);
      }, [name, made]);
      assert.deepEqual(read, ["secret 0", "secret 1", "secret 2"], "the other tab decrypts with the keys it reads");

      const destroyed = await b.run(async (name) => {
        const done = await vault.destroy([1]);
        return { done, raw: await rawSlot(name, 1), mine: (await vault.keys([1])).get(1) };
      }, [name]);
      assert.deepEqual(destroyed.done, [1]);
      assert.equal(destroyed.mine, null);
      assert.equal(destroyed.raw.status, 2);
      assert.equal(destroyed.raw.key, "\0".repeat(32), "the key's bytes in the file are zeros");
      const inA = await a.run(async (name, made) => {
        // The creating tab had slot 1's key cached: the destroy reaches it.
        let cached;
        for (let i = 0; i < 100; i++) {
          cached = (await vault.keys([1])).get(1);
          if (cached === null) break;
          await new Promise((ok) => setTimeout(ok, 20));
        }
        const fresh = await Vault.open(name);
        const keys = await fresh.keys([0, 1, 2]);
        fresh.close();
        return { cached, fresh: [await unseal(keys.get(0), made[0].sealed), keys.get(1), await unseal(keys.get(2), made[2].sealed)] };
      }, [name, made]);
      assert.equal(inA.cached, null, "the other tab's cached key is dropped");
      assert.deepEqual(inA.fresh, ["secret 0", null, "secret 2"]);

      const deleted = await a.run(async (name) => {
        vault.close();
        const closed = await vaultError(() => vault.keys([0]));
        const removed = await Vault.delete(name);
        return { closed, removed, file: await vaultFile(name), reopen: await vaultError(() => Vault.open(name)) };
      }, [name]);
      await b.run(() => vault.close());
      assert.equal(deleted.closed?.code, "CLOSED");
      assert.equal(deleted.removed, true);
      assert.equal(deleted.file, null);
      assert.equal(deleted.reopen?.code, "DATA_LOST");
    });

    test("two tabs creating keys at once get distinct slots", { timeout: 120_000 }, async () => {
      const name = uniqueName("wd-vault-race");
      await tabs[0].run((name) => Vault.open(name, { create: true }).then((v) => v.close()), [name]);
      const race = async (name, tab) => {
        const vault = await Vault.open(name);
        const made = (await Promise.all(Array.from({ length: 10 }, () => vault.create(2)))).flat();
        const out = [];
        for (const { slot, key } of made) out.push({ slot, sealed: await seal(key, `tab ${tab} slot ${slot}`) });
        vault.close();
        return out;
      };
      for (const [i, tab] of tabs.entries()) await startJob(tab, race, [name, i]);
      const deadline = Date.now() + 90_000;
      const [x, y] = [await finishJob(tabs[0], deadline, `${engine} tab 0`), await finishJob(tabs[1], deadline, `${engine} tab 1`)];
      const slots = [...x, ...y].map((m) => m.slot).sort((p, q) => p - q);
      assert.deepEqual(slots, Array.from({ length: 40 }, (_, i) => i), "40 distinct slots");
      const texts = await tabs[0].run(async (name, made) => {
        const vault = await Vault.open(name);
        const out = await unsealEach(vault, made);
        vault.close();
        await Vault.delete(name);
        return out;
      }, [name, y]);
      assert.deepEqual(texts, y.map((m) => `tab 1 slot ${m.slot}`), "tab 0 reads tab 1's keys");
    });

    test("in a dedicated worker the vault opens the file itself", { timeout: 120_000 }, async () => {
      const name = uniqueName("wd-vault-worker");
      const r = await tabs[0].run(async (name) => {
        const made = await askVaultWorker({ op: "create", name, n: 2, text: "from the worker" });
        const vault = await Vault.open(name);
        const texts = await unsealEach(vault, made);
        vault.close();
        await Vault.delete(name);
        return { texts, unsupported: await askVaultWorker({ op: "unsupported", name: `${name}-x` }) };
      }, [name]);
      assert.deepEqual(r.texts, ["from the worker", "from the worker"]);
      assert.equal(r.unsupported?.reason, "unsupported");
    });
  });
}

if (ENGINES.includes("firefox")) {
  test("Firefox: a destroyed key's bytes are in no file of the profile, a live key's are, in the same file", { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "eventstore-firefox-"));
    const server = await serve();
    let browser;
    try {
      browser = await launch("firefox", { firefoxProfile: dir });
      const tab = await browser.open(`${server.url}/tests/e2e/blank.html`);
      const name = uniqueName("wd-vault-disk");
      const raws = await tab.run(async (name) => {
        await import("/tests/e2e/vault-page.js");
        await loadVault();
        window.vault = await Vault.open(name, { create: true });
        await vault.create(4);
        const raws = [];
        for (let s = 0; s < 4; s++) raws.push((await rawSlot(name, s)).key);
        return raws;
      }, [name]);
      let hits = await scanProfile(dir, raws);
      assert.deepEqual(found(hits, raws), raws, "control: every live key is found");
      const files = [...new Set(raws.flatMap((r) => hits[r]))];
      assert.equal(files.length, 1, `one file holds the keys: ${files}`);
      const path = join(dir, files[0].replace(/ \(latin1\)$/, ""));
      const inode = (await stat(path)).ino;
      await tab.run(async () => {
        await vault.destroy([1, 3]);
        vault.close();
      });
      await browser.close();
      hits = await scanProfile(dir, raws);
      console.log(`firefox: keys in ${files[0]}; after destroy, destroyed keys in ${[raws[1], raws[3]].flatMap((r) => hits[r]).join(", ") || "no file"}`);
      assert.deepEqual(found(hits, [raws[0], raws[2]]), [raws[0], raws[2]], "the live keys are still found");
      assert.deepEqual(found(hits, [raws[1], raws[3]]), [], "no file holds a destroyed key");
      assert.equal((await stat(path)).ino, inode, "the same file, overwritten in place");
    } finally {
      await browser?.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
