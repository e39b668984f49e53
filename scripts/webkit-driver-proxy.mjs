// `safaridriver --port=N` for wasm-pack on Linux (scripts/bin/safaridriver):
// WebKitWebDriver behind a small HTTP proxy that adds, to the new-session
// request, the browser to start. wasm-bindgen-test-runner asks a safaridriver
// for a session with empty capabilities (it sends no webdriver.json options to
// Safari), and WebKitWebDriver then starts MiniBrowser, whose automation
// session keeps IndexedDB in memory. With this proxy the session runs
// scripts/bin/webkit-persistent-browser on a fresh data directory, where
// IndexedDB is SQLite on disk, as in Safari. (WEBKIT_BROWSER=minibrowser
// skips the proxy: see scripts/bin/safaridriver.)
//
// The test runner ends its driver with SIGKILL, which a proxy cannot catch:
// WebKitWebDriver runs under a shell that reads this process's pipe and, once
// the pipe closes (this process ended, however), ends its process group
// (the driver and the browser) and removes the data directory.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const port = Number(process.argv.find((a) => a.startsWith("--port="))?.slice("--port=".length));
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: webkit-driver-proxy.mjs --port=N");
  process.exit(2);
}
const BROWSER = fileURLToPath(new URL("bin/webkit-persistent-browser", import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), "eventstore-webkit-"));

const inner = await new Promise((ok, fail) => {
  const srv = createNetServer();
  srv.once("error", fail);
  srv.listen(0, "127.0.0.1", () => { const p = srv.address().port; srv.close(() => ok(p)); });
});
const watchdog = `WebKitWebDriver --port=${inner} --host=local & cat >/dev/null; kill $! 2>/dev/null; sleep 1; rm -rf "$1"; kill -KILL 0`;
const driver = spawn("sh", ["-c", watchdog, "sh", dataDir], { detached: true, stdio: ["pipe", "inherit", "inherit"] });
driver.on("exit", () => process.exit(1));
const stop = () => { driver.stdin.end(); setTimeout(() => process.exit(0), 1500); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

/** Adds the persistent browser to a new-session request's capabilities. */
function withBrowser(text) {
  const body = text ? JSON.parse(text) : {};
  const caps = (body.capabilities ??= {});
  const always = (caps.alwaysMatch ??= {});
  always["webkitgtk:browserOptions"] ??= { binary: BROWSER, args: ["--automation", `--data-dir=${dataDir}`] };
  return JSON.stringify(body);
}

async function forward(method, path, body) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await fetch(`http://127.0.0.1:${inner}${path}`, {
        method,
        headers: body ? { "content-type": "application/json" } : {},
        body: body || undefined,
        signal: AbortSignal.timeout(600_000),
      });
    } catch (e) {
      // Until WebKitWebDriver listens; later failures are the driver's.
      if (Date.now() > deadline || e.name === "TimeoutError") throw e;
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }
}

createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  let body = Buffer.concat(chunks).toString("utf8");
  try {
    if (req.method === "POST" && /^\/session\/?$/.test(req.url)) body = withBrowser(body);
    const answer = await forward(req.method, req.url, body);
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    res.end(Buffer.from(await answer.arrayBuffer()));
  } catch (e) {
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ value: { error: "unknown error", message: `webkit-driver-proxy: ${e.message}` } }));
  }
}).listen(port, "127.0.0.1");
