#!/usr/bin/env python3
"""Benchmarks of workflows across repositories, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/workflows.py [target/release/mahavishnu]

1. `sweep --parallel 8 -- git status --short` over 100 real git repositories (each with 20 committed
   files and one changed), 10 runs after one unmeasured run.
2. `repos list` of a catalog of 1,000 repositories (every one a real directory with `.git`, so that
   `present` is looked at), and `repos list --tag` of a tenth of them, 30 runs each.
3. For scale: `git status --short` run 100 times one after another from this script, and the spawn of
   `mahavishnu --version`.

Every figure is measured from this script (it includes starting the process) and reported as the
median with the range; the machine is noisy, so ratios say more than single figures.
"""

import os
import shutil
import subprocess
import sys
import tempfile

# The terminal benchmark's helpers: run the binary, time a step, report a median against its budget.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import terminal  # noqa: E402
from terminal import report, run  # noqa: E402


def world():
    root = tempfile.mkdtemp(prefix="mvwf")
    env = dict(os.environ)
    env.update(
        MAHAVISHNU_STATE_DIR=os.path.join(root, "state"),
        MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
        MAHAVISHNU_CONFIG=os.path.join(root, "config.toml"),
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    open(env["MAHAVISHNU_CONFIG"], "w").close()
    return root, env


def timed(fn, repeat):
    fn()  # unmeasured: caches warm
    return terminal.timed(fn, repeat)


def git_repository(path, env, files=20):
    os.makedirs(path)
    for n in range(files):
        with open(os.path.join(path, "file%02d.txt" % n), "w") as f:
            f.write("line %d\n" % n)
    subprocess.run(["git", "init", "-q", path], check=True, env=env)
    subprocess.run(["git", "-C", path, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", path, "commit", "-qm", "first"], check=True, env=env)
    with open(os.path.join(path, "file00.txt"), "a") as f:
        f.write("changed\n")


def sweep_of_100():
    root, env = world()
    fleet = os.path.join(root, "fleet")
    for n in range(100):
        git_repository(os.path.join(fleet, "repo-%03d" % n), env)
    run(env, "repos", "scan", fleet, "--tag", "fleet")
    sweep = lambda: run(env, "sweep", "--tag", "fleet", "--parallel", "8", "-o", "json", "--", "git", "status", "--short")
    swept = timed(sweep, 10)
    report("sweep --parallel 8 -- git status --short, 100 repos", swept, 1000)
    one_by_one = lambda: [
        subprocess.run(["git", "-C", os.path.join(fleet, "repo-%03d" % n), "status", "--short"], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        for n in range(100)
    ]
    serial = timed(one_by_one, 3)
    report("for scale: git status --short 100 times, one by one", serial)
    print("ratio sweep / one by one: %.2f" % (swept[0] / serial[0]))
    shutil.rmtree(root)


def catalog_of_1000():
    root, env = world()
    fleet = os.path.join(root, "many")
    # Real directories with `.git`, without the cost of 1,000 `git init`s: what `present` looks at.
    lines = []
    for n in range(1000):
        path = os.path.join(fleet, "repo-%04d" % n)
        os.makedirs(os.path.join(path, ".git"))
        tags = '["tenth"]' if n % 10 == 0 else '["all"]'
        lines.append('[repos.repo-%04d]\npath = "%s"\nkind = "rust"\ntags = %s\n' % (n, path, tags))
    with open(os.path.join(root, "repos.toml"), "w") as f:
        f.write("\n".join(lines))
    listed = run(env, "repos", "list", "-o", "json")
    assert listed.count('"name"') == 1000, "the catalog lists 1,000"
    report("repos list, 1,000 repos (table)", timed(lambda: run(env, "repos", "list"), 30), 20)
    report("repos list -o json, 1,000 repos", timed(lambda: run(env, "repos", "list", "-o", "json"), 30), 20)
    report("repos list --tag tenth (100 of 1,000)", timed(lambda: run(env, "repos", "list", "--tag", "tenth"), 30), 20)
    report("for scale: mahavishnu --version", timed(lambda: run(env, "--version"), 30))
    shutil.rmtree(root)


if __name__ == "__main__":
    print("machine: %d cores; %s" % (os.cpu_count(), subprocess.run(["git", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()))
    sweep_of_100()
    catalog_of_1000()
