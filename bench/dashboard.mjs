#!/usr/bin/env node
// Benchmarks of the web dashboard, against a release build of the real binary, in Debian's Chromium
// driven by playwright-core.
//
// Usage: cargo build --release &&
//   MAHAVISHNU_TEST_NODE_MODULES=.test-tools/node_modules node bench/dashboard.mjs target/release/mahavishnu
//
// 1. Latency: 20 sessions print continuously (a line every 50 ms each); one more waits quietly; once on
//    tmux, once on pty. The grid is open in the browser. A marker is typed into the quiet session with
//    tmux itself, or with one request on its pty host's socket (no mahavishnu process in the way), and
//    the page notes (a MutationObserver) when its tile shows it.
//    The latency is the browser's clock at that moment less this script's clock just before tmux was
//    asked; both read the same system clock. 30 markers; the median and the spread.
// 2. Cost: 50 quiet sessions (tmux, then pty), the grid open; serve's resident memory (VmRSS) and its
//    CPU time over 10 s of nothing happening, as a share of one core.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const require = createRequire(resolve(process.env.MAHAVISHNU_TEST_NODE_MODULES || ".test-tools/node_modules") + "/");
const { chromium } = require("playwright-core");
const binary = resolve(process.argv[2] || "target/release/mahavishnu");

function world(name) {
  const root = mkdtempSync(join(tmpdir(), "mvdash-"));
  const socket = `mvdash-${name}-${process.pid}`;
  const env = {
    ...process.env,
    MAHAVISHNU_STATE_DIR: join(root, "state"),
    MAHAVISHNU_RUNTIME_DIR: join(root, "run"),
    MAHAVISHNU_CONFIG: join(root, "config.toml"),
    MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME: socket,
    SHELL: "/bin/bash",
    PS1: "$ ",
  };
  writeFileSync(env.MAHAVISHNU_CONFIG, "");
  const run = (...args) => execFileSync(binary, args, { env, cwd: root, encoding: "utf8" });
  return { root, env, socket, run };
}

async function serveIn(w) {
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0"], { env: w.env, cwd: w.root, stdio: ["ignore", "ignore", "pipe"] });
  const address = await new Promise((resolve, reject) => {
    let text = "";
    child.stderr.on("data", (chunk) => {
      text += chunk;
      const found = text.match(/serving MCP at http:\/\/([^/]+)\/mcp/);
      if (found) resolve(found[1]);
    });
    child.on("exit", () => reject(new Error("serve ended: " + text)));
  });
  const url = w.run("dashboard", "--listen", address).trim();
  return { child, address, url };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const browser = await chromium.launch({
  executablePath: process.env.MAHAVISHNU_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const cores = Number(execFileSync("nproc", { encoding: "utf8" }).trim());
console.log(`machine: ${cores} cores; Chromium ${browser.version()}`);

// 1. Latency with 20 sessions printing, on tmux and on pty.
// The marker is typed without any mahavishnu process in the way: with tmux itself, or one request on
// the pty host's socket.
function typer(w, target, native) {
  if (target === "tmux") {
    return (text) => execFileSync("tmux", ["-L", w.socket, "send-keys", "-t", native, text, "Enter"]);
  }
  // The runtime directory holds one directory per state directory.
  const run = w.env.MAHAVISHNU_RUNTIME_DIR;
  const state = readdirSync(run).find((name) => name.startsWith("state-"));
  const socket = join(run, state, "pty", native + ".sock");
  return (text) => new Promise((resolve, reject) => {
    const connection = connect(socket, () => connection.write(JSON.stringify({ op: "send", data: text + "\r" }) + "\n"));
    connection.on("data", () => { connection.end(); resolve(); });
    connection.on("error", reject);
  });
}

for (const target of ["tmux", "pty"]) {
  const w = world("latency-" + target);
  for (let i = 0; i < 20; i++) {
    w.run("terminal", "launch", "shell", "--target", target, "--", "-c", "while :; do date +%s%N; sleep 0.05; done");
  }
  const quiet = w.run("terminal", "launch", "shell", "--target", target).trim();
  const type = typer(w, target, quiet.split(":")[1]);
  const serve = await serveIn(w);
  const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
  await page.goto(serve.url);
  await page.waitForFunction(() => document.querySelectorAll("#grid .tile").length === 21, null, { timeout: 20000 });
  await page.evaluate((id) => {
    // The grid is watched as a whole: its tiles are replaced when sessions come and go.
    window.marks = {};
    const grid = document.getElementById("grid");
    new MutationObserver(() => {
      const tile = [...grid.querySelectorAll(".tile")].find((t) => t.dataset.id === id);
      if (!tile) return;
      for (const mark of tile.querySelector(".screen").textContent.match(/mark-\d+/g) || []) {
        if (!(mark in window.marks)) window.marks[mark] = Date.now();
      }
    }).observe(grid, { subtree: true, childList: true, characterData: true });
  }, quiet);
  await new Promise((r) => setTimeout(r, 2000));
  const latencies = [];
  for (let n = 0; n < 30; n++) {
    const mark = `mark-${n}`;
    const sent = Date.now();
    await type(`echo ${mark}`);
    await page.waitForFunction((m) => m in window.marks, mark, { timeout: 10000, polling: 20 });
    latencies.push((await page.evaluate((m) => window.marks[m], mark)) - sent);
    await new Promise((r) => setTimeout(r, 150 + Math.random() * 100));
  }
  console.log(
    `${target}: screen change visible in the browser, 20 sessions printing: median ${median(latencies)} ms ` +
      `(min ${Math.min(...latencies)}, max ${Math.max(...latencies)}, n=${latencies.length}; budget 100 ms)`,
  );
  await page.close();
  serve.child.kill();
  w.run("terminal", "close", "--all", "--grace", "0");
}

// 2. Memory and CPU with 50 quiet sessions, on tmux and on pty.
for (const target of ["tmux", "pty"]) {
  const w = world("cost-" + target);
  w.run("terminal", "launch", "shell", "--count", "50", "--target", target);
  const serve = await serveIn(w);
  const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
  await page.goto(serve.url);
  await page.waitForFunction(() => document.querySelectorAll("#grid .tile").length === 50, null, { timeout: 30000 });
  await new Promise((r) => setTimeout(r, 3000));
  const ticks = () => {
    const stat = readFileSync(`/proc/${serve.child.pid}/stat`, "utf8").split(") ")[1].split(" ");
    return Number(stat[11]) + Number(stat[12]); // utime + stime, in clock ticks
  };
  const hz = 100;
  const before = ticks();
  const started = Date.now();
  await new Promise((r) => setTimeout(r, 10000));
  const cpu = (ticks() - before) / hz / ((Date.now() - started) / 1000);
  const rss = Number(readFileSync(`/proc/${serve.child.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) / 1024;
  console.log(`${target}: serve with the grid open on 50 idle sessions: ${rss.toFixed(1)} MB resident (budget 50 MB), ` +
    `${(cpu * 100).toFixed(1)} % of one core (budget 10 %)`);
  await page.close();
  serve.child.kill();
  w.run("terminal", "close", "--all", "--grace", "0");
}
await browser.close();
