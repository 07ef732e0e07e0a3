#!/usr/bin/env python3
"""Benchmark of the agent registry, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/agents.py [target/release/mahavishnu]

Writes 1,000 agent files (500 in the project's `.claude/agents`, 250 in the user's, 250 in the
project's `.qwen/agents`, each with a 2 KB body) and times `mahavishnu agents list --output json`,
median of 30 runs, with the spawn of /bin/true as the yardstick.
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


def timed(command, env, cwd, repeat=30):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def main():
    root = tempfile.mkdtemp(prefix="mvbench")
    home, project = os.path.join(root, "home"), os.path.join(root, "project")
    body = ("Review the change for correctness, clarity and tests. " * 40) + "\n"
    layout = [(os.path.join(project, ".claude/agents"), 500, "tools: Read, Grep, Glob\n"),
              (os.path.join(home, ".claude/agents"), 250, "tools: Read\n"),
              (os.path.join(project, ".qwen/agents"), 250, "tools:\n  - read_file\n  - grep_search\n")]
    for directory, count, tools in layout:
        os.makedirs(directory)
        for n in range(count):
            with open(os.path.join(directory, "agent-%04d.md" % n), "w") as out:
                out.write("---\nname: agent-%04d\ndescription: Agent number %d\nmodel: inherit\n%s---\n\n%s" % (n, n, tools, body))
    env = dict(os.environ, HOME=home, MAHAVISHNU_STATE_DIR=os.path.join(root, "state"))
    try:
        listed = items(json.loads(subprocess.run([BINARY, "--output", "json", "agents", "list"], env=env, cwd=project, stdout=subprocess.PIPE, check=True).stdout), "agents")
        assert len(listed) == 750, len(listed)  # 500 project (overriding 250 user) + 250 qwen
        print("binary: %s, machine: %s, %d cores" % (BINARY, os.uname().machine, os.cpu_count()))
        print("spawn baseline (/bin/true)        median %7.2f ms   min %7.2f   max %7.2f" % timed(["/bin/true"], env, project))
        median, low, high = timed([BINARY, "--output", "json", "agents", "list"], env, project)
        verdict = "ok" if median <= 100 else "OVER"
        print("agents list, 1,000 files           median %7.2f ms   min %7.2f   max %7.2f  (budget 100 ms: %s)" % (median, low, high, verdict))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
