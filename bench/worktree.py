#!/usr/bin/env python3
"""Benchmarks of worktree sessions, run against a release build of the real binary.

Usage: cargo build --release && python3 bench/worktree.py [target/release/mahavishnu]

- launch 10: `terminal launch shell --target pty --worktree --count 10` on a repository of 10,000 files
  (100 directories of 100), until all ten run; 3 runs, alternating with git alone making 10 worktrees.
- diff --stat: `terminal diff ID --stat` on a session whose worktree has 100 changed files (all of them
  tracked files, then half of them new files); 30 runs each.

Set TMPDIR to run it on another filesystem (the repository and the worktrees are made there).
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


def report(name, samples, budget):
    median = statistics.median(samples)
    verdict = "ok" if median <= budget else "OVER"
    print("%-52s median %8.1f ms   min %8.1f   max %8.1f  (budget %g ms: %s)"
          % (name, median, min(samples), max(samples), budget, verdict))


def main():
    root = tempfile.mkdtemp(prefix="mvbench")
    repo = os.path.join(root, "repo")
    env = dict(os.environ, MAHAVISHNU_STATE_DIR=os.path.join(root, "state"), MAHAVISHNU_RUNTIME_DIR=os.path.join(root, "run"),
               MAHAVISHNU_CONFIG=os.path.join(root, "config.toml"), GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    with open(env["MAHAVISHNU_CONFIG"], "w") as config:
        config.write('[worktree]\ndir = "%s"\n' % os.path.join(root, "worktrees"))

    def run(*args):
        result = subprocess.run([BINARY, *args], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise SystemExit("mahavishnu %s: %s" % (" ".join(args), result.stderr))
        return result.stdout

    try:
        os.makedirs(repo)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        for d in range(100):
            os.makedirs(os.path.join(repo, "d%02d" % d))
            for f in range(100):
                with open(os.path.join(repo, "d%02d" % d, "f%03d.txt" % f), "w") as out:
                    out.write("file %d %d\n" % (d, f))
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-qm", "10,000 files"], cwd=repo, check=True, env=env)
        print("binary: %s" % BINARY)
        print("machine: %s, %d cores" % (os.uname().machine, os.cpu_count()))

        # Rounds of git alone making 10 worktrees of this repository one after another (the floor, what
        # a user would run by hand) and of Mahavishnu launching 10 worktree sessions, in alternating
        # order, nothing deleted in between: this disk's speed drifts, and deleting 100,000 files slows
        # the next minutes down.
        floors, launches = [], []
        for n in range(3):
            def floor():
                started = time.perf_counter()
                for i in range(10):
                    subprocess.run(["git", "worktree", "add", "-q", "-b", "floor-%d-%d" % (n, i),
                                    os.path.join(root, "floor", "%d-%d" % (n, i)), "HEAD"], cwd=repo, check=True)
                floors.append((time.perf_counter() - started) * 1000)

            def launch():
                started = time.perf_counter()
                ids = run("terminal", "launch", "shell", "--target", "pty", "--worktree", "--count", "10",
                          "--name", "b%d" % n).split()
                launches.append((time.perf_counter() - started) * 1000)
                assert len(ids) == 10, ids

            for step in ((floor, launch) if n % 2 == 0 else (launch, floor)):
                step()
            print("round %d: git alone %.0f ms, launch %.0f ms (ratio %.2f)"
                  % (n, floors[-1], launches[-1], launches[-1] / floors[-1]))
        report("git worktree add x10 alone (the floor)", floors, 3000)
        report("launch 10 worktree sessions, 10,000 files", launches, 3000)
        run("terminal", "close", "--all", "--prune", "--force", "--grace", "0.2")

        def diff_figure(name, new_files):
            session = run("terminal", "launch", "shell", "--target", "pty", "--worktree", "--name", name).strip()
            shown = json.loads(run("--output", "json", "terminal", "show", session))
            for f in range(100):
                path = os.path.join(shown["cwd"], "d%02d" % f, "f%03d.txt" % f)
                if f < new_files:
                    path = path.replace(".txt", "-new.txt")
                with open(path, "a") as out:
                    out.write("changed\n")
            stat = run("terminal", "diff", session, "--stat")
            assert "100 files changed" in stat, stat
            diffs = []
            for _ in range(30):
                started = time.perf_counter()
                run("terminal", "diff", session, "--stat")
                diffs.append((time.perf_counter() - started) * 1000)
            report("terminal diff --stat, 100 changed files (%d new)" % new_files, diffs, 50)

        diff_figure("modified", 0)
        diff_figure("half-new", 50)
        run("terminal", "close", "--all", "--prune", "--force", "--grace", "0.2")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
