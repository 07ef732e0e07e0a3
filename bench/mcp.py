#!/usr/bin/env python3
"""Benchmarks of the MCP server, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/mcp.py [target/release/mahavishnu]

- spawn to `initialize`: start `mahavishnu mcp`, send `initialize`, time until its answer is read;
- `tools/list`: round trips on one running stdio server;
- idle RSS: VmRSS of a stdio server that has answered `initialize` and `tools/list`;
- HTTP: `mahavishnu serve`; 10 client threads, each with its own MCP session (streamable HTTP, plain
  JSON-RPC POSTs with keep-alive), make 100 `terminal_capture` calls each on one pty shell; every answer
  is checked; the median latency is reported. The same load then goes to the `/v1/` JSON API.
- HTTP burst: 200 clients connect at once and each asks `/healthz`; the slowest answer shows whether any
  connection had to wait for a SYN retry (1 s) because the listen backlog was full.

Medians; the spawn of `/bin/true` from this script is shown as a baseline.
"""

import http.client
import json
import os
import secrets
import select
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/mahavishnu")


def items(value, key):
    """The list of a JSON reply: `{key: [...]}`, or a bare array from builds before lists became objects."""
    return value if isinstance(value, list) else value[key]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


def report(name, samples, budget=None, unit="ms"):
    median = statistics.median(samples)
    verdict = "" if budget is None else "  (budget %g %s: %s)" % (budget, unit, "ok" if median <= budget else "OVER")
    print("%-52s median %8.2f %s   min %8.2f   max %8.2f%s" % (name, median, unit, min(samples), max(samples), verdict))


def read_message(process, want_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 1 << 16)
        if not chunk:
            raise SystemExit("the server closed stdout")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if message.get("id") == want_id:
                return message
    raise SystemExit("no answer to %s" % want_id)


def send(process, message):
    process.stdin.write((json.dumps(message) + "\n").encode())
    process.stdin.flush()


def stdio_figures(env):
    spawn = []
    for _ in range(50):
        started = time.perf_counter()
        subprocess.run(["/bin/true"])
        spawn.append((time.perf_counter() - started) * 1000)
    report("spawn baseline (/bin/true)", spawn)

    initialize = []
    for _ in range(30):
        started = time.perf_counter()
        process = subprocess.Popen([BINARY, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        send(process, INITIALIZE)
        read_message(process, 1)
        initialize.append((time.perf_counter() - started) * 1000)
        process.stdin.close()
        process.wait()
    report("spawn `mahavishnu mcp` to the initialize answer", initialize, 20)

    process = subprocess.Popen([BINARY, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    send(process, INITIALIZE)
    read_message(process, 1)
    send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    listing = []
    for n in range(200):
        started = time.perf_counter()
        send(process, {"jsonrpc": "2.0", "id": 100 + n, "method": "tools/list"})
        answer = read_message(process, 100 + n)
        listing.append((time.perf_counter() - started) * 1000)
        tools = len(answer["result"]["tools"])
    report("tools/list round trip (%d tools, stdio)" % tools, listing, 2)
    time.sleep(0.5)
    with open("/proc/%d/status" % process.pid) as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    report("idle RSS of `mahavishnu mcp`", [rss / 1024], 20, unit="MB")
    process.stdin.close()
    process.wait()


class McpHttpClient:
    """One MCP session over streamable HTTP with a kept-alive connection."""

    def __init__(self, address, token):
        host, port = address.split(":")
        self.token = token
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.session = None
        self.next_id = 1
        self.call("initialize", INITIALIZE["params"])
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message):
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "Authorization": "Bearer " + self.token}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["Mcp-Protocol-Version"] = "2025-06-18"
        self.connection.request("POST", "/mcp", body=json.dumps(message), headers=headers)
        response = self.connection.getresponse()
        body = response.read().decode()
        self.session = response.getheader("Mcp-Session-Id") or self.session
        if response.status >= 300:
            raise SystemExit("HTTP %d: %s" % (response.status, body))
        return body

    def call(self, method, params):
        self.next_id += 1
        body = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        for line in body.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == self.next_id:
                    return message
        if body.strip().startswith("{"):
            return json.loads(body)
        raise SystemExit("no answer in %r" % body)


def load(name, clients, calls, one_call):
    latencies = []
    failures = []
    lock = threading.Lock()

    def worker(index):
        client = clients(index)
        for _ in range(calls):
            started = time.perf_counter()
            ok = one_call(client)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                if not ok:
                    failures.append(index)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    report("%s: %d calls, 10 clients, %d failed" % (name, len(latencies), len(failures)), latencies)
    print("%-52s %8.0f calls/s" % ("", len(latencies) / wall))
    if failures:
        raise SystemExit("%d calls failed" % len(failures))


def burst(host, port, clients=200):
    latencies = []
    failures = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client():
        start.wait()
        started = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=30) as connection:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host.encode(), port))
                answer = b""
                while chunk := connection.recv(4096):
                    answer += chunk
            ok = answer.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)
            if not ok:
                failures.append(1)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report("burst: %d connections at once, %d failed" % (clients, len(failures)), latencies)
    print("%-52s slowest %.0f ms (budget 1000 ms, one SYN retry: %s)" % ("", max(latencies), "ok" if max(latencies) < 1000 else "OVER"))


def http_figures(env, root):
    server = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        line = ""
        while "serving MCP at" not in line:
            line = server.stderr.readline().decode()
            if not line:
                raise SystemExit("serve ended before serving")
        address = line.split("http://")[1].split("/")[0]
        launched = subprocess.run([BINARY, "--output", "json", "terminal", "launch", "shell", "--target", "pty"],
                                  env=env, check=True, stdout=subprocess.PIPE).stdout
        instance = items(json.loads(launched), "instances")[0]["id"]
        subprocess.run([BINARY, "terminal", "wait", instance, "--idle", "300"], env=env, check=True, stdout=subprocess.DEVNULL)

        def mcp_capture(client):
            answer = client.call("tools/call", {"name": "terminal_capture", "arguments": {"id": instance}})
            result = answer.get("result", {})
            return not result.get("isError") and result.get("structuredContent", {}).get("id") == instance

        load("MCP terminal_capture over HTTP", lambda n: McpHttpClient(address, env["MAHAVISHNU_TOKEN"]), 100, mcp_capture)

        host, port = address.split(":")

        def api_capture(connection):
            connection.request("POST", "/v1/terminal_capture", body=json.dumps({"id": instance}),
                               headers={"Content-Type": "application/json", "Authorization": "Bearer " + env["MAHAVISHNU_TOKEN"]})
            response = connection.getresponse()
            body = json.loads(response.read())
            return response.status == 200 and body["id"] == instance

        load("/v1/terminal_capture", lambda n: http.client.HTTPConnection(host, int(port), timeout=30), 100, api_capture)
        burst(host, int(port))
        subprocess.run([BINARY, "terminal", "close", "--all", "--grace", "0.2"], env=env, stdout=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait()


def main():
    root = tempfile.mkdtemp(prefix="mvbench")
    env = dict(os.environ, MAHAVISHNU_STATE_DIR=os.path.join(root, "state"), MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
               MAHAVISHNU_CONFIG=os.path.join(root, "config.toml"), MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME="mvbench-%d" % os.getpid(),
               MAHAVISHNU_TOKEN=secrets.token_hex(32))
    print("binary: %s" % BINARY)
    print("machine: %s, %d cores" % (os.uname().machine, os.cpu_count()))
    try:
        stdio_figures(env)
        http_figures(env, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
