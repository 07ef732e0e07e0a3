#!/usr/bin/env python3
"""Benchmark of deployments on the local platform, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/deploy.py [target/release/mahavishnu]

Measures, each as a median:
- `deploy plan` of 50 services in 3 regions, nothing deployed and everything deployed (workers that
  sleep, so that 150 processes cost little), 30 runs each;
- the apply of the sandcastle example (examples/sandcastle, two regions, a topic) beyond its services'
  own start-up: each service's start-up is timed alone the same way (started with PORT set, until its
  health check answers, or a job until it exits), summed along the apply's critical path (per region:
  the slowest of each wave), and taken from the apply's wall time; 5 fresh applies;
- rollback visible: from the start of `deploy rollback` to the first request answered by the old
  revision, with requests sent back to back; 10 rollbacks;
- a killed process serving again: a service with one process is killed, and the time to the first
  200 through its router is taken; 10 kills;
- the supervisor's resident memory when idle (VmRSS), with one service deployed.
The Pub/Sub emulator must be installed (or PUBSUB_EMULATOR_HOST set) for the sandcastle example.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/mahavishnu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env, cwd, check=True):
    return subprocess.run([BINARY] + args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=check, text=True)


def status(env, cwd, manifest=None):
    args = ["--output", "json", "deploy", "status"] + (["-f", manifest] if manifest else [])
    return json.loads(run(args, env, cwd).stdout)


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.headers.get("x-mahavishnu-revision"), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-mahavishnu-revision"), b""
    except OSError:
        return 0, None, b""


def world():
    root = tempfile.mkdtemp(prefix="mvbench")
    env = dict(os.environ, MAHAVISHNU_STATE_DIR=os.path.join(root, "state"), MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
               HOME=os.path.join(root, "home"), SHOP_SESSION_KEY="bench-key")
    os.makedirs(env["HOME"])
    return root, env


def destroy(env, cwd, manifest=None):
    run(["deploy", "destroy"] + (["-f", manifest] if manifest else []), env, cwd, check=False)


def bench_plan():
    root, env = world()
    lines = ['[sandcastle]\nname = "big"\nregions = ["r1", "r2", "r3"]\n']
    for n in range(50):
        lines.append('[services.svc-%02d]\nkind = "worker"\nrun = "exec sleep 3600"\nenv = { N = "%d" }\n' % (n, n))
    with open(os.path.join(root, "mahavishnu.deploy.toml"), "w") as out:
        out.write("\n".join(lines))

    def timed(repeat=30):
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([BINARY, "deploy", "plan"], env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    try:
        empty = timed()
        run(["deploy", "apply"], env, root)
        full = timed()
        plan = json.loads(run(["--output", "json", "deploy", "plan"], env, root).stdout)
        assert plan["changes"] == [], plan["changes"][:3]
        return empty, full
    finally:
        destroy(env, root)
        shutil.rmtree(root, ignore_errors=True)


def startup_alone(directory, script, env, job=False, health="/healthz"):
    """Seconds from start to the first healthy answer (a job: to its exit)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child_env = dict(env, PORT=str(port), PUBSUB_EMULATOR_HOST="127.0.0.1:1", ORDERS_TOPIC="x", WEBHOOKS_URL="http://127.0.0.1:1",
                     SESSION_KEY="bench-key", MAHAVISHNU_REGION="bench")
    started = time.perf_counter()
    process = subprocess.Popen(["python3", script], cwd=directory, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if job:
            process.wait()
            return time.perf_counter() - started
        while True:
            code, _, _ = get("http://127.0.0.1:%d%s" % (port, health), timeout=1)
            if 200 <= code < 400:
                return time.perf_counter() - started
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_emulator():
    """Starts a Pub/Sub emulator for the apply benchmark, so that each apply finds it running (its
    own start, about a second of JVM, is the emulator's and is reported apart)."""
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        return None, os.environ["PUBSUB_EMULATOR_HOST"], 0.0
    sdk = os.environ.get("CLOUDSDK_ROOT_DIR") or os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("gcloud"))))
    launcher = os.path.join(sdk, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    process = subprocess.Popen([launcher, "--host=127.0.0.1", "--port=%d" % port], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    while get("http://127.0.0.1:%d/" % port, timeout=1)[0] == 0:
        time.sleep(0.02)
    return process, "127.0.0.1:%d" % port, time.perf_counter() - started


def bench_apply():
    root, env = world()
    emulator, host, emulator_start = start_emulator()
    env["PUBSUB_EMULATOR_HOST"] = host
    example = os.path.join(root, "sandcastle")
    shutil.copytree(os.path.join(REPO, "examples", "sandcastle"), example)
    try:
        alone = {name: statistics.median(startup_alone(example, name + ".py", env, job=(name == "migrate")) for _ in range(5))
                 for name in ["migrate", "webhooks", "worker", "web"]}
        # Waves: migrate and webhooks, then worker and web; the two regions one after the other.
        critical = 2 * (max(alone["migrate"], alone["webhooks"]) + max(alone["worker"], alone["web"]))
        overheads = []
        for _ in range(5):
            started = time.perf_counter()
            run(["deploy", "apply"], env, example)
            total = time.perf_counter() - started
            overheads.append(total - critical)
            destroy(env, example)
        return alone, critical, statistics.median(overheads), emulator_start
    finally:
        destroy(env, example)
        if emulator:
            os.killpg(emulator.pid, signal.SIGKILL)
            emulator.wait()
        shutil.rmtree(root, ignore_errors=True)


APP = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), App).serve_forever()
"""


def bench_rollback_restart_memory():
    root, env = world()
    with open(os.path.join(root, "app.py"), "w") as out:
        out.write(APP)
    manifest = '[sandcastle]\nname = "bench"\n\n[services.web]\nrun = "python3 app.py"\nenv = { V = "%s" }\n'
    try:
        with open(os.path.join(root, "mahavishnu.deploy.toml"), "w") as out:
            out.write(manifest % "1")
        run(["deploy", "apply"], env, root)
        time.sleep(2)
        pid = open(os.path.join(env["MAHAVISHNU_STATE_DIR"], "deploy/bench/local/supervisor.pid")).read().strip()
        rss = [int(line.split()[1]) for line in open("/proc/%s/status" % pid) if line.startswith("VmRSS")][0] / 1024
        with open(os.path.join(root, "mahavishnu.deploy.toml"), "w") as out:
            out.write(manifest % "2")
        run(["deploy", "apply"], env, root)
        web = status(env, root)["regions"][0]["services"][0]
        url = web["url"]
        revisions = [r["name"] for r in web["revisions"]]
        rollbacks = []
        for n in range(10):
            target = revisions[n % 2]
            seen = threading.Event()
            started = [0.0]
            stop = [False]

            def watch():
                while not stop[0]:
                    _, revision, _ = get(url + "/")
                    if started[0] and revision == target and not seen.is_set():
                        rollbacks.append((time.perf_counter() - started[0]) * 1000)
                        seen.set()
            watcher = threading.Thread(target=watch)
            watcher.start()
            time.sleep(0.1)
            started[0] = time.perf_counter()
            run(["deploy", "rollback", "web", "--to", target], env, root)
            seen.wait(5)
            stop[0] = True
            watcher.join()
        restarts = []
        for _ in range(10):
            copy = [r for r in status(env, root)["regions"][0]["services"][0]["revisions"] if r["weight"] > 0][0]["copies"][0]
            started = time.perf_counter()
            os.kill(copy["pid"], signal.SIGKILL)
            time.sleep(0.005)
            while get(url + "/", timeout=1)[0] != 200:
                time.sleep(0.002)
            restarts.append((time.perf_counter() - started) * 1000)
            time.sleep(0.5)
        return statistics.median(rollbacks), max(rollbacks), statistics.median(restarts), max(restarts), rss
    finally:
        destroy(env, root)
        shutil.rmtree(root, ignore_errors=True)


def main():
    print("binary: %s, machine: %s, %d cores" % (BINARY, os.uname().machine, os.cpu_count()))
    empty, full = bench_plan()
    print("deploy plan, 50 services x 3 regions: nothing deployed %.1f ms, all deployed %.1f ms (budget 50 ms)" % (empty, full))
    rollback, rollback_max, restart, restart_max, rss = bench_rollback_restart_memory()
    print("rollback visible to the next request: median %.1f ms, max %.1f ms (budget 50 ms)" % (rollback, rollback_max))
    print("a killed process serving again: median %.0f ms, max %.0f ms (budget 1,000 ms)" % (restart, restart_max))
    print("supervisor idle RSS with one service: %.1f MB (budget 15 MB)" % rss)
    alone, critical, overhead, emulator_start = bench_apply()
    print("sandcastle example: services alone %s; critical path %.2f s; apply beyond it: median %.2f s (budget 1 s)"
          % (", ".join("%s %.2f s" % item for item in alone.items()), critical, overhead))
    print("  (the Pub/Sub emulator, started once before: %.2f s to answer)" % emulator_start)


if __name__ == "__main__":
    main()
