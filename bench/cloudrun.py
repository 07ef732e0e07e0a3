#!/usr/bin/env python3
"""Benchmark of deployments to Cloud Run, against the Google Cloud fake the tests use
(crates/cli/tests/support/fake_gcloud.py) and the real Pub/Sub emulator, with a release build.

Usage: cargo build --release && python3 bench/cloudrun.py [target/release/mahavishnu]

Measures, each as a median:
- the apply of the sandcastle example (examples/sandcastle, as deployed to Cloud Run: the same four
  services, a topic and a front door) to 1 and to 3 regions, from nothing, with the fake's long-running
  operations taking 0 ms and 100 ms; 5 fresh applies each;
- `deploy plan` against the 3 deployed regions (nothing to change), 20 runs;
- `deploy rollback web` in 3 regions and in 1, with the traffic updates it made per region, 10 each.
The fake runs each revision's process on this machine, so an apply includes their start-up.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/mahavishnu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "crates/cli/tests/support/fake_gcloud.py")
EXAMPLE = os.path.join(REPO, "examples/sandcastle")
PROJECT, NUMBER = "acme-bench", "123456789012"
REGIONS = ["europe-west1", "us-central1", "asia-east1"]

MANIFEST = """
[sandcastle]
name = "shop"
platform = "cloudrun"

[platforms.cloudrun]
target = "bench"
regions = {regions}

[services.migrate]
kind = "job"
image = "example.test/shop/migrate:1"
timeout = "30s"

[services.webhooks]
image = "example.test/shop/webhooks:1"
ingress = "internal"
health = {{ path = "/healthz", deadline = "20s" }}

[services.worker]
kind = "worker"
image = "example.test/shop/worker:1"
needs = ["migrate"]
subscribes = {{ orders = "/events/orders" }}
health = {{ path = "/healthz", deadline = "20s" }}
invoker = "public"

[services.web]
image = "example.test/shop/web:1"
needs = ["webhooks", "migrate"]
publishes = ["orders"]
health = {{ path = "/healthz", deadline = "20s" }}
env = {{ GREETING = "{greeting}" }}
secrets = {{ SESSION_KEY = "gcp:sm/session-key#latest" }}
invoker = "public"
rollout = {{ steps = [10, 100] }}

[topics.orders]
dead_letter = {{ after = 5 }}

[front_door]
service = "web"
"""


def emulator():
    """Starts the Pub/Sub emulator from the Cloud SDK on a free port; returns (process, endpoint)."""
    root = subprocess.run(["gcloud", "info", "--format=value(installation.sdk_root)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    launcher = os.path.join(root, "platform/pubsub-emulator/bin/cloud-pubsub-emulator")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([launcher, "--host=127.0.0.1", f"--port={port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.1)
    return process, endpoint


class World:
    def __init__(self, delay_ms, pubsub):
        self.root = tempfile.mkdtemp(prefix="mvbench-cr")
        # A copy: the services' Python writes its caches beside them.
        example = os.path.join(self.root, "example")
        shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
        config = {
            "projects": {PROJECT: NUMBER},
            "operation_delay_ms": delay_ms,
            "images": {f"example.test/shop/{name}:1": {"run": f"python3 {name}.py", "dir": example}
                       for name in ("web", "webhooks", "worker", "migrate")},
            "secrets": {f"projects/{PROJECT}/secrets/session-key": {"1": "bench-key"}},
        }
        with open(os.path.join(self.root, "fake.json"), "w") as f:
            json.dump(config, f)
        self.fake = subprocess.Popen(["python3", FAKE, "--config", os.path.join(self.root, "fake.json")],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.url = self.fake.stdout.readline().strip()
        home = os.path.join(self.root, "home")
        os.makedirs(home)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(f'[targets.bench]\nkind = "cloudrun"\nproject = "{PROJECT}"\nendpoint = "{self.url}"\n'
                    f'credentials = "anonymous"\nservice_urls = "{self.url}/run/{{host}}"\n'
                    f'pubsub_endpoint = "{pubsub}"\n')
        self.env = dict(os.environ, MAHAVISHNU_STATE_DIR=os.path.join(self.root, "state"),
                        MAHAVISHNU_RUNTIME_DIR=os.path.join(self.root, "run"), HOME=home,
                        MAHAVISHNU_CONFIG=os.path.join(home, "config.toml"))
        self.work = os.path.join(self.root, "work")
        os.makedirs(self.work)

    def manifest(self, regions, greeting="hello"):
        with open(os.path.join(self.work, "mahavishnu.deploy.toml"), "w") as f:
            f.write(MANIFEST.format(regions=json.dumps(regions), greeting=greeting))

    def run(self, *args, check=True):
        started = time.perf_counter()
        done = subprocess.run([BINARY, *args], env=self.env, cwd=self.work, capture_output=True, text=True)
        took = time.perf_counter() - started
        if check and done.returncode not in (0, 1):
            raise SystemExit(f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}")
        return took, done

    def requests(self):
        with urllib.request.urlopen(self.url + "/_fake/requests") as answer:
            return json.load(answer)

    def clear(self):
        urllib.request.urlopen(urllib.request.Request(self.url + "/_fake/requests/clear", method="POST")).read()

    def close(self):
        self.run("deploy", "destroy", check=False)
        os.killpg(self.fake.pid, signal.SIGTERM)
        self.fake.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def median_ms(values):
    return statistics.median(values) * 1000


def seconds(stamp):
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def startup(world, region):
    """How long the fake took to start the region's revisions and run its job, along the apply's
    path: the slower of migrate and webhooks, then the slower of web and worker."""
    base = f"/v2/projects/{PROJECT}/locations/{region}"
    took = {}
    for name in ("webhooks", "web", "worker"):
        with urllib.request.urlopen(f"{world.url}{base}/services/shop-{name}/revisions") as answer:
            revision = json.load(answer)["revisions"][0]
        ready = next(c for c in revision["conditions"] if c["type"] == "Ready")
        took[name] = seconds(ready["lastTransitionTime"]) - seconds(revision["createTime"])
    with urllib.request.urlopen(f"{world.url}{base}/jobs/shop-migrate/executions") as answer:
        execution = json.load(answer)["executions"][0]
    took["migrate"] = seconds(execution["completionTime"]) - seconds(execution["createTime"])
    return max(took["migrate"], took["webhooks"]) + max(took["web"], took["worker"])


def apply_times(delay_ms, regions, pubsub, runs=5):
    """Wall times of fresh applies, and the same less the fake's start-up of the services along the
    slowest region's path (the regions deploy at once)."""
    times, beyond = [], []
    for _ in range(runs):
        world = World(delay_ms, pubsub)
        try:
            world.manifest(regions)
            took, done = world.run("--output", "json", "deploy", "apply")
            report = json.loads(done.stdout)
            assert report["ok"], done.stdout
            times.append(took)
            beyond.append(took - max(startup(world, region) for region in regions))
        finally:
            world.close()
    return times, beyond


def main():
    if not os.path.exists(BINARY):
        raise SystemExit(f"no {BINARY}: cargo build --release first")
    pubsub, endpoint = emulator()
    try:
        print(f"binary: {BINARY}")
        for delay in (0, 100):
            one, _ = apply_times(delay, REGIONS[:1], endpoint)
            three, beyond = apply_times(delay, REGIONS, endpoint)
            print(f"apply, operations {delay} ms: 1 region {median_ms(one):.0f} ms, 3 regions "
                  f"{median_ms(three):.0f} ms (ratio {statistics.median(three) / statistics.median(one):.2f}), "
                  f"3 regions beyond the services' start-up in the fake {median_ms(beyond):.0f} ms; "
                  f"runs {[round(t * 1000) for t in three]}")

        world = World(100, endpoint)
        try:
            world.manifest(REGIONS)
            world.run("deploy", "apply")
            plans = []
            for _ in range(20):
                took, done = world.run("deploy", "plan")
                assert done.returncode == 0, done.stdout
                plans.append(took)
            print(f"plan against 3 observed regions, nothing to change: median {median_ms(plans):.0f} ms, "
                  f"min {min(plans) * 1000:.0f} ms, max {max(plans) * 1000:.0f} ms")

            world.manifest(REGIONS, greeting="hi")
            world.run("deploy", "apply")
            for regions in (["--region", REGIONS[0]], []):
                rollbacks, updates = [], []
                for i in range(10):
                    world.clear()
                    took, done = world.run("--output", "json", "deploy", "rollback", "web", *regions)
                    assert done.returncode == 0, done.stderr
                    rollbacks.append(took)
                    report = json.loads(done.stdout)
                    writes = [r for r in world.requests() if r["method"] == "PATCH"]
                    updates.append(len(writes))
                    # Back to the newer one, for the next rollback.
                    world.run("deploy", "release", "web", "--to",
                              report["regions"][0]["before"][0][0], *(["--region", REGIONS[0]] if regions else ["--region", REGIONS[0]]))
                    if not regions:
                        for region in REGIONS[1:]:
                            back = next(r for r in report["regions"] if r["region"] == region)["before"][0][0]
                            world.run("deploy", "release", "web", "--to", back, "--region", region)
                label = "1 region" if regions else "3 regions"
                print(f"rollback of web, {label}: median {median_ms(rollbacks):.0f} ms, traffic updates "
                      f"per rollback {sorted(set(updates))}")
        finally:
            world.close()
    finally:
        os.killpg(pubsub.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
