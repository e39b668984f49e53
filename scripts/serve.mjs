// A small static file server for the demo and the end-to-end tests.
// Listens on 127.0.0.1 only. `node scripts/serve.mjs [port]` serves the repo root.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
};

export const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

/** Serves `root` on 127.0.0.1:`port` (0 = any free port). Resolves to { url, close }. */
export function serve({ root = ROOT, port = 0 } = {}) {
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
      let file = normalize(join(root, path));
      if (!file.startsWith(root)) throw Object.assign(new Error("outside root"), { code: "ENOENT" });
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    }
  });
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      // Keep-alive connections of a still running browser would hold close() open.
      const close = () => new Promise((done) => { server.close(done); server.closeAllConnections(); });
      ok({ url, close });
    });
  });
}

// `node scripts/serve.mjs [port] [--no-sync] [--sync-port=8787]` (what `npm start` runs): the
// playground at http://127.0.0.1:PORT/www/ plus the sync server it syncs with,
// built and started here on a SQLite file under .data/ (kept across runs), and
// stopped on Ctrl-C or exit.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const port = Number(args.find((a) => /^\d+$/.test(a)) ?? 8080);
  const syncPort = Number(args.find((a) => a.startsWith("--sync-port="))?.split("=")[1] ?? 8787);
  const withSync = !args.includes("--no-sync");
  let sync = null;
  if (withSync) {
    const { mkdir } = await import("node:fs/promises");
    const { buildServer, startSyncServer } = await import("./sync-server.mjs");
    console.log("building the sync server (cargo build --profile server -p eventstore-server) …");
    buildServer();
    const dir = join(ROOT, ".data");
    await mkdir(dir, { recursive: true });
    sync = await startSyncServer({
      database: `sqlite://${join(dir, "demo-sync.db")}`,
      port: syncPort,
      origins: [`http://127.0.0.1:${port}`],
      echo: true,
    });
  }
  const { url, close } = await serve({ port });
  let stopping = false;
  const stop = async (code = 0) => {
    if (stopping) return;
    stopping = true;
    await Promise.allSettled([close(), sync?.stop()]);
    process.exit(code);
  };
  process.on("SIGINT", () => stop(0));
  process.on("SIGTERM", () => stop(0));
  process.on("SIGHUP", () => stop(0));
  const page = sync && sync.port !== 8787 ? `${url}/www/?sync=${sync.url}` : `${url}/www/`;
  console.log(`eventstore-wasm playground: ${page}`);
  if (sync) {
    console.log(`sync server: ${sync.url} (database .data/demo-sync.db); the page syncs with it.`);
    console.log(`open ${page}${page.includes("?") ? "&" : "?"}db=second in another tab to act as a second device. Ctrl-C stops both.`);
  }
}
