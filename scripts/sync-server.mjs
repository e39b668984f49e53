// Starts the reference sync server (`eventstore-server`, server/) as a child
// process, for the demo (`npm start`), the end-to-end tests and the
// benchmarks; and a throwaway PostgreSQL cluster for it, as server/tests do.
// Everything listens on 127.0.0.1 only.
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, chown } from "node:fs/promises";
import { existsSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

/** The binary `cargo build --profile server -p eventstore-server` makes. */
export const SERVER_BIN = join(ROOT, "target/server/eventstore-server");

const cargoEnv = () => ({ ...process.env, PATH: `${join(homedir(), ".cargo/bin")}:${process.env.PATH}` });

/**
 * Builds the server (incremental: a few seconds when nothing changed).
 * `quiet` keeps cargo's output unless the build fails. Throws when it fails.
 */
export function buildServer({ quiet = false } = {}) {
  const out = spawnSync("cargo", ["build", "--profile", "server", "-p", "eventstore-server"], {
    cwd: ROOT, env: cargoEnv(), stdio: quiet ? "pipe" : "inherit", encoding: "utf8",
  });
  if (out.status !== 0) {
    throw new Error(`cargo build --profile server -p eventstore-server failed (${out.error?.message ?? `exit ${out.status}`})${quiet ? `:\n${out.stderr}` : ""}`);
  }
  return SERVER_BIN;
}

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * Starts `eventstore-server` (built already: see buildServer) and resolves once
 * it listens. Options: `database` (URL; required), `port` (0 = any free one,
 * kept across restart()), `origins` (--allow-origin values), `auth` (path of a
 * token file), `args` (more arguments), `echo` (copy the server's log to
 * stderr). Resolves to { url, port, log(), stop(), kill(), restart() }:
 * stop() is SIGTERM (graceful; SIGKILL after 10 s), kill() is SIGKILL (a
 * crash), restart() starts it again on the same port and database.
 */
export async function startSyncServer({ database, port = 0, origins = [], auth, args = [], echo = false } = {}) {
  if (!database) throw new Error("startSyncServer: database is required");
  if (!existsSync(SERVER_BIN)) throw new Error(`${SERVER_BIN} is missing: call buildServer() first`);
  let output = "";
  let child = null;
  // Never outlive the script that started it, even when it crashes.
  process.once("exit", () => child?.kill("SIGKILL"));

  const launch = (listenPort) => new Promise((ok, fail) => {
    const argv = ["--listen", `127.0.0.1:${listenPort}`, "--database", database];
    for (const o of origins) argv.push("--allow-origin", o);
    if (auth) argv.push("--auth", auth);
    argv.push(...args);
    const proc = spawn(SERVER_BIN, argv, { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" } });
    child = proc;
    output += `--- started: ${argv.join(" ")}\n`;
    let mine = ""; // this process's output, up to "listening"
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      proc.kill("SIGKILL");
      fail(new Error(`eventstore-server did not listen within 20 s:\n${output.slice(-2000)}`));
    }, 20_000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      output += chunk;
      if (output.length > 200_000) output = output.slice(-100_000);
      if (echo) process.stderr.write(chunk);
      // tracing's line: `… INFO eventstore_server: listening addr=127.0.0.1:8787`
      if (!settled) mine += chunk;
      const m = settled ? null : /listening addr=127\.0\.0\.1:(\d+)/.exec(mine);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        ok(Number(m[1]));
      }
    });
    proc.once("exit", (code, signal) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        fail(new Error(`eventstore-server exited (${signal ?? code}) before listening:\n${output.slice(-2000)}`));
      }
    });
  });

  const exited = (proc) => new Promise((done) => {
    if (proc.exitCode !== null || proc.signalCode !== null) done();
    else proc.once("exit", () => done());
  });

  const handle = {
    url: "",
    port: 0,
    /** The server's log so far (stderr). */
    log: () => output,
    get running() { return !!child && child.exitCode === null && child.signalCode === null; },
    async stop() {
      const proc = child;
      if (!proc || !handle.running) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited(proc);
      clearTimeout(timer);
    },
    async kill() {
      const proc = child;
      if (!proc || !handle.running) return;
      proc.kill("SIGKILL");
      await exited(proc);
    },
    async restart() {
      await handle.stop();
      await launch(handle.port);
      return handle;
    },
  };
  handle.port = await launch(port);
  handle.url = `http://127.0.0.1:${handle.port}`;
  return handle;
}

// ---- PostgreSQL -------------------------------------------------------------------

/** Debian's newest PostgreSQL bin directory (with initdb and pg_ctl), or null. */
export function postgresBin() {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return null;
  const found = readdirSync(base).map((v) => join(base, v, "bin"))
    .filter((bin) => existsSync(join(bin, "initdb")) && existsSync(join(bin, "pg_ctl")))
    .sort((a, b) => Number(a.split("/").at(-2)) - Number(b.split("/").at(-2)));
  return found.at(-1) ?? null;
}

const runOk = (cmd, args) => {
  const out = spawnSync(cmd, args, { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${out.error?.message ?? ""}${out.stdout}${out.stderr}`);
};

/**
 * A throwaway PostgreSQL cluster in a temp dir, run as the `postgres` user on
 * 127.0.0.1 (fsync off, as server/tests do). Resolves to { url, stop() };
 * `url` is its `postgres` database. Needs root (runuser) and Debian's postgresql.
 */
export async function startPostgres() {
  const bin = postgresBin();
  if (!bin) throw new Error("PostgreSQL not found under /usr/lib/postgresql (run scripts/setup.sh)");
  const dir = await mkdtemp(join(tmpdir(), "eventstore-pg-"));
  const data = join(dir, "data");
  const port = await freePort();
  const pg = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  const uid = Number(pg.stdout.trim());
  const gid = Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim());
  await chown(dir, uid, gid);
  const asPostgres = (tool, args) => runOk("runuser", ["-u", "postgres", "--", join(bin, tool), ...args]);
  asPostgres("initdb", ["-A", "trust", "-U", "postgres", "--no-sync", "-D", data]);
  asPostgres("pg_ctl", ["-D", data, "-l", join(dir, "log"), "-w", "-o",
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`, "start"]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      spawnSync("runuser", ["-u", "postgres", "--", join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
