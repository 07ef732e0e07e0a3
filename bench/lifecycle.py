#!/usr/bin/env python3
"""Benchmarks of the lifecycle, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/lifecycle.py [target/release/mahavishnu]

Medians of repeated runs, timed from this script (each includes starting a process from Python, shown
first as the spawn baseline). Every run uses its own state directory and scratch repositories.
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


def timed(fn, repeat):
    samples = []
    for n in range(repeat):
        started = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def report(name, figures, budget=None):
    median, low, high = figures
    verdict = "" if budget is None else "  (budget %g ms: %s)" % (budget, "ok" if median <= budget else "OVER")
    print("%-58s median %8.2f ms   min %8.2f   max %8.2f%s" % (name, median, low, high, verdict))


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    root = tempfile.mkdtemp(prefix="mvbench")
    env = dict(os.environ, MAHAVISHNU_STATE_DIR=os.path.join(root, "state"), MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
               MAHAVISHNU_CONFIG=os.path.join(root, "config.toml"), GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    print("binary: %s" % BINARY)
    print("machine: %s, %d cores" % (os.uname().machine, os.cpu_count()))
    report("spawn baseline (/bin/true)", timed(lambda n: subprocess.run(["/bin/true"]), 50))

    def hook(project, event, session, extra=None):
        payload = {"session_id": session, "cwd": project, "hook_event_name": event, **(extra or {})}
        result = subprocess.run([BINARY, "hook"], input=json.dumps(payload).encode(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise SystemExit("hook failed: %s" % result.stderr.decode())

    try:
        bare = os.path.join(root, "bare")
        os.makedirs(bare)
        report("hook SessionStart, no hooks", timed(lambda n: hook(bare, "SessionStart", "bare-%d" % n), 50), 5)

        three = os.path.join(root, "three")
        os.makedirs(three)
        with open(os.path.join(three, ".mahavishnu.toml"), "w") as config:
            config.write('[[hooks.SessionStart]]\ncommand = "true"\n' * 3)
        subprocess.run([BINARY, "trust", three], env=env, check=True, stdout=subprocess.DEVNULL)
        report("hook SessionStart, three trivial command hooks", timed(lambda n: hook(three, "SessionStart", "three-%d" % n), 50), 20)

        slow = os.path.join(root, "slow")
        os.makedirs(slow)
        with open(os.path.join(slow, ".mahavishnu.toml"), "w") as config:
            config.write('[[hooks.SessionEnd]]\ncommand = "sleep 10"\ntimeout = "15s"\n')
        subprocess.run([BINARY, "trust", slow], env=env, check=True, stdout=subprocess.DEVNULL)
        report("hook SessionEnd answers, its hook takes 10 s", timed(lambda n: hook(slow, "SessionEnd", "slow-%d" % n), 20), 50)

        repo = os.path.join(root, "repo")
        os.makedirs(repo)
        git(repo, "init", "-q")
        for d in range(100):
            os.makedirs(os.path.join(repo, "d%02d" % d))
            for f in range(100):
                with open(os.path.join(repo, "d%02d" % d, "f%02d.txt" % f), "w") as out:
                    out.write("file %d %d\n" % (d, f))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "10000 files")

        def checkpoint(n):
            for f in range(100):
                with open(os.path.join(repo, "d%02d" % f, "f00.txt"), "w") as out:
                    out.write("changed %d %d\n" % (n, f))
            result = subprocess.run([BINARY, "checkpoint", "--project", repo], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if result.returncode != 0:
                raise SystemExit("checkpoint failed: %s" % result.stderr.decode())

        report("checkpoint, 10,000 files with 100 changed", timed(checkpoint, 10), 500)
    finally:
        subprocess.run(["pkill", "-f", "__hook-worker"], stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
