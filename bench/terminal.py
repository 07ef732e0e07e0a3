#!/usr/bin/env python3
"""Benchmarks of the terminal commands, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/terminal.py [target/release/mahavishnu]

Every figure is the median of repeated runs, measured from this script (so each includes the cost of
starting a process from Python, printed first as the `spawn baseline`). Each run uses its own state
directory, runtime directory and tmux server, and closes what it started.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/mahavishnu")


def items(value, key):
    """The list of a JSON reply: `{key: [...]}`, or a bare array from builds before lists became objects."""
    return value if isinstance(value, list) else value[key]


def world():
    root = tempfile.mkdtemp(prefix="mvbench")
    env = dict(os.environ)
    env.update(
        MAHAVISHNU_STATE_DIR=os.path.join(root, "state"),
        MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
        MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME="mvbench-%d" % os.getpid(),
        MAHAVISHNU_CONFIG=os.path.join(root, "config.toml"),
        SHELL="/bin/bash",
        PS1="$ ",
    )
    return root, env


def run(env, *args, check=True):
    result = subprocess.run([BINARY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        raise SystemExit("mahavishnu %s failed: %s" % (" ".join(args), result.stderr))
    return result.stdout


def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def report(name, figures, budget=None):
    median, low, high = figures
    verdict = "" if budget is None else ("  (budget %g ms: %s)" % (budget, "ok" if median <= budget else "OVER"))
    print("%-52s median %8.2f ms   min %8.2f   max %8.2f%s" % (name, median, low, high, verdict))


def launch_shells(env, target, count):
    out = run(env, "terminal", "launch", "shell", "--target", target, "--count", str(count), "--", "--norc", "--noprofile")
    return out.split()


def close_all(env):
    run(env, "terminal", "close", "--all", "--grace", "0.5", check=False)


def main():
    print("binary: %s" % BINARY)
    print("machine: %s, %d cores" % (os.uname().machine, os.cpu_count()))
    report("spawn baseline (/bin/true)", timed(lambda: subprocess.run(["/bin/true"]), 50))
    root, env = world()
    try:
        report("mahavishnu --version", timed(lambda: run(env, "--version"), 50), 10)
        for target in ("pty", "tmux"):
            if target == "tmux" and shutil.which("tmux") is None:
                print("tmux not installed: skipping the tmux figures")
                continue
            launches = []
            for _ in range(5):
                started = time.perf_counter()
                ids = launch_shells(env, target, 50)
                launches.append((time.perf_counter() - started) * 1000)
                assert len(ids) == 50
                listed = items(json.loads(run(env, "--output", "json", "terminal", "list")), "instances")
                assert all(i["state"] in ("running", "waiting") for i in listed), listed
                close_all(env)
            report("launch 50 shells until all run (%s)" % target, (statistics.median(launches), min(launches), max(launches)),
                   2000 if target == "pty" else 3000)

            launch_shells(env, target, 50)
            time.sleep(2)
            report("terminal list, 50 sessions recorded (%s)" % target, timed(lambda: run(env, "terminal", "list"), 30), 10)
            if target == "tmux":
                # The floor under a tmux-backed list: one tmux client asking the server for its panes.
                socket = env["MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME"]
                query = ["tmux", "-L", socket, "list-panes", "-a", "-F", "#{session_name} #{pane_pid} #{pane_dead}"]
                report("  of which: tmux list-panes alone", timed(lambda: subprocess.run(query, stdout=subprocess.DEVNULL), 30))
            close_all(env)

            session = launch_shells(env, target, 1)[0]
            run(env, "terminal", "wait", session, "--waiting")
            counter = iter(range(10**6))

            def send_and_wait():
                n = next(counter)
                run(env, "terminal", "send", session, "echo MARK%d-$((1+1))" % n)
                run(env, "terminal", "wait", session, "--for", "MARK%d-2" % n)

            report("terminal send + terminal wait --for (%s)" % target, timed(send_and_wait, 30), 20 if target == "pty" else 60)
            close_all(env)

            # Closing many at once: 200 shells, which end on SIGHUP, closed by one `close --all`.
            closes = []
            for _ in range(3):
                launch_shells(env, target, 200)
                time.sleep(1)
                started = time.perf_counter()
                run(env, "terminal", "close", "--all")
                closes.append((time.perf_counter() - started) * 1000)
                assert items(json.loads(run(env, "--output", "json", "terminal", "list")), "instances") == []
            report("close --all, 200 sessions (%s)" % target, (statistics.median(closes), min(closes), max(closes)), 1000)

        session = launch_shells(env, "pty", 1)[0]
        run(env, "terminal", "wait", session, "--waiting")
        time.sleep(1)
        pid = json.loads(run(env, "--output", "json", "terminal", "show", session))["pid"]
        host = subprocess.run(["pgrep", "-f", "__pty-host.*--name %s" % session.split(":", 1)[1]], stdout=subprocess.PIPE, text=True).stdout.split()[0]
        with open("/proc/%s/status" % host) as status:
            rss = next(line for line in status if line.startswith("VmRSS")).split()[1]
        print("%-52s %8.2f MB (host pid %s, shell pid %s)  (budget 10 MB)" % ("idle pty host RSS", int(rss) / 1024, host, pid))
        close_all(env)
    finally:
        close_all(env)
        subprocess.run(["tmux", "-L", env["MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME"], "kill-server"], stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
