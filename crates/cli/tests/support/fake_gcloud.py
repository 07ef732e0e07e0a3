#!/usr/bin/env python3
"""A FAKE of a subset of the Google Cloud REST APIs, used by the tests.

This is not Google Cloud. The real Google Cloud APIs cannot run on a test
machine, so the tests start this fake instead and point the official clients
at it (the Rust crates with `.with_endpoint("http://127.0.0.1:PORT")` and
anonymous credentials, the Python `google-cloud-run` client with the REST
transport). It speaks the real REST/JSON wire protocol those clients send:
the same paths, methods, query parameters, camelCase JSON field names,
enums as integers (names are accepted too), int64 values as strings,
durations as "300s", timestamps in RFC 3339, google.longrunning.Operation
for the Cloud Run Admin API, compute#operation for Compute Engine, and
Google's error JSON.

What it fakes (see the tests for how it is driven):
  * Cloud Run Admin API v2: services, revisions, jobs, executions, tasks,
    worker pools, operations, IAM policies. Container images are not
    pulled: the config says what each image does (a shell command run as
    a local process, or a failure mode).
  * Secret Manager v1 (read only, secrets come from the config).
  * Cloud Logging v2 entries:list (the processes' stdout and stderr).
  * Cloud Monitoring v3: uptime check configs and the request_count metric.
  * Compute Engine v1: the pieces of a global external load balancer.
  * Routes that stand for the network: /run/HOST/... for a service URL and
    /lb/ADDRESS/... for a load balancer's address.
  * Test controls under /_fake/.

Usage: python3 fake_gcloud.py --config FILE
It binds 127.0.0.1 on a free port, prints one line, http://127.0.0.1:PORT,
and runs until SIGTERM/SIGINT (or until the process that started it is
gone), then kills every process it started (each in its own process group).

The config file is JSON; every key is optional:
  {
    "projects": {"acme": "123456789012"},   project id -> project number
    "operation_delay_ms": 100,              an operation is not done before this
    "startup_timeout_s": 30,                how long a revision may take to answer
    "images": {                             what each container image does
      "example.test/web:1": {"run": "python3 -m http.server $PORT", "dir": "some/dir"},
      "example.test/bad:1": {"fail": "no-listen"}
    },
    "secrets": {"projects/acme/secrets/key": {"1": "value-one"}},
    "state_dir": "some/dir"                 process output files (default: a temp dir)
  }
"fail" is one of missing, no-listen, startup-probe, quota, permission; an
image that is not listed behaves as "missing". "run" goes through `sh -c`
(in "dir"), with the container's args (or a job run's override args)
appended, each quoted.

Routes that are not Google APIs:
  /run/S-NUMBER.L.run.app/...        a service's URL (tag: TAG---S-NUMBER...)
  /lb/ADDRESS/...                    a global forwarding rule's IP address
  GET  /_fake/requests               the API calls so far, [{"method","path"}]
  POST /_fake/requests/clear
  POST /_fake/kill?service=S&location=L[&project=P]
                                     kill the service's processes (no restart)
  POST /_fake/fail-next?method=M&status=N[&path=SUBSTRING]
                                     the next matching API call fails once

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import http.client
import http.server
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

LOCK = threading.RLock()

# --------------------------------------------------------------------------
# Helpers


def ts(t: float | None = None) -> str:
    if t is None:
        t = time.time()
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(s: str) -> float:
    s = s.strip()
    m = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", s
    )
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {s!r}")
    date, clock, frac, zone = m.groups()
    base = datetime.datetime.fromisoformat(f"{date}T{clock}")
    if zone in ("Z", "z"):
        tz = datetime.timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        hh, mm = zone[1:].split(":")
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(hh), minutes=int(mm)))
    base = base.replace(tzinfo=tz)
    return base.timestamp() + (float(frac) if frac else 0.0)


def parse_duration(s, default: float) -> float:
    if s is None or s == "":
        return default
    if isinstance(s, (int, float)):
        return float(s)
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)s", str(s).strip())
    if not m:
        return default
    return float(m.group(1))


def letters(n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(random.choice(alphabet) for _ in range(n))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etag_bytes(s: str) -> bytes:
    """Policy etags are bytes; compare them decoded, whatever base64 alphabet the client used."""
    s = str(s).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4))
    except ValueError:
        return s.encode()


def new_etag() -> str:
    # Policy.etag is a bytes field: its JSON form is base64.
    return base64.b64encode(os.urandom(8)).decode()


def new_fingerprint() -> str:
    # Compute's fingerprints are bytes too, in the URL-safe alphabet its clients decode.
    return base64.urlsafe_b64encode(os.urandom(8)).decode()


def strip_defaults(o):
    """Drop proto3 default values, so that two spellings of one message compare equal."""
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            v = strip_defaults(v)
            if v in (None, {}, [], "", 0, False) and not (v is True):
                continue
            out[k] = v
        return out
    if isinstance(o, list):
        return [strip_defaults(x) for x in o]
    return o


def canon(o) -> str:
    return json.dumps(strip_defaults(o), sort_keys=True)


GRPC_STATUS = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
HTTP_STATUS_NAME = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error in Google's JSON error format."""

    def __init__(self, http_status: int, status: str, message: str, details=None):
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.details = details or []

    def body(self):
        e = {"code": self.http_status, "message": self.message, "status": self.status}
        if self.details:
            e["details"] = self.details
        return {"error": e}


def not_found(msg):
    return ApiError(404, "NOT_FOUND", msg)


def already_exists(msg):
    return ApiError(409, "ALREADY_EXISTS", msg)


def invalid(msg):
    return ApiError(400, "INVALID_ARGUMENT", msg)


def precondition(msg):
    return ApiError(400, "FAILED_PRECONDITION", msg)


class ComputeError(Exception):
    """An error in Compute Engine's JSON error format."""

    def __init__(self, http_status: int, reason: str, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message

    def body(self):
        return {
            "error": {
                "code": self.http_status,
                "message": self.message,
                "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
            }
        }


# --------------------------------------------------------------------------
# Enums of the Cloud Run Admin API (names -> numbers, from the proto files)

_CONDITION_STATE = {"STATE_UNSPECIFIED": 0, "CONDITION_PENDING": 1, "CONDITION_RECONCILING": 2,
                    "CONDITION_FAILED": 3, "CONDITION_SUCCEEDED": 4}
_ENUMS = {
    "ingress": {"INGRESS_TRAFFIC_UNSPECIFIED": 0, "INGRESS_TRAFFIC_ALL": 1,
                "INGRESS_TRAFFIC_INTERNAL_ONLY": 2, "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER": 3,
                "INGRESS_TRAFFIC_NONE": 4},
    "launchStage": {"LAUNCH_STAGE_UNSPECIFIED": 0, "EARLY_ACCESS": 1, "ALPHA": 2, "BETA": 3,
                    "GA": 4, "DEPRECATED": 5, "UNIMPLEMENTED": 6, "PRELAUNCH": 7},
    "executionEnvironment": {"EXECUTION_ENVIRONMENT_UNSPECIFIED": 0,
                             "EXECUTION_ENVIRONMENT_GEN1": 1, "EXECUTION_ENVIRONMENT_GEN2": 2},
    "encryptionKeyRevocationAction": {"ENCRYPTION_KEY_REVOCATION_ACTION_UNSPECIFIED": 0,
                                      "PREVENT_NEW": 1, "SHUTDOWN": 2},
    "egress": {"VPC_EGRESS_UNSPECIFIED": 0, "ALL_TRAFFIC": 1, "PRIVATE_RANGES_ONLY": 2},
    "scalingMode": {"SCALING_MODE_UNSPECIFIED": 0, "AUTOMATIC": 1, "MANUAL": 2},
    "medium": {"MEDIUM_UNSPECIFIED": 0, "MEMORY": 1},
    "state": _CONDITION_STATE,
    "severity": {"SEVERITY_UNSPECIFIED": 0, "ERROR": 1, "WARNING": 2, "INFO": 3},
    "completionStatus": {"COMPLETION_STATUS_UNSPECIFIED": 0, "EXECUTION_SUCCEEDED": 1,
                         "EXECUTION_FAILED": 2, "EXECUTION_RUNNING": 3,
                         "EXECUTION_PENDING": 4, "EXECUTION_CANCELLED": 5},
}
_TYPE_ENUM = {
    "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED": 0, "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST": 1,
    "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION": 2,
    "INSTANCE_SPLIT_ALLOCATION_TYPE_UNSPECIFIED": 0, "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST": 1,
    "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION": 2,
}

# Condition reasons (google.cloud.run.v2.Condition)
REASON_CONTAINER_MISSING = 6
REASON_SECRETS_ACCESS_CHECK_FAILED = 12
REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR = 6
EXECUTION_REASON_NON_ZERO_EXIT_CODE = 2
EXECUTION_REASON_CANCELLED = 3

LATEST, REVISION = 1, 2
PENDING, RECONCILING, FAILED, SUCCEEDED = 1, 2, 3, 4


# google.monitoring.v3.UptimeCheckConfig
_MON_ENUMS = {
    "requestMethod": {"METHOD_UNSPECIFIED": 0, "GET": 1, "POST": 2},
    "contentType": {"TYPE_UNSPECIFIED": 0, "URL_ENCODED": 1, "USER_PROVIDED": 2},
    "checkerType": {"CHECKER_TYPE_UNSPECIFIED": 0, "STATIC_IP_CHECKERS": 1, "VPC_CHECKERS": 3},
    "selectedRegions": {"REGION_UNSPECIFIED": 0, "USA": 1, "EUROPE": 2, "SOUTH_AMERICA": 3,
                        "ASIA_PACIFIC": 4, "USA_OREGON": 5, "USA_IOWA": 6, "USA_VIRGINIA": 7},
    "matcher": {"CONTENT_MATCHER_OPTION_UNSPECIFIED": 0, "CONTAINS_STRING": 1,
                "NOT_CONTAINS_STRING": 2, "MATCHES_REGEX": 3, "NOT_MATCHES_REGEX": 4,
                "MATCHES_JSON_PATH": 5, "NOT_MATCHES_JSON_PATH": 6},
    "jsonMatcher": {"JSON_PATH_MATCHER_OPTION_UNSPECIFIED": 0, "EXACT_MATCH": 1, "REGEX_MATCH": 2},
    "statusClass": {"STATUS_CLASS_UNSPECIFIED": 0, "STATUS_CLASS_1XX": 100, "STATUS_CLASS_2XX": 200,
                    "STATUS_CLASS_3XX": 300, "STATUS_CLASS_4XX": 400, "STATUS_CLASS_5XX": 500,
                    "STATUS_CLASS_ANY": 1000},
}


def norm_enums(o, table=None):
    """Enum names in a request become numbers; everything else is kept as given."""
    table = _ENUMS if table is None else table
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            if isinstance(v, str) and k == "type" and v in _TYPE_ENUM and table is _ENUMS:
                out[k] = _TYPE_ENUM[v]
            elif isinstance(v, str) and k in table and v in table[k]:
                out[k] = table[k][v]
            elif isinstance(v, list) and k in table:
                out[k] = [table[k].get(x, x) if isinstance(x, str) else x for x in v]
            else:
                out[k] = norm_enums(v, table)
        return out
    if isinstance(o, list):
        return [norm_enums(x, table) for x in o]
    return o


def as_int(v, default=0):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------
# Processes


class Proc:
    """A local process standing for a container instance, in its own process group."""

    ENV_PASS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")

    def __init__(self, fake, cmd, cwd, env, on_line, name):
        self.fake = fake
        self.name = name
        self.port = as_int(env.get("PORT"), 0) or None
        full_env = {k: os.environ[k] for k in self.ENV_PASS if k in os.environ}
        full_env.update(env)
        if cwd and not os.path.isdir(cwd):
            cwd = None
        self.p = subprocess.Popen(
            ["sh", "-c", cmd], cwd=cwd or fake.state_dir, env=full_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.killed = False
        self.started = time.time()
        fake.register_proc(self)
        logf = os.path.join(fake.state_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".log")
        self.logf = open(logf, "a", encoding="utf-8", errors="replace")
        self.threads = []
        for stream, pipe in (("stdout", self.p.stdout), ("stderr", self.p.stderr)):
            t = threading.Thread(target=self._pump, args=(stream, pipe, on_line), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, stream, pipe, on_line):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                self.logf.write(f"{stream}: {line}\n")
                self.logf.flush()
            except ValueError:
                pass
            try:
                on_line(stream, line)
            except Exception:  # noqa: BLE001 - a log line must never kill the pump
                pass
        pipe.close()

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait(self, timeout=None):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self.threads:
            t.join(2)
        return rc

    def kill(self):
        self.killed = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # Only while the leader is not reaped: once it is, its pid may already be another
            # process's (pids wrap around quickly on a busy machine), and that is not ours to kill.
            if self.p.poll() is not None:
                break
            try:
                os.killpg(self.p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if sig == signal.SIGTERM:
                try:
                    self.p.wait(1.5)
                except subprocess.TimeoutExpired:
                    pass
        try:
            self.p.wait(2)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------
# Long-running operations (google.longrunning.Operation)


class Operation:
    def __init__(self, fake, project, location, type_name, meta_fn):
        self.fake = fake
        self.id = str(uuid.uuid4())
        self.name = f"projects/{project}/locations/{location}/operations/{self.id}"
        self.type_name = type_name
        self.meta_fn = meta_fn
        self.t0 = time.time()
        self.outcome = None  # ("response", dict) or ("error", (code, message))
        self.settled = threading.Event()

    def finish(self, response=None, error=None):
        with LOCK:
            if error is not None:
                self.outcome = ("error", error)
            else:
                self.outcome = ("response", response)
        self.settled.set()

    def done(self) -> bool:
        return self.outcome is not None and time.time() >= self.t0 + self.fake.delay

    def wait(self, timeout):
        end = time.time() + timeout
        self.settled.wait(max(0.0, end - time.time()))
        rest = self.t0 + self.fake.delay - time.time()
        if rest > 0 and time.time() + rest <= end:
            time.sleep(rest)

    def render(self):
        with LOCK:
            meta = self.meta_fn()
            d = {"name": self.name,
                 "metadata": {"@type": f"type.googleapis.com/google.cloud.run.v2.{self.type_name}",
                              **meta}}
            if self.done():
                d["done"] = True
                kind, val = self.outcome
                if kind == "error":
                    code, msg = val
                    d["error"] = {"code": code, "message": msg}
                else:
                    d["response"] = {
                        "@type": f"type.googleapis.com/google.cloud.run.v2.{self.type_name}", **val}
            else:
                d["done"] = False
            return d


# --------------------------------------------------------------------------
# Cloud Run: services and worker pools (workloads), revisions


NO_LISTEN_MSG = (
    "The user-provided container failed to start and listen on the port defined provided by "
    "the PORT={port} environment variable within the allocated timeout. This can happen when "
    "the container port is misconfigured or if the timeout is too short. The health check "
    "timeout can be extended. Logs for this revision might contain more information."
)
STARTUP_PROBE_MSG = (
    'STARTUP HTTP probe failed 3 times consecutively for container "{container}" on path '
    "{path}. The instance was not started."
)
QUOTA_MSG = (
    "Quota exceeded for quota metric 'Total CPU allocation, per project per region' and limit "
    "'Total CPU allocation, per project per region per minute' of service 'run.googleapis.com' "
    "for consumer 'project_number:{number}'."
)
OUTPUT_ONLY = {
    "uid", "generation", "createTime", "updateTime", "deleteTime", "expireTime", "creator",
    "lastModifier", "observedGeneration", "terminalCondition", "conditions",
    "latestReadyRevision", "latestCreatedRevision", "trafficStatuses", "uri", "urls",
    "reconciling", "etag", "instanceSplitStatuses", "executionCount", "latestCreatedExecution",
    "satisfiesPzs", "@type",
}


class Revision:
    def __init__(self, w, short, template, number):
        self.w = w
        self.short = short
        self.uid = str(uuid.uuid4())
        self.template = copy.deepcopy(template)
        self.number = number
        self.create_time = time.time()
        self.ready_time = None
        self.state = "pending"  # pending | ready | failed
        self.message = ""
        self.reason = None  # (field, value)
        self.op_error = None  # (code, message) when the operation must fail this way
        self.procs: list[Proc] = []
        self.rr = 0
        self.stats = []  # (time, status, latency_ms)
        self.settled = threading.Event()
        self.deleted = False
        self.etag = new_etag()

    @property
    def full(self):
        return f"{self.w.full}/revisions/{self.short}"

    def containers(self):
        return self.template.get("containers") or [{}]

    def live_procs(self):
        return [p for p in self.procs if p.alive()]

    def next_proc(self):
        live = self.live_procs()
        if not live:
            return None
        self.rr += 1
        return live[self.rr % len(live)]

    def stop(self):
        procs, self.procs = self.procs, []
        for p in procs:
            p.kill()

    def render(self):
        t = self.template
        if self.state == "ready":
            ready = {"type": "Ready", "state": SUCCEEDED, "lastTransitionTime": ts(self.ready_time)}
            health = {"type": "ContainerHealthy", "state": SUCCEEDED,
                      "lastTransitionTime": ts(self.ready_time)}
            res = {"type": "ResourcesAvailable", "state": SUCCEEDED,
                   "lastTransitionTime": ts(self.ready_time)}
        elif self.state == "failed":
            ready = {"type": "Ready", "state": FAILED, "message": self.message,
                     "lastTransitionTime": ts(self.ready_time)}
            if self.reason:
                ready[self.reason[0]] = self.reason[1]
            health = {"type": "ContainerHealthy", "state": FAILED, "message": self.message,
                      "lastTransitionTime": ts(self.ready_time)}
            if self.reason and self.reason[0] == "revisionReason":
                health["revisionReason"] = self.reason[1]
            res = {"type": "ResourcesAvailable",
                   "state": FAILED if self.op_error else SUCCEEDED,
                   "lastTransitionTime": ts(self.ready_time)}
            if self.op_error:
                res["message"] = self.op_error[1]
        else:
            now = ts(self.create_time)
            ready = {"type": "Ready", "state": RECONCILING, "lastTransitionTime": now}
            health = {"type": "ContainerHealthy", "state": RECONCILING, "lastTransitionTime": now}
            res = {"type": "ResourcesAvailable", "state": RECONCILING, "lastTransitionTime": now}
        d = {
            "name": self.full,
            "uid": self.uid,
            "generation": "1",
            "createTime": ts(self.create_time),
            "updateTime": ts(self.ready_time or self.create_time),
            "launchStage": t.get("launchStage", self.w.body.get("launchStage", 4)) or 4,
            "conditions": [ready, health, res],
            "observedGeneration": "1",
            "reconciling": self.state == "pending",
            "logUri": self.w.fake.log_uri(self.w, self.short),
            "etag": self.etag,
        }
        for k in ("labels", "annotations", "scaling", "vpcAccess", "containers", "volumes",
                  "executionEnvironment", "encryptionKey", "serviceAccount", "timeout",
                  "maxInstanceRequestConcurrency", "sessionAffinity", "nodeSelector",
                  "gpuZonalRedundancyDisabled", "serviceMesh", "encryptionKeyRevocationAction",
                  "encryptionKeyShutdownDuration"):
            if k in t:
                d[k] = copy.deepcopy(t[k])
        if self.w.kind == "services":
            d["service"] = self.w.full
        return d


class Workload:
    """A Cloud Run service (kind "services") or worker pool (kind "workerPools")."""

    def __init__(self, fake, kind, project, location, name):
        self.fake = fake
        self.kind = kind
        self.project = project
        self.location = location
        self.name = name
        self.uid = str(uuid.uuid4())
        self.body = {}
        self.generation = 0
        self.observed = 0
        self.create_time = time.time()
        self.update_time = self.create_time
        self.revisions: dict[str, Revision] = {}
        self.rev_count = 0
        self.latest_created: Revision | None = None
        self.latest_ready: Revision | None = None
        self.applied = []  # [{"type", "revision", "percent", "tag"}] actually serving
        self.reconciling = False
        self.terminal = {"state": PENDING, "message": ""}
        self.terminal_time = time.time()
        self.iam = {"version": 1, "etag": new_etag(), "bindings": []}
        self.etag = new_etag()
        self.deleted = False

    @property
    def full(self):
        return f"projects/{self.project}/locations/{self.location}/{self.kind}/{self.name}"

    @property
    def type_name(self):
        return "Service" if self.kind == "services" else "WorkerPool"

    def host(self, tag=None):
        number = self.fake.number(self.project)
        h = f"{self.name}-{number}.{self.location}.run.app"
        return f"{tag}---{h}" if tag else h

    def url(self, tag=None):
        return f"{self.fake.base_url}/run/{self.host(tag)}"

    def split_key(self):
        return "traffic" if self.kind == "services" else "instanceSplits"

    def spec_split(self):
        split = self.body.get(self.split_key())
        if not split:
            split = [{"type": LATEST, "percent": 100}]
        return split

    def render(self):
        d = copy.deepcopy(self.body)
        d.update({
            "name": self.full,
            "uid": self.uid,
            "generation": str(self.generation),
            "createTime": ts(self.create_time),
            "updateTime": ts(self.update_time),
            "creator": "fake-caller@example.com",
            "lastModifier": "fake-caller@example.com",
            "observedGeneration": str(self.observed),
            "reconciling": self.reconciling,
            "etag": self.etag,
        })
        d.setdefault("launchStage", 4)
        if self.kind == "services":
            d.setdefault("ingress", 1)
        d[self.split_key()] = copy.deepcopy(self.spec_split())
        term = {"type": "Ready", "state": self.terminal["state"],
                "lastTransitionTime": ts(self.terminal_time)}
        if self.terminal.get("message"):
            term["message"] = self.terminal["message"]
        d["terminalCondition"] = term
        st = self.terminal["state"]
        d["conditions"] = [
            {"type": "ConfigurationsReady", "state": st, "lastTransitionTime": ts(self.terminal_time)},
            {"type": "RoutesReady", "state": st, "lastTransitionTime": ts(self.terminal_time)},
        ]
        if self.latest_ready:
            d["latestReadyRevision"] = self.latest_ready.full
        if self.latest_created:
            d["latestCreatedRevision"] = self.latest_created.full
        statuses = []
        for a in self.applied:
            s = {"type": a["type"], "percent": a["percent"]}
            if a.get("revision") and a["type"] != LATEST:
                s["revision"] = a["revision"]
            if a.get("tag"):
                s["tag"] = a["tag"]
                if self.kind == "services":
                    s["uri"] = self.url(a["tag"])
            statuses.append(s)
        if self.kind == "services":
            d["trafficStatuses"] = statuses
            d["uri"] = self.url()
            d["urls"] = [self.url()]
        else:
            d["instanceSplitStatuses"] = statuses
        return d


# --------------------------------------------------------------------------
# Cloud Run jobs, executions, tasks


class Job:
    def __init__(self, fake, project, location, name):
        self.fake = fake
        self.project = project
        self.location = location
        self.name = name
        self.uid = str(uuid.uuid4())
        self.body = {}
        self.generation = 0
        self.observed = 0
        self.create_time = time.time()
        self.update_time = self.create_time
        self.executions: dict[str, Execution] = {}
        self.exec_count = 0
        self.terminal = {"state": PENDING, "message": ""}
        self.reconciling = False
        self.iam = {"version": 1, "etag": new_etag(), "bindings": []}
        self.etag = new_etag()

    @property
    def full(self):
        return f"projects/{self.project}/locations/{self.location}/jobs/{self.name}"

    def render(self):
        d = copy.deepcopy(self.body)
        d.update({
            "name": self.full, "uid": self.uid, "generation": str(self.generation),
            "createTime": ts(self.create_time), "updateTime": ts(self.update_time),
            "creator": "fake-caller@example.com", "lastModifier": "fake-caller@example.com",
            "observedGeneration": str(self.observed), "reconciling": self.reconciling,
            "executionCount": self.exec_count, "etag": self.etag,
        })
        d.setdefault("launchStage", 4)
        term = {"type": "Ready", "state": self.terminal["state"],
                "lastTransitionTime": ts(self.update_time)}
        if self.terminal.get("message"):
            term["message"] = self.terminal["message"]
            if self.terminal.get("reason"):
                term["reason"] = self.terminal["reason"]
        d["terminalCondition"] = term
        d["conditions"] = []
        live = [e for e in self.executions.values()]
        if live:
            e = live[-1]
            ref = {"name": e.short, "createTime": ts(e.create_time),
                   "completionStatus": {"running": 3, "succeeded": 1, "failed": 2,
                                        "cancelled": 5}[e.state]}
            if e.completion_time:
                ref["completionTime"] = ts(e.completion_time)
            d["latestCreatedExecution"] = ref
        return d


class Task:
    def __init__(self, execution, index):
        self.e = execution
        self.index = index
        self.uid = str(uuid.uuid4())
        self.state = "pending"  # pending | running | succeeded | failed | cancelled
        self.exit_code = None
        self.retried = 0
        self.start_time = None
        self.completion_time = None
        self.proc: Proc | None = None
        self.message = ""

    @property
    def short(self):
        return f"{self.e.short}-task{self.index}"

    def render(self):
        e = self.e
        st = {"pending": PENDING, "running": RECONCILING, "succeeded": SUCCEEDED,
              "failed": FAILED, "cancelled": FAILED}[self.state]
        cond = {"type": "Completed", "state": st, "lastTransitionTime": ts(self.completion_time or self.start_time or e.create_time)}
        if self.message:
            cond["message"] = self.message
        if self.state == "failed":
            cond["executionReason"] = EXECUTION_REASON_NON_ZERO_EXIT_CODE
        if self.state == "cancelled":
            cond["executionReason"] = EXECUTION_REASON_CANCELLED
        tt = e.template.get("template", {})
        d = {
            "name": f"{e.full}/tasks/{self.short}", "uid": self.uid, "generation": "1",
            "createTime": ts(e.create_time), "job": e.job.name, "execution": e.short,
            "containers": copy.deepcopy(tt.get("containers", [])),
            "maxRetries": e.max_retries, "timeout": f"{int(e.timeout)}s",
            "reconciling": self.state in ("pending", "running"),
            "conditions": [cond], "observedGeneration": "1", "index": self.index,
            "retried": self.retried, "logUri": e.log_uri(), "etag": e.etag,
        }
        if "serviceAccount" in tt:
            d["serviceAccount"] = tt["serviceAccount"]
        if self.start_time:
            d["startTime"] = ts(self.start_time)
            d["scheduledTime"] = ts(self.start_time)
        if self.completion_time:
            d["completionTime"] = ts(self.completion_time)
        if self.exit_code is not None:
            d["lastAttemptResult"] = {"exitCode": self.exit_code}
            if self.exit_code != 0:
                d["lastAttemptResult"]["status"] = {"code": 2, "message": self.message}
        return d


class Execution:
    def __init__(self, job, template, task_count, parallelism, timeout, max_retries):
        self.job = job
        self.short = f"{job.name}-{letters(5, string.ascii_lowercase + string.digits)}"
        self.uid = str(uuid.uuid4())
        self.template = template  # ExecutionTemplate with overrides applied
        self.task_count = task_count
        self.parallelism = parallelism
        self.timeout = timeout
        self.max_retries = max_retries
        self.create_time = time.time()
        self.start_time = None
        self.completion_time = None
        self.state = "running"
        self.message = ""
        self.tasks = [Task(self, i) for i in range(task_count)]
        self.cancelled = threading.Event()
        self.settled = threading.Event()
        self.etag = new_etag()

    @property
    def full(self):
        return f"{self.job.full}/executions/{self.short}"

    def log_uri(self):
        return (f"https://console.cloud.google.com/logs/viewer?project={self.job.project}"
                f"&resource=cloud_run_job/job_name/{self.job.name}/location/{self.job.location}")

    def render(self):
        counts = {s: sum(1 for t in self.tasks if t.state == s)
                  for s in ("running", "succeeded", "failed", "cancelled")}
        if self.state == "running":
            done = {"type": "Completed", "state": RECONCILING}
        elif self.state == "succeeded":
            done = {"type": "Completed", "state": SUCCEEDED, "message": self.message}
        elif self.state == "cancelled":
            done = {"type": "Completed", "state": FAILED, "message": self.message,
                    "executionReason": EXECUTION_REASON_CANCELLED}
        else:
            done = {"type": "Completed", "state": FAILED, "message": self.message,
                    "executionReason": EXECUTION_REASON_NON_ZERO_EXIT_CODE}
        done["lastTransitionTime"] = ts(self.completion_time or self.start_time or self.create_time)
        d = {
            "name": self.full, "uid": self.uid, "generation": "1",
            "labels": copy.deepcopy(self.template.get("labels", {})),
            "annotations": copy.deepcopy(self.template.get("annotations", {})),
            "createTime": ts(self.create_time), "updateTime": ts(self.completion_time or self.create_time),
            "launchStage": self.job.body.get("launchStage", 4) or 4,
            "job": self.job.name, "parallelism": self.parallelism, "taskCount": self.task_count,
            "template": copy.deepcopy(self.template.get("template", {})),
            "reconciling": self.state == "running",
            "conditions": [
                {"type": "ResourcesAvailable", "state": SUCCEEDED, "lastTransitionTime": ts(self.create_time)},
                {"type": "Started", "state": SUCCEEDED if self.start_time else PENDING,
                 "lastTransitionTime": ts(self.start_time or self.create_time)},
                done,
            ],
            "observedGeneration": "1",
            "runningCount": counts["running"], "succeededCount": counts["succeeded"],
            "failedCount": counts["failed"], "cancelledCount": counts["cancelled"],
            "retriedCount": sum(t.retried for t in self.tasks),
            "logUri": self.log_uri(), "etag": self.etag,
        }
        if self.start_time:
            d["startTime"] = ts(self.start_time)
        if self.completion_time:
            d["completionTime"] = ts(self.completion_time)
        return d


# --------------------------------------------------------------------------
# The fake


COMPUTE_KINDS = {
    "networkEndpointGroups": "compute#networkEndpointGroup",
    "backendServices": "compute#backendService",
    "urlMaps": "compute#urlMap",
    "targetHttpsProxies": "compute#targetHttpsProxy",
    "targetHttpProxies": "compute#targetHttpProxy",
    "sslCertificates": "compute#sslCertificate",
    "addresses": "compute#address",
    "forwardingRules": "compute#forwardingRule",
    "healthChecks": "compute#healthCheck",
}
COMPUTE_BASE = "https://www.googleapis.com/compute/v1/"
COMPUTE_REF = re.compile(
    r"(?:^|/)(?:projects/([^/]+)/)?(global|regions/[^/]+)/(" + "|".join(COMPUTE_KINDS) + r")/([^/]+)$"
)


class Fake:
    def __init__(self, config):
        self.config = config
        self.projects = {str(k): str(v) for k, v in (config.get("projects") or {}).items()}
        self.delay = max(0.0, float(config.get("operation_delay_ms", 100)) / 1000.0)
        self.startup_timeout = float(config.get("startup_timeout_s", 30))
        self.images = config.get("images") or {}
        self.own_state_dir = not config.get("state_dir")
        self.state_dir = config.get("state_dir") or tempfile.mkdtemp(prefix="fake-gcloud-")
        os.makedirs(self.state_dir, exist_ok=True)
        self.secrets = {}
        for key, versions in (config.get("secrets") or {}).items():
            m = re.fullmatch(r"projects/([^/]+)/secrets/([^/]+)", key)
            if not m:
                continue
            self.secrets[(self.project_id(m.group(1)), m.group(2))] = {
                str(v): val for v, val in versions.items()}
        self.secret_time = time.time()
        self.base_url = ""
        self.procs: list[Proc] = []
        self.ops: dict[str, Operation] = {}
        self.workloads: dict[tuple, Workload] = {}  # (kind, project, location, name)
        self.jobs: dict[tuple, Job] = {}
        self.logs = []
        self.log_seq = 0
        self.uptime = {}  # (project, id) -> config
        self.compute = {}  # (project, scope, collection) -> {name: resource}
        self.compute_ops = {}  # (project, scope, name) -> (ready time, op dict)
        self.compute_request_ids = {}  # (project, requestId) -> (project, scope, op name)
        self.address_seq = 0
        self.requests = []
        self.fail_next = []
        self.stopping = False

    # ---- projects
    def project_id(self, p: str) -> str:
        for pid, num in self.projects.items():
            if p == num:
                return pid
        return p

    def number(self, p: str) -> str:
        p = self.project_id(p)
        if p in self.projects:
            return self.projects[p]
        return str(100000000000 + (int(uuid.uuid5(uuid.NAMESPACE_DNS, p).hex, 16) % 899999999999))

    # ---- processes
    def register_proc(self, p):
        with LOCK:
            self.procs.append(p)

    def kill_all(self):
        with LOCK:
            procs = list(self.procs)
        threads = [threading.Thread(target=p.kill) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)

    def image(self, image: str) -> dict:
        spec = self.images.get(image)
        if spec is None:
            return {"fail": "missing"}
        return spec

    # ---- logs
    def add_log(self, project, rtype, labels, text, stream, entry_labels=None):
        with LOCK:
            self.log_seq += 1
            now = time.time()
            e = {
                "logName": f"projects/{project}/logs/run.googleapis.com%2F{stream}",
                "resource": {"type": rtype, "labels": dict(labels, project_id=project)},
                "textPayload": text,
                "timestamp": ts(now),
                "receiveTimestamp": ts(now),
                "insertId": f"{self.log_seq:08d}{letters(6)}",
                "severity": 500 if stream == "stderr" else 0,
            }
            if entry_labels:
                e["labels"] = entry_labels
            self.logs.append((now, self.log_seq, e))

    def add_request_log(self, rev, method, url, status, agent):
        w = rev.w
        with LOCK:
            self.log_seq += 1
            now = time.time()
            e = {
                "logName": f"projects/{w.project}/logs/run.googleapis.com%2Frequests",
                "resource": {"type": "cloud_run_revision", "labels": {
                    "service_name": w.name, "revision_name": rev.short,
                    "location": w.location, "project_id": w.project,
                    "configuration_name": w.name}},
                "httpRequest": {"requestMethod": method, "requestUrl": url, "status": status,
                                "userAgent": agent},
                "timestamp": ts(now),
                "receiveTimestamp": ts(now),
                "insertId": f"{self.log_seq:08d}{letters(6)}",
                "severity": 500 if status >= 500 else 200,
            }
            self.logs.append((now, self.log_seq, e))

    def log_uri(self, w, rev=None):
        kind = "cloud_run_revision" if w.kind == "services" else "cloud_run_worker_pool"
        return (f"https://console.cloud.google.com/logs/viewer?project={w.project}&resource="
                f"{kind}/{'service_name' if w.kind == 'services' else 'worker_pool_name'}/{w.name}"
                + (f"/revision_name/{rev}" if rev else ""))

    # ---- secrets
    def resolve_secret(self, project, ref):
        secret = ref.get("secret", "")
        version = str(ref.get("version") or "latest")
        m = re.fullmatch(r"projects/([^/]+)/secrets/([^/]+)(?:/versions/([^/]+))?", secret)
        if m:
            key = (self.project_id(m.group(1)), m.group(2))
            if m.group(3):
                version = m.group(3)
        else:
            key = (self.project_id(project), secret)
        versions = self.secrets.get(key)
        if not versions:
            return None
        if version == "latest":
            version = max(versions, key=lambda v: as_int(v))
        return versions.get(version)

    def container_env(self, project, container, errors):
        env = {}
        for i, e in enumerate(container.get("env") or []):
            name = e.get("name")
            if not name:
                continue
            if "valueSource" in e:
                ref = (e.get("valueSource") or {}).get("secretKeyRef") or {}
                val = self.resolve_secret(project, ref)
                if val is None:
                    errors.append(
                        f"spec.template.spec.containers[0].env[{i}].value_from.secret_key_ref.name: "
                        f"Secret {ref.get('secret', '')}/versions/{ref.get('version') or 'latest'} "
                        f"was not found")
                    continue
                env[name] = val
            else:
                env[name] = str(e.get("value", ""))
        return env


FAKE: Fake = None  # type: ignore[assignment]


# --------------------------------------------------------------------------
# Cloud Run behaviour


def sa_of(fake, project, template):
    return template.get("serviceAccount") or (
        f"{fake.number(project)}-compute@developer.gserviceaccount.com")


def check_permission(fake, project, template, containers):
    for c in containers:
        if fake.image(c.get("image", "")).get("fail") == "permission":
            sa = sa_of(fake, project, template)
            raise ApiError(
                403, "PERMISSION_DENIED",
                f"Permission 'iam.serviceaccounts.actAs' denied on service account {sa} "
                f"(or it may not exist).",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                  "reason": "IAM_PERMISSION_DENIED", "domain": "iam.googleapis.com",
                  "metadata": {"permission": "iam.serviceaccounts.actAs"}}])


def http_probe(port, path, timeout=1.0):
    """The status of GET path, or None when nothing answers."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except (OSError, http.client.HTTPException):
        return None


def start_revision(fake: Fake, rev: Revision):
    w = rev.w
    t = rev.template
    c0 = rev.containers()[0]
    image = c0.get("image", "")
    spec = fake.image(image)
    fail = spec.get("fail")
    port_decl = 8080
    for p in c0.get("ports") or []:
        if p.get("containerPort"):
            port_decl = as_int(p["containerPort"], 8080)
    cname = c0.get("name") or "placeholder-1"

    def failed(message, reason=None, op_error=None):
        with LOCK:
            rev.state = "failed"
            rev.message = message
            rev.reason = reason
            rev.op_error = op_error
            rev.ready_time = time.time()
        rev.stop()
        rev.settled.set()

    if fail or ("run" not in spec and not spec.get("exec")):
        time.sleep(0.05)
        if fail == "no-listen":
            failed(NO_LISTEN_MSG.format(port=port_decl),
                   ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
        elif fail == "startup-probe":
            path = ((c0.get("startupProbe") or {}).get("httpGet") or {}).get("path") or "/"
            failed(STARTUP_PROBE_MSG.format(container=cname, path=path),
                   ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
        elif fail == "quota":
            msg = QUOTA_MSG.format(number=fake.number(w.project))
            failed(msg, None, (8, msg))
        else:
            failed(f"Image '{image}' not found.", ("reason", REASON_CONTAINER_MISSING))
        return

    errors = []
    env_base = fake.container_env(w.project, c0, errors)
    if errors:
        failed(errors[0], ("reason", REASON_SECRETS_ACCESS_CHECK_FAILED))
        return
    if w.kind == "services":
        count = max(1, as_int((t.get("scaling") or {}).get("minInstanceCount"), 0))
    else:
        count = max(1, as_int((w.body.get("scaling") or {}).get("manualInstanceCount"), 0))
    cmd = command_line(spec, c0)
    if w.kind == "services":
        rtype = "cloud_run_revision"
        labels = {"service_name": w.name, "revision_name": rev.short, "location": w.location,
                  "configuration_name": w.name}
    else:
        rtype = "cloud_run_worker_pool"
        labels = {"worker_pool_name": w.name, "revision_name": rev.short, "location": w.location}

    def on_line(stream, line):
        fake.add_log(w.project, rtype, labels, line, stream)

    with LOCK:
        if rev.deleted or fake.stopping:
            return
        for i in range(count):
            env = dict(env_base)
            if w.kind == "services":
                env.update({"PORT": str(free_port()), "K_SERVICE": w.name,
                            "K_REVISION": rev.short, "K_CONFIGURATION": w.name})
            else:
                env.update({"K_REVISION": rev.short, "CLOUD_RUN_WORKER_POOL": w.name})
            rev.procs.append(Proc(fake, cmd, spec.get("dir"), env, on_line,
                                  f"{w.kind}-{w.location}-{rev.short}-{i}"))

    if w.kind == "workerPools":
        time.sleep(0.5)
        dead = [p for p in rev.procs if not p.alive()]
        if dead:
            failed(f"The user-provided container exited with code {dead[0].p.returncode} "
                   f"before it was ready. Logs for this revision might contain more information.",
                   ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
            return
        with LOCK:
            rev.state = "ready"
            rev.ready_time = time.time()
        rev.settled.set()
        return

    probe = (c0.get("startupProbe") or {}).get("httpGet")
    path = (probe or {}).get("path") or "/"
    deadline = time.time() + fake.startup_timeout
    pending = list(rev.procs)
    answered = False
    while pending and time.time() < deadline and not rev.deleted and not fake.stopping:
        for p in list(pending):
            if not p.alive():
                failed(NO_LISTEN_MSG.format(port=port_decl),
                       ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
                return
            status = http_probe(p.port, path)
            if status is not None:
                answered = True
                ok = (200 <= status < 400) if probe else status < 500
                if ok:
                    pending.remove(p)
        if pending:
            time.sleep(0.1)
    if pending:
        if probe and answered:
            failed(STARTUP_PROBE_MSG.format(container=cname, path=path),
                   ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
        else:
            failed(NO_LISTEN_MSG.format(port=port_decl),
                   ("revisionReason", REVISION_REASON_HEALTH_CHECK_CONTAINER_ERROR))
        return
    with LOCK:
        rev.state = "ready"
        rev.ready_time = time.time()
    rev.settled.set()


def revision_short(w: Workload, given: str) -> str:
    return given.rsplit("/", 1)[-1]


def apply_workload(fake: Fake, kind, project, location, name, body, creating, allow_missing=False):
    """Create or update a service / worker pool. Returns the Operation."""
    project = fake.project_id(project)
    body = norm_enums(body)
    for k in list(body):
        if k in OUTPUT_ONLY:
            del body[k]
    template = body.get("template") or {}
    containers = template.get("containers") or []
    if not containers:
        raise invalid("template.containers: at least one container must be specified")
    for c in containers:
        if not c.get("image"):
            raise invalid("template.containers[0].image: Container image must be specified.")
    check_permission(fake, project, template, containers)
    split_key = "traffic" if kind == "services" else "instanceSplits"
    split = body.get(split_key) or []
    if split:
        total = sum(as_int(s.get("percent"), 0) for s in split)
        if total != 100:
            raise invalid(f"{'Traffic' if kind == 'services' else 'Instance split'} percentages "
                          f"must add up to 100, got {total}.")
        tags = [s.get("tag") for s in split if s.get("tag")]
        if len(tags) != len(set(tags)):
            raise invalid("Tags must be unique.")
    explicit = template.get("revision")
    if explicit and not explicit.startswith(f"{name}-"):
        raise invalid(f"template.revision: Revision name must use the service name '{name}' as "
                      f"its prefix, followed by '-'.")

    key = (kind, project, location, name)
    with LOCK:
        w = fake.workloads.get(key)
        if creating and w is not None:
            raise already_exists(f"Resource '{name}' already exists.")
        if not creating and w is None:
            if not allow_missing:
                raise not_found(f"Resource '{name}' of kind '{'SERVICE' if kind == 'services' else 'WORKER_POOL'}' "
                                f"in region '{location}' in project '{project}' does not exist.")
        if w is None:
            w = Workload(fake, kind, project, location, name)
            fake.workloads[key] = w
        tkey = canon({k: v for k, v in template.items() if k != "revision"})
        new_rev = None
        if explicit and explicit in w.revisions:
            old = w.revisions[explicit]
            if canon({k: v for k, v in old.template.items() if k != "revision"}) != tkey:
                if w.generation == 0:
                    del fake.workloads[key]
                raise already_exists(
                    f"Revision named '{explicit}' with different configuration already exists.")
        elif (explicit or w.latest_created is None or
              canon({k: v for k, v in w.latest_created.template.items() if k != "revision"}) != tkey):
            w.rev_count += 1
            short = explicit or f"{name}-{w.rev_count:05d}-{letters(3)}"
            new_rev = Revision(w, short, template, w.rev_count)
            w.revisions[short] = new_rev
            w.latest_created = new_rev
        w.body = body
        w.generation += 1
        gen = w.generation
        w.update_time = time.time()
        w.etag = new_etag()
        w.reconciling = True
        w.terminal = {"state": RECONCILING, "message": ""}
        w.terminal_time = time.time()
        op = Operation(fake, project, location, w.type_name, w.render)
        fake.ops[op.name] = op

    if new_rev is not None:
        threading.Thread(target=start_revision, args=(fake, new_rev), daemon=True).start()
    threading.Thread(target=finalize_workload, args=(fake, w, gen, new_rev, op), daemon=True).start()
    return op


def finalize_workload(fake: Fake, w: Workload, gen: int, new_rev, op: Operation):
    with LOCK:
        wants_latest = any((as_int(s.get("type"), 0) or (REVISION if s.get("revision") else LATEST))
                           == LATEST for s in w.spec_split())
        if new_rev is None and wants_latest and w.latest_created is not None:
            # No new revision: LATEST is still the latest created one, which may be starting
            # or may have failed (then this update fails the same way).
            new_rev = w.latest_created
    if new_rev is not None:
        new_rev.settled.wait()
    # Wait for other revisions named by the split that are still starting.
    for _ in range(2):
        with LOCK:
            waiting = [w.revisions[s["revision"].rsplit("/", 1)[-1]]
                       for s in w.spec_split()
                       if s.get("revision") and s["revision"].rsplit("/", 1)[-1] in w.revisions
                       and w.revisions[s["revision"].rsplit("/", 1)[-1]].state == "pending"]
        for r in waiting:
            r.settled.wait(fake.startup_timeout + 5)

    with LOCK:
        current = w.generation == gen
        error = None
        if new_rev is not None and new_rev.state == "failed":
            error = new_rev.op_error or (
                9, f"Revision '{new_rev.short}' is not ready and cannot serve traffic. {new_rev.message}")
        else:
            if new_rev is not None and new_rev.state == "ready":
                w.latest_ready = new_rev
            resolved = []
            for s in w.spec_split() if current else []:
                typ = as_int(s.get("type"), 0) or (REVISION if s.get("revision") else LATEST)
                if typ == LATEST:
                    target = w.latest_ready
                    if target is None:
                        error = (9, f"Revision '{w.latest_created.short if w.latest_created else ''}' "
                                    f"is not ready and cannot serve traffic.")
                        break
                else:
                    short = (s.get("revision") or "").rsplit("/", 1)[-1]
                    target = w.revisions.get(short)
                    if target is None:
                        error = (9, f"Revision '{short}' does not exist.")
                        break
                    if target.state != "ready":
                        error = (9, f"Revision '{short}' is not ready and cannot serve traffic.")
                        break
                a = {"type": typ, "revision": target.short, "percent": as_int(s.get("percent"), 0)}
                if s.get("tag"):
                    a["tag"] = s["tag"]
                resolved.append(a)
            if error is None and current:
                w.applied = resolved
        if current:
            w.observed = gen
            w.reconciling = False
            w.terminal_time = time.time()
            if error:
                w.terminal = {"state": FAILED, "message": error[1]}
            else:
                w.terminal = {"state": SUCCEEDED, "message": ""}
        snapshot = w.render()
    if error:
        op.finish(error=error)
    else:
        op.finish(response=snapshot)


def delete_workload(fake: Fake, w: Workload):
    with LOCK:
        w.deleted = True
        fake.workloads.pop((w.kind, w.project, w.location, w.name), None)
        revs = list(w.revisions.values())
        for r in revs:
            r.deleted = True
        snap = w.render()
        op = Operation(fake, w.project, w.location, w.type_name, lambda: snap)
        fake.ops[op.name] = op
    for r in revs:
        r.stop()
    op.finish(response=snap)
    return op


# ---- jobs


def job_template_errors(fake, job: Job):
    containers = ((job.body.get("template") or {}).get("template") or {}).get("containers") or []
    for c in containers:
        spec = fake.image(c.get("image", ""))
        if spec.get("fail") == "missing":
            return f"Image '{c.get('image', '')}' not found."
    return None


def apply_job(fake: Fake, project, location, name, body, creating, allow_missing=False):
    project = fake.project_id(project)
    body = norm_enums(body)
    for k in list(body):
        if k in OUTPUT_ONLY:
            del body[k]
    tt = (body.get("template") or {}).get("template") or {}
    containers = tt.get("containers") or []
    if not containers:
        raise invalid("template.template.containers: at least one container must be specified")
    check_permission(fake, project, tt, containers)
    key = (project, location, name)
    with LOCK:
        job = fake.jobs.get(key)
        if creating and job is not None:
            raise already_exists(f"Resource '{name}' already exists.")
        if not creating and job is None and not allow_missing:
            raise not_found(f"Resource '{name}' of kind 'JOB' in region '{location}' in project "
                            f"'{project}' does not exist.")
        if job is None:
            job = Job(fake, project, location, name)
            fake.jobs[key] = job
        job.body = body
        job.generation += 1
        job.observed = job.generation
        job.update_time = time.time()
        job.etag = new_etag()
        err = job_template_errors(fake, job)
        if err:
            job.terminal = {"state": FAILED, "message": err, "reason": REASON_CONTAINER_MISSING}
        else:
            job.terminal = {"state": SUCCEEDED, "message": ""}
        op = Operation(fake, project, location, "Job", job.render)
        fake.ops[op.name] = op
        snap = job.render()
    if err:
        op.finish(error=(9, err))
    else:
        op.finish(response=snap)
    return op


def run_job(fake: Fake, job: Job, body):
    body = body or {}
    overrides = body.get("overrides") or {}
    with LOCK:
        if job.terminal["state"] != SUCCEEDED:
            raise precondition(f"Job '{job.name}' is not ready: {job.terminal.get('message', '')}")
        et = copy.deepcopy(job.body.get("template") or {})
        tt = et.setdefault("template", {})
        containers = tt.get("containers") or [{}]
        for i, co in enumerate(overrides.get("containerOverrides") or []):
            target = None
            if co.get("name"):
                target = next((c for c in containers if c.get("name") == co["name"]), None)
            if target is None and i < len(containers):
                target = containers[i]
            if target is None:
                continue
            if co.get("clearArgs"):
                target["args"] = []
            if co.get("args"):
                target["args"] = list(co["args"])
            if co.get("env"):
                env = [e for e in target.get("env", [])
                       if e.get("name") not in {o.get("name") for o in co["env"]}]
                target["env"] = env + list(co["env"])
        task_count = as_int(overrides.get("taskCount"), 0) or as_int(et.get("taskCount"), 0) or 1
        parallelism = as_int(et.get("parallelism"), 0) or task_count
        timeout = parse_duration(overrides.get("timeout") or tt.get("timeout"), 600.0)
        max_retries = as_int(tt["maxRetries"], 3) if "maxRetries" in tt else 3
        image = containers[0].get("image", "")
        spec = fake.image(image)
        if spec.get("fail") == "permission":
            check_permission(fake, job.project, tt, containers)
        e = Execution(job, et, task_count, min(parallelism, task_count), timeout, max_retries)
        job.executions[e.short] = e
        job.exec_count += 1
        op = Operation(fake, job.project, job.location, "Execution", e.render)
        fake.ops[op.name] = op
    if spec.get("fail") == "quota":
        with LOCK:
            e.state = "failed"
            e.message = QUOTA_MSG.format(number=fake.number(job.project))
            e.completion_time = time.time()
        e.settled.set()
        op.finish(error=(8, e.message))
        return op
    threading.Thread(target=execute, args=(fake, e, spec, op), daemon=True).start()
    return op


def command_line(spec, c0):
    """The shell line a container runs: the image's `run` with the container's args appended, or,
    for an image marked `"exec": true` (a base image with a shell), the container's own command and
    args, as a container runtime would run them."""
    args = [str(a) for a in (c0.get("args") or [])]
    if spec.get("exec"):
        return " ".join(shlex.quote(str(a)) for a in (c0.get("command") or []) + args)
    cmd = spec["run"]
    if args:
        cmd = cmd + " " + " ".join(shlex.quote(a) for a in args)
    return cmd


def execute(fake: Fake, e: Execution, spec, op: Operation):
    job = e.job
    tt = e.template.get("template", {})
    c0 = (tt.get("containers") or [{}])[0]
    errors = []
    env_base = fake.container_env(job.project, c0, errors)
    e.start_time = time.time()
    sem = threading.Semaphore(e.parallelism)
    deadline = time.time() + e.timeout

    def run_task(task: Task):
        with sem:
            while True:
                if e.cancelled.is_set():
                    task.state = "cancelled"
                    return
                task.state = "running"
                task.start_time = task.start_time or time.time()
                labels = {"job_name": job.name, "location": job.location}
                entry_labels = {"run.googleapis.com/execution_name": e.short,
                                "run.googleapis.com/task_index": str(task.index),
                                "run.googleapis.com/task_attempt": str(task.retried)}

                def on_line(stream, line):
                    fake.add_log(job.project, "cloud_run_job", labels, line, stream, entry_labels)

                if errors:
                    rc = 1
                    on_line("stderr", errors[0])
                elif "run" not in spec and not spec.get("exec"):
                    rc = 1
                    on_line("stderr", f"Image '{c0.get('image', '')}' cannot be started.")
                else:
                    cmd = command_line(spec, c0)
                    env = dict(env_base)
                    env.update({
                        "CLOUD_RUN_TASK_INDEX": str(task.index),
                        "CLOUD_RUN_TASK_COUNT": str(e.task_count),
                        "CLOUD_RUN_TASK_ATTEMPT": str(task.retried),
                        "CLOUD_RUN_EXECUTION": e.short,
                        "CLOUD_RUN_JOB": job.name,
                    })
                    with LOCK:
                        if fake.stopping:
                            return
                        task.proc = Proc(fake, cmd, spec.get("dir"), env, on_line,
                                         f"job-{job.location}-{e.short}-task{task.index}-{task.retried}")
                    rc = task.proc.wait(max(0.1, deadline - time.time()))
                    if rc is None:
                        task.proc.kill()
                        task.exit_code = None
                        task.state = "failed"
                        task.message = (f"Task {task.short} failed with message: The configured "
                                        f"timeout was reached.")
                        task.completion_time = time.time()
                        return
                if e.cancelled.is_set():
                    task.state = "cancelled"
                    task.completion_time = time.time()
                    return
                task.exit_code = rc
                if rc == 0:
                    task.state = "succeeded"
                    task.message = ""
                    task.completion_time = time.time()
                    return
                task.message = (f"Task {task.short} failed with message: The container exited "
                                f"with a non-zero status of {rc}.")
                if task.retried >= e.max_retries:
                    task.state = "failed"
                    task.completion_time = time.time()
                    return
                task.retried += 1

    threads = [threading.Thread(target=run_task, args=(t,), daemon=True) for t in e.tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with LOCK:
        e.completion_time = time.time()
        failed = [t for t in e.tasks if t.state == "failed"]
        if e.cancelled.is_set():
            e.state = "cancelled"
            e.message = "The execution was cancelled."
        elif failed:
            e.state = "failed"
            e.message = (f"Task {failed[0].short} failed with message: The container exited with "
                         f"a non-zero status of {failed[0].exit_code}."
                         if failed[0].exit_code is not None else failed[0].message)
        else:
            e.state = "succeeded"
            e.message = (f"Execution completed successfully in "
                         f"{max(0, int(e.completion_time - e.start_time))}s.")
        snap = e.render()
    e.settled.set()
    op.finish(response=snap)


def cancel_execution(fake, e: Execution):
    e.cancelled.set()
    for t in e.tasks:
        if t.proc is not None and t.proc.alive():
            t.proc.kill()


# --------------------------------------------------------------------------
# Proxying (the service URLs and the load balancer)


HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
NOT_FOUND_PAGE = (
    '<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
    "<title>404 Page not found</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
    "<h1>Error: Page not found</h1>\n<h2>The requested URL was not found on this server.</h2>\n"
    "<h2></h2>\n</body></html>\n"
)


def forbidden_page(path):
    return (
        '<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
        "<title>403 Forbidden</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
        "<h1>Error: Forbidden</h1>\n<h2>Your client does not have permission to get URL "
        f"<code>{path}</code> from this server.</h2>\n<h2></h2>\n</body></html>\n"
    )


def public(w: Workload) -> bool:
    for b in w.iam.get("bindings") or []:
        if b.get("role") == "roles/run.invoker" and "allUsers" in (b.get("members") or []):
            return True
    return False


def find_by_host(fake, host):
    tag = None
    if "---" in host:
        tag, host = host.split("---", 1)
    with LOCK:
        for w in fake.workloads.values():
            if w.kind == "services" and w.host() == host:
                return w, tag
    return None, tag


def pick_revision(w: Workload, tag):
    with LOCK:
        if tag:
            for a in w.applied:
                if a.get("tag") == tag:
                    return w.revisions.get(a["revision"])
            return None
        choices = [(a, a["percent"]) for a in w.applied if a["percent"] > 0]
        if not choices:
            return None
        x = random.uniform(0, sum(p for _, p in choices))
        for a, p in choices:
            x -= p
            if x <= 0:
                return w.revisions.get(a["revision"])
        return w.revisions.get(choices[-1][0]["revision"])


def forward(rev: Revision, method, path, headers, body, host):
    """Forward to one live process of rev; returns (status, headers, body) or None when none answers."""
    tried = set()
    while True:
        with LOCK:
            p = rev.next_proc()
        if p is None or p in tried:
            return None
        tried.add(p)
        t0 = time.time()
        try:
            c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=300)
            hdrs = {k: v for k, v in headers.items() if k.lower() not in HOP}
            hdrs["Host"] = host
            hdrs["X-Forwarded-Proto"] = "https"
            hdrs["X-Cloud-Trace-Context"] = f"{uuid.uuid4().hex}/1;o=1"
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            out_headers = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP]
            c.close()
        except (OSError, http.client.HTTPException):
            continue
        with LOCK:
            rev.stats.append((time.time(), r.status, (time.time() - t0) * 1000.0))
        return r.status, out_headers, data


# --------------------------------------------------------------------------
# Cloud Logging filter


LOG_TERM = re.compile(
    r'^\s*(resource\.type|resource\.labels\.(?:service_name|revision_name|location|job_name|'
    r'worker_pool_name|configuration_name|project_id)|timestamp|logName|severity|'
    r'labels\."run\.googleapis\.com/execution_name")\s*(=|>=|<=|>|<)\s*"([^"]*)"\s*$'
)


def parse_log_filter(f):
    terms = []
    f = (f or "").strip()
    if not f:
        return terms
    for raw in re.split(r"\s+AND\s+", f):
        m = LOG_TERM.match(raw)
        if not m:
            raise invalid(f"Unsupported filter term in this fake: {raw.strip()!r}")
        field, op, value = m.groups()
        if field == "timestamp":
            try:
                value = parse_ts(value)
            except ValueError:
                raise invalid(f"Invalid timestamp in filter term: {raw.strip()!r}")
        elif op != "=":
            raise invalid(f"Unsupported comparison in this fake: {raw.strip()!r}")
        terms.append((field, op, value))
    return terms


SEVERITIES = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400,
              "ERROR": 500, "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800}


def log_matches(t, e, terms):
    for field, op, value in terms:
        if field == "timestamp":
            a = t
        elif field == "resource.type":
            a = e["resource"]["type"]
        elif field == "logName":
            a = e["logName"]
        elif field == "severity":
            a, value = e["severity"], SEVERITIES.get(value, as_int(value))
            if e["severity"] < value:
                return False
            continue
        elif field.startswith("labels."):
            a = (e.get("labels") or {}).get("run.googleapis.com/execution_name")
        else:
            a = e["resource"]["labels"].get(field.split(".", 2)[2])
        if op == "=" and a != value:
            return False
        if op == ">" and not a > value:
            return False
        if op == ">=" and not a >= value:
            return False
        if op == "<" and not a < value:
            return False
        if op == "<=" and not a <= value:
            return False
    return True


MON_TERM = re.compile(
    r'^\s*(metric\.type|resource\.type|resource\.labels\.(?:service_name|revision_name|location|'
    r'project_id|configuration_name)|metric\.labels\.response_code_class)\s*=\s*"([^"]*)"\s*$'
)


# --------------------------------------------------------------------------
# HTTP front


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-gcloud"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    # every method goes through one place
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, content_type="application/json; charset=UTF-8", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        sent_type = False
        for k, v in headers:
            if k.lower() == "content-type":
                sent_type = True
            self.send_header(k, v)
        if not sent_type and content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def dispatch(self, method):
        fake = FAKE
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        multi = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in multi.items()}
        query["__all"] = multi
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.send(400, {"error": {"code": 400, "message": "bad body", "status": "INVALID_ARGUMENT"}})
            return
        try:
            if path.startswith("/_fake/"):
                return self.controls(fake, method, path, query)
            if path.startswith("/run/"):
                return self.run_route(fake, method, url, raw)
            if path.startswith("/lb/"):
                return self.lb_route(fake, method, url, raw)
            with LOCK:
                fake.requests.append({"method": method, "path": path})
                hit = None
                for i, f in enumerate(fake.fail_next):
                    if f["method"] in ("", method) and f["path"] in path:
                        hit = fake.fail_next.pop(i)
                        break
            if hit:
                status = hit["status"]
                raise ApiError(status, HTTP_STATUS_NAME.get(status, "UNKNOWN"),
                               f"Injected failure ({status}) by the fake's fail-next control.")
            body = {}
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise invalid("Invalid JSON payload received.")
            status, answer = route(fake, method, path, query, body)
            self.send(status, answer)
        except ApiError as e:
            self.send(e.http_status, e.body())
        except ComputeError as e:
            self.send(e.http_status, e.body())
        except BrokenPipeError:
            pass
        except Exception as e:  # noqa: BLE001 - report, not crash
            import traceback
            traceback.print_exc(file=sys.stderr)
            self.send(500, {"error": {"code": 500, "message": f"fake internal error: {e!r}",
                                      "status": "INTERNAL"}})

    # ---- /_fake/
    def controls(self, fake, method, path, query):
        if path == "/_fake/requests" and method == "GET":
            with LOCK:
                return self.send(200, list(fake.requests))
        if path == "/_fake/requests/clear" and method == "POST":
            with LOCK:
                fake.requests.clear()
            return self.send(200, {})
        if path == "/_fake/kill" and method == "POST":
            killed = 0
            with LOCK:
                targets = [w for w in fake.workloads.values()
                           if w.name == query.get("service")
                           and query.get("location") in (None, "", w.location)
                           and query.get("project") in (None, "", w.project)]
                procs = [p for w in targets for r in w.revisions.values() for p in r.procs]
            for p in procs:
                p.kill()
                killed += 1
            return self.send(200 if targets else 404, {"killed": killed, "workloads": len(targets)})
        if path == "/_fake/fail-next" and method == "POST":
            with LOCK:
                fake.fail_next.append({"method": query.get("method", "").upper(),
                                       "status": as_int(query.get("status"), 503),
                                       "path": query.get("path", "")})
            return self.send(200, {})
        if path == "/_fake/health":
            return self.send(200, {"ok": True})
        return self.send(404, {"error": {"code": 404, "message": "no such control", "status": "NOT_FOUND"}})

    # ---- /run/HOST/...
    def run_route(self, fake, method, url, raw):
        rest = url.path[len("/run/"):]
        host, _, tail = rest.partition("/")
        tail = "/" + tail
        w, tag = find_by_host(fake, host)
        if w is None or (tag and not any(a.get("tag") == tag for a in w.applied)):
            return self.send(404, NOT_FOUND_PAGE, "text/html; charset=UTF-8")
        ingress = as_int(w.body.get("ingress"), 1) or 1
        if ingress != 1 and self.headers.get("X-Fake-Internal") != "1":
            return self.send(404, NOT_FOUND_PAGE, "text/html; charset=UTF-8")
        return self.serve(fake, w, tag, method, url, tail, raw, host)

    def serve(self, fake, w, tag, method, url, tail, raw, host, try_only=False):
        if not public(w):
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:].strip()):
                if try_only:
                    return "forbidden"
                rev = pick_revision(w, tag)
                if rev is not None:
                    fake.add_request_log(rev, method, f"https://{host}{tail}", 403,
                                         self.headers.get("User-Agent", ""))
                return self.send(403, forbidden_page(tail), "text/html; charset=UTF-8")
        rev = pick_revision(w, tag)
        target = tail + (("?" + url.query) if url.query else "")
        res = forward(rev, method, target, dict(self.headers.items()), raw or None, host) if rev else None
        if res is None:
            if try_only:
                return None
            if rev is not None:
                with LOCK:
                    rev.stats.append((time.time(), 503, 0.0))
            return self.send(503, "Service Unavailable", "text/plain; charset=UTF-8")
        status, headers, data = res
        # Cloud Run writes one request log entry per request, which Cloud Logging serves.
        fake.add_request_log(rev, method, f"https://{host}{target}", status,
                             self.headers.get("User-Agent", ""))
        self.send(status, data, None, headers)
        return "sent"

    # ---- /lb/ADDRESS/...
    def lb_route(self, fake, method, url, raw):
        rest = url.path[len("/lb/"):]
        addr, _, tail = rest.partition("/")
        tail = "/" + tail
        services = lb_backends(fake, addr)
        if services is None:
            return self.send(404, "no forwarding rule with this address", "text/plain")
        forbidden = False
        for w in services:
            if (as_int(w.body.get("ingress"), 1) or 1) not in (1, 3):
                continue
            r = self.serve(fake, w, None, method, url, tail, raw, w.host(), try_only=True)
            if r == "sent":
                return
            if r == "forbidden":
                forbidden = True
        if forbidden:
            return self.send(403, forbidden_page(tail), "text/html; charset=UTF-8")
        return self.send(503, "no healthy upstream", "text/plain")


def compute_lookup(fake, project, ref, coll=None):
    m = COMPUTE_REF.search(ref or "")
    if not m:
        return None
    p, scope, c, name = m.groups()
    if coll and c != coll:
        return None
    return fake.compute.get((fake.project_id(p or project), scope, c), {}).get(name)


def lb_backends(fake, addr):
    with LOCK:
        for (project, scope, coll), items in fake.compute.items():
            if coll != "forwardingRules":
                continue
            for fr in items.values():
                ip = fr.get("IPAddress", "")
                if ip != addr and not ip.endswith("/addresses/" + addr):
                    continue
                proxy = compute_lookup(fake, project, fr.get("target", ""))
                if not proxy:
                    return []
                um = compute_lookup(fake, project, proxy.get("urlMap", ""), "urlMaps")
                if not um:
                    return []
                bs = compute_lookup(fake, project, um.get("defaultService", ""), "backendServices")
                if not bs:
                    return []
                out = []
                for b in bs.get("backends") or []:
                    neg = compute_lookup(fake, project, b.get("group", ""), "networkEndpointGroups")
                    if not neg:
                        continue
                    svc = (neg.get("cloudRun") or {}).get("service")
                    region = (neg.get("region") or "").rsplit("/", 1)[-1]
                    w = fake.workloads.get(("services", project, region, svc))
                    if w:
                        out.append(w)
                return out
    return None


# --------------------------------------------------------------------------
# Routing of the APIs


ROUTES = []


def api(method, pattern):
    rx = re.compile("^" + pattern + "$")

    def deco(fn):
        ROUTES.append((method, rx, fn))
        return fn
    return deco


def route(fake, method, path, query, body):
    matched_path = False
    for m, rx, fn in ROUTES:
        mt = rx.match(path)
        if not mt:
            continue
        matched_path = True
        if m == method or (isinstance(m, tuple) and method in m):
            return fn(fake, query, body, **mt.groupdict())
    if matched_path:
        raise ApiError(405, "UNIMPLEMENTED", f"Method {method} is not allowed on {path}.")
    if path.startswith("/compute/"):
        raise ComputeError(404, "notFound", f"The requested URL {path} was not found on this server.")
    raise not_found(f"The fake has no API at {method} {path}.")


# ---------------------------------------------------------------- Resource Manager v3 (a project's number)


@api("GET", r"/v3/projects/(?P<p>[^/:]+)")
def get_project(fake, q, b, p):
    pid = fake.project_id(p)
    return 200, {
        "name": f"projects/{fake.number(pid)}",
        "projectId": pid,
        "state": 1,
        "displayName": pid,
    }


@api("POST", r"/v3/projects/(?P<p>[^/:]+):testIamPermissions")
def test_project_permissions(fake, q, b, p):
    """Grants every permission asked for but those the config's `denied_permissions` lists."""
    denied = set(fake.config.get("denied_permissions") or [])
    granted = [perm for perm in (b.get("permissions") or []) if perm not in denied]
    return 200, {"permissions": granted} if granted else {}


PL = r"/v2/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)"
KIND = r"(?P<kind>services|workerPools)"
SEG = r"[^/:]+"


def get_op(fake, name):
    with LOCK:
        op = fake.ops.get(name)
    if op is None:
        raise not_found(f"Operation '{name}' not found.")
    return op


@api("GET", PL + r"/operations")
def list_ops(fake, q, b, p, l):
    prefix = f"projects/{fake.project_id(p)}/locations/{l}/operations/"
    with LOCK:
        ops = [o.render() for n, o in fake.ops.items() if n.startswith(prefix)]
    return 200, {"operations": ops} if ops else {}


@api("GET", PL + r"/operations/(?P<id>" + SEG + ")")
def get_operation(fake, q, b, p, l, id):  # noqa: A002
    return 200, get_op(fake, f"projects/{fake.project_id(p)}/locations/{l}/operations/{id}").render()


@api("DELETE", PL + r"/operations/(?P<id>" + SEG + ")")
def delete_operation(fake, q, b, p, l, id):  # noqa: A002
    name = f"projects/{fake.project_id(p)}/locations/{l}/operations/{id}"
    get_op(fake, name)
    with LOCK:
        fake.ops.pop(name, None)
    return 200, {}


@api("POST", PL + r"/operations/(?P<id>" + SEG + "):wait")
def wait_operation(fake, q, b, p, l, id):  # noqa: A002
    op = get_op(fake, f"projects/{fake.project_id(p)}/locations/{l}/operations/{id}")
    op.wait(min(parse_duration(b.get("timeout"), 120.0), 600.0))
    return 200, op.render()


def get_workload(fake, kind, p, l, n):
    with LOCK:
        w = fake.workloads.get((kind, fake.project_id(p), l, n))
    if w is None:
        raise not_found(f"Resource '{n}' of kind '{'SERVICE' if kind == 'services' else 'WORKER_POOL'}' "
                        f"in region '{l}' in project '{fake.project_id(p)}' does not exist.")
    return w


def get_job(fake, p, l, j):
    with LOCK:
        job = fake.jobs.get((fake.project_id(p), l, j))
    if job is None:
        raise not_found(f"Resource '{j}' of kind 'JOB' in region '{l}' in project "
                        f"'{fake.project_id(p)}' does not exist.")
    return job


def iam_target(fake, p, l, kind, n):
    if kind == "jobs":
        return get_job(fake, p, l, n)
    return get_workload(fake, kind, p, l, n)


@api(("GET", "POST"), PL + r"/(?P<kind>services|workerPools|jobs)/(?P<n>" + SEG + "):getIamPolicy")
def get_iam(fake, q, b, p, l, kind, n):
    t = iam_target(fake, p, l, kind, n)
    with LOCK:
        pol = copy.deepcopy(t.iam)
    if not pol.get("bindings"):
        pol.pop("bindings", None)
    return 200, pol


@api("POST", PL + r"/(?P<kind>services|workerPools|jobs)/(?P<n>" + SEG + "):setIamPolicy")
def set_iam(fake, q, b, p, l, kind, n):
    t = iam_target(fake, p, l, kind, n)
    policy = b.get("policy") or {}
    with LOCK:
        if policy.get("etag") and etag_bytes(policy["etag"]) != etag_bytes(t.iam["etag"]):
            raise ApiError(409, "ABORTED", "There were concurrent policy changes. Please retry "
                           "the whole read-modify-write with exponential backoff.")
        new = copy.deepcopy(policy)
        new["etag"] = new_etag()
        new["version"] = as_int(policy.get("version"), 1) or 1
        new.setdefault("bindings", [])
        t.iam = new
        out = copy.deepcopy(new)
    if not out.get("bindings"):
        out.pop("bindings", None)
    return 200, out


@api("POST", PL + r"/(?P<kind>services|workerPools|jobs)/(?P<n>" + SEG + "):testIamPermissions")
def test_iam(fake, q, b, p, l, kind, n):
    iam_target(fake, p, l, kind, n)
    perms = b.get("permissions") or []
    return 200, {"permissions": perms} if perms else {}


@api("POST", PL + "/" + KIND)
def create_workload(fake, q, b, p, l, kind):
    idq = "serviceId" if kind == "services" else "workerPoolId"
    n = q.get(idq) or ""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?", n):
        raise invalid(f"{idq}: must be a valid name (lowercase letters, digits and '-', starting "
                      f"with a letter, at most 49 characters), got {n!r}.")
    if q.get("validateOnly") == "true":
        return 200, {"name": f"projects/{p}/locations/{l}/operations/{uuid.uuid4()}", "done": True,
                     "response": {}}
    op = apply_workload(fake, kind, p, l, n, b, creating=True)
    return 200, op.render()


@api("GET", PL + "/" + KIND)
def list_workloads(fake, q, b, p, l, kind):
    p = fake.project_id(p)
    with LOCK:
        items = [w.render() for (k, pp, ll, _), w in sorted(fake.workloads.items())
                 if k == kind and pp == p and (l == "-" or ll == l)]
    return 200, paged(items, kind, q)


def paged(items, field, q):
    size = as_int(q.get("pageSize"), 0) or len(items) or 1
    start = as_int(q.get("pageToken"), 0)
    out = {}
    page = items[start:start + size]
    if page:
        out[field] = page
    if start + size < len(items):
        out["nextPageToken"] = str(start + size)
    return out


@api("GET", PL + "/" + KIND + r"/(?P<n>" + SEG + ")")
def get_workload_api(fake, q, b, p, l, kind, n):
    w = get_workload(fake, kind, p, l, n)
    with LOCK:
        return 200, w.render()


@api("PATCH", PL + "/" + KIND + r"/(?P<n>" + SEG + ")")
def update_workload(fake, q, b, p, l, kind, n):
    if q.get("validateOnly") == "true":
        get_workload(fake, kind, p, l, n)
        return 200, {"name": f"projects/{p}/locations/{l}/operations/{uuid.uuid4()}", "done": True,
                     "response": {}}
    op = apply_workload(fake, kind, p, l, n, b, creating=False,
                        allow_missing=q.get("allowMissing") == "true")
    return 200, op.render()


@api("DELETE", PL + "/" + KIND + r"/(?P<n>" + SEG + ")")
def delete_workload_api(fake, q, b, p, l, kind, n):
    w = get_workload(fake, kind, p, l, n)
    if q.get("etag") and q["etag"] != w.etag:
        raise ApiError(409, "ABORTED", "The etag does not match the resource's current etag.")
    return 200, delete_workload(fake, w).render()


@api("GET", PL + "/" + KIND + r"/(?P<n>" + SEG + ")/revisions")
def list_revisions(fake, q, b, p, l, kind, n):
    w = get_workload(fake, kind, p, l, n)
    with LOCK:
        items = [r.render() for r in sorted(w.revisions.values(), key=lambda r: -r.number)]
    return 200, paged(items, "revisions", q)


def get_revision(fake, kind, p, l, n, r):
    w = get_workload(fake, kind, p, l, n)
    with LOCK:
        rev = w.revisions.get(r)
    if rev is None:
        raise not_found(f"Resource '{r}' of kind 'REVISION' in region '{l}' in project "
                        f"'{fake.project_id(p)}' does not exist.")
    return w, rev


@api("GET", PL + "/" + KIND + r"/(?P<n>" + SEG + r")/revisions/(?P<r>" + SEG + ")")
def get_revision_api(fake, q, b, p, l, kind, n, r):
    _, rev = get_revision(fake, kind, p, l, n, r)
    with LOCK:
        return 200, rev.render()


@api("DELETE", PL + "/" + KIND + r"/(?P<n>" + SEG + r")/revisions/(?P<r>" + SEG + ")")
def delete_revision_api(fake, q, b, p, l, kind, n, r):
    w, rev = get_revision(fake, kind, p, l, n, r)
    with LOCK:
        if any(a["revision"] == r for a in w.applied) or any(
                (s.get("revision") or "").rsplit("/", 1)[-1] == r for s in w.spec_split()):
            raise precondition(f"Revision {r} cannot be deleted because it is serving traffic.")
        if w.latest_created is rev and w.reconciling:
            raise precondition(f"Revision {r} cannot be deleted while it is being deployed.")
        rev.deleted = True
        del w.revisions[r]
        if w.latest_ready is rev:
            w.latest_ready = None
        snap = rev.render()
        op = Operation(fake, w.project, w.location, "Revision", lambda: snap)
        fake.ops[op.name] = op
    rev.stop()
    op.finish(response=snap)
    return 200, op.render()


# ---- jobs API


@api("POST", PL + r"/jobs")
def create_job(fake, q, b, p, l):
    n = q.get("jobId") or ""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?", n):
        raise invalid(f"jobId: must be a valid name, got {n!r}.")
    return 200, apply_job(fake, p, l, n, b, creating=True).render()


@api("GET", PL + r"/jobs")
def list_jobs(fake, q, b, p, l):
    p = fake.project_id(p)
    with LOCK:
        items = [j.render() for (pp, ll, _), j in sorted(fake.jobs.items()) if pp == p and ll == l]
    return 200, paged(items, "jobs", q)


@api("GET", PL + r"/jobs/(?P<j>" + SEG + ")")
def get_job_api(fake, q, b, p, l, j):
    job = get_job(fake, p, l, j)
    with LOCK:
        return 200, job.render()


@api("PATCH", PL + r"/jobs/(?P<j>" + SEG + ")")
def update_job(fake, q, b, p, l, j):
    return 200, apply_job(fake, p, l, j, b, creating=False,
                          allow_missing=q.get("allowMissing") == "true").render()


@api("DELETE", PL + r"/jobs/(?P<j>" + SEG + ")")
def delete_job(fake, q, b, p, l, j):
    job = get_job(fake, p, l, j)
    with LOCK:
        fake.jobs.pop((job.project, job.location, job.name), None)
        execs = list(job.executions.values())
        snap = job.render()
        op = Operation(fake, job.project, l, "Job", lambda: snap)
        fake.ops[op.name] = op
    for e in execs:
        cancel_execution(fake, e)
    op.finish(response=snap)
    return 200, op.render()


@api("POST", PL + r"/jobs/(?P<j>" + SEG + "):run")
def run_job_api(fake, q, b, p, l, j):
    job = get_job(fake, p, l, j)
    return 200, run_job(fake, job, b).render()


def get_execution(fake, p, l, j, e):
    job = get_job(fake, p, l, j)
    with LOCK:
        ex = job.executions.get(e)
    if ex is None:
        raise not_found(f"Resource '{e}' of kind 'EXECUTION' in region '{l}' in project "
                        f"'{fake.project_id(p)}' does not exist.")
    return job, ex


@api("GET", PL + r"/jobs/(?P<j>" + SEG + ")/executions")
def list_executions(fake, q, b, p, l, j):
    job = get_job(fake, p, l, j)
    with LOCK:
        items = [e.render() for e in reversed(list(job.executions.values()))]
    return 200, paged(items, "executions", q)


@api("GET", PL + r"/jobs/(?P<j>" + SEG + r")/executions/(?P<e>" + SEG + ")")
def get_execution_api(fake, q, b, p, l, j, e):
    _, ex = get_execution(fake, p, l, j, e)
    with LOCK:
        return 200, ex.render()


@api("DELETE", PL + r"/jobs/(?P<j>" + SEG + r")/executions/(?P<e>" + SEG + ")")
def delete_execution(fake, q, b, p, l, j, e):
    job, ex = get_execution(fake, p, l, j, e)
    cancel_execution(fake, ex)
    with LOCK:
        job.executions.pop(e, None)
        snap = ex.render()
        op = Operation(fake, job.project, l, "Execution", lambda: snap)
        fake.ops[op.name] = op
    op.finish(response=snap)
    return 200, op.render()


@api("POST", PL + r"/jobs/(?P<j>" + SEG + r")/executions/(?P<e>" + SEG + "):cancel")
def cancel_execution_api(fake, q, b, p, l, j, e):
    job, ex = get_execution(fake, p, l, j, e)
    with LOCK:
        op = Operation(fake, job.project, l, "Execution", ex.render)
        fake.ops[op.name] = op
    cancel_execution(fake, ex)

    def later():
        ex.settled.wait(30)
        with LOCK:
            snap = ex.render()
        op.finish(response=snap)
    threading.Thread(target=later, daemon=True).start()
    return 200, op.render()


@api("GET", PL + r"/jobs/(?P<j>" + SEG + r")/executions/(?P<e>" + SEG + ")/tasks")
def list_tasks(fake, q, b, p, l, j, e):
    _, ex = get_execution(fake, p, l, j, e)
    with LOCK:
        items = [t.render() for t in ex.tasks]
    return 200, paged(items, "tasks", q)


@api("GET", PL + r"/jobs/(?P<j>" + SEG + r")/executions/(?P<e>" + SEG + r")/tasks/(?P<t>" + SEG + ")")
def get_task(fake, q, b, p, l, j, e, t):
    _, ex = get_execution(fake, p, l, j, e)
    with LOCK:
        for task in ex.tasks:
            if task.short == t:
                return 200, task.render()
    raise not_found(f"Resource '{t}' of kind 'TASK' in region '{l}' in project "
                    f"'{fake.project_id(p)}' does not exist.")


# ---- Secret Manager v1

SP = r"/v1/projects/(?P<p>[^/]+)/secrets"


def get_secret(fake, p, s):
    key = (fake.project_id(p), s)
    versions = fake.secrets.get(key)
    if versions is None:
        raise not_found(f"Secret [projects/{fake.number(p)}/secrets/{s}] not found or has no versions.")
    return key, versions


def secret_json(fake, key):
    return {"name": f"projects/{fake.number(key[0])}/secrets/{key[1]}",
            "replication": {"automatic": {}}, "createTime": ts(fake.secret_time),
            "etag": '"fake"'}


def version_json(fake, key, v):
    return {"name": f"projects/{fake.number(key[0])}/secrets/{key[1]}/versions/{v}",
            "createTime": ts(fake.secret_time), "state": 1, "etag": '"fake"',
            "replicationStatus": {"automatic": {}}}


def get_version(fake, p, s, v):
    key, versions = get_secret(fake, p, s)
    if v == "latest":
        v = max(versions, key=as_int)
    if v not in versions:
        raise not_found(f"Secret Version [projects/{fake.number(p)}/secrets/{s}/versions/{v}] not found.")
    return key, v, versions[v]


@api("GET", SP)
def list_secrets(fake, q, b, p):
    pid = fake.project_id(p)
    items = [secret_json(fake, k) for k in sorted(fake.secrets) if k[0] == pid]
    out = paged(items, "secrets", q)
    out["totalSize"] = len(items)
    return 200, out


@api("GET", SP + r"/(?P<s>" + SEG + ")")
def get_secret_api(fake, q, b, p, s):
    key, _ = get_secret(fake, p, s)
    return 200, secret_json(fake, key)


@api("GET", SP + r"/(?P<s>" + SEG + ")/versions")
def list_versions(fake, q, b, p, s):
    key, versions = get_secret(fake, p, s)
    items = [version_json(fake, key, v) for v in sorted(versions, key=as_int, reverse=True)]
    out = paged(items, "versions", q)
    out["totalSize"] = len(items)
    return 200, out


@api("GET", SP + r"/(?P<s>" + SEG + r")/versions/(?P<v>" + SEG + ")")
def get_version_api(fake, q, b, p, s, v):
    key, v, _ = get_version(fake, p, s, v)
    return 200, version_json(fake, key, v)


@api("GET", SP + r"/(?P<s>" + SEG + r")/versions/(?P<v>" + SEG + "):access")
def access_version(fake, q, b, p, s, v):
    key, v, value = get_version(fake, p, s, v)
    return 200, {"name": f"projects/{fake.number(key[0])}/secrets/{key[1]}/versions/{v}",
                 "payload": {"data": base64.b64encode(value.encode()).decode()}}


# ---- Cloud Logging v2


@api("POST", r"/v2/entries:list")
def list_entries(fake, q, b):
    names = b.get("resourceNames") or []
    projects = set()
    for n in names:
        m = re.fullmatch(r"projects/([^/]+)", n)
        if not m:
            raise invalid(f"resourceNames: unsupported resource name {n!r} (only projects/P).")
        projects.add(fake.project_id(m.group(1)))
    if not projects:
        raise invalid("resourceNames: at least one resource name is required.")
    terms = parse_log_filter(b.get("filter"))
    order = (b.get("orderBy") or "timestamp asc").strip().lower()
    if order not in ("timestamp asc", "timestamp desc", "timestamp"):
        raise invalid(f"orderBy: unsupported value {b.get('orderBy')!r}.")
    with LOCK:
        rows = [(t, s, e) for (t, s, e) in fake.logs
                if e["resource"]["labels"].get("project_id") in projects and log_matches(t, e, terms)]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=order == "timestamp desc")
    size = min(as_int(b.get("pageSize"), 0) or 50, 1000)
    start = as_int(b.get("pageToken"), 0)
    out = {}
    page = rows[start:start + size]
    if page:
        out["entries"] = [copy.deepcopy(e) for _, _, e in page]
    if start + size < len(rows):
        out["nextPageToken"] = str(start + size)
    return 200, out


# ---- Cloud Monitoring v3

MP = r"/v3/projects/(?P<p>[^/]+)"


@api("POST", MP + r"/uptimeCheckConfigs")
def create_uptime(fake, q, b, p):
    p = fake.project_id(p)
    if not b.get("displayName"):
        raise invalid("displayName: must be set.")
    slug = re.sub(r"[^a-z0-9-]+", "-", b["displayName"].lower()).strip("-")[:40] or "check"
    cid = f"{slug}-{uuid.uuid4().hex[:8]}"
    cfg = norm_enums(b, _MON_ENUMS)
    cfg["name"] = f"projects/{p}/uptimeCheckConfigs/{cid}"
    cfg.setdefault("period", "60s")
    cfg.setdefault("timeout", "10s")
    with LOCK:
        fake.uptime[(p, cid)] = cfg
    return 200, cfg


@api("GET", MP + r"/uptimeCheckConfigs")
def list_uptime(fake, q, b, p):
    p = fake.project_id(p)
    with LOCK:
        items = [copy.deepcopy(c) for (pp, _), c in sorted(fake.uptime.items()) if pp == p]
    out = paged(items, "uptimeCheckConfigs", q)
    out["totalSize"] = len(items)
    return 200, out


def get_uptime(fake, p, cid):
    with LOCK:
        cfg = fake.uptime.get((fake.project_id(p), cid))
    if cfg is None:
        raise not_found(f"Uptime check config projects/{p}/uptimeCheckConfigs/{cid} not found.")
    return cfg


@api("GET", MP + r"/uptimeCheckConfigs/(?P<c>" + SEG + ")")
def get_uptime_api(fake, q, b, p, c):
    return 200, copy.deepcopy(get_uptime(fake, p, c))


@api("PATCH", MP + r"/uptimeCheckConfigs/(?P<c>" + SEG + ")")
def update_uptime(fake, q, b, p, c):
    cfg = get_uptime(fake, p, c)
    b = norm_enums(b, _MON_ENUMS)
    mask = [f for f in (q.get("updateMask") or "").split(",") if f]
    with LOCK:
        if mask:
            for f in mask:
                top = f.split(".")[0]
                if top in b:
                    cfg[top] = copy.deepcopy(b[top])
                else:
                    cfg.pop(top, None)
        else:
            name = cfg["name"]
            cfg.clear()
            cfg.update(copy.deepcopy(b))
            cfg["name"] = name
        return 200, copy.deepcopy(cfg)


@api("DELETE", MP + r"/uptimeCheckConfigs/(?P<c>" + SEG + ")")
def delete_uptime(fake, q, b, p, c):
    get_uptime(fake, p, c)
    with LOCK:
        fake.uptime.pop((fake.project_id(p), c), None)
    return 200, {}


@api("GET", MP + r"/timeSeries")
def list_time_series(fake, q, b, p):
    p = fake.project_id(p)
    terms = {}
    for raw in re.split(r"\s+AND\s+", (q.get("filter") or "").strip()):
        if not raw.strip():
            continue
        m = MON_TERM.match(raw)
        if not m:
            raise invalid(f"Unsupported filter term in this fake: {raw.strip()!r}")
        terms[m.group(1)] = m.group(2)
    mtype = terms.get("metric.type")
    if mtype != "run.googleapis.com/request_count":
        raise invalid(f"The fake serves only metric.type = \"run.googleapis.com/request_count\", "
                      f"got {mtype!r}.")
    if terms.get("resource.type", "cloud_run_revision") != "cloud_run_revision":
        return 200, {}
    start_s = q.get("interval.startTime") or q.get("interval.start_time")
    end_s = q.get("interval.endTime") or q.get("interval.end_time")
    try:
        end = parse_ts(end_s) if end_s else time.time()
        start = parse_ts(start_s) if start_s else 0.0
    except ValueError as e:
        raise invalid(str(e))
    series = []
    with LOCK:
        for (kind, pp, loc, name), w in sorted(fake.workloads.items()):
            if kind != "services" or pp != p:
                continue
            labels = {"project_id": p, "service_name": name, "location": loc,
                      "configuration_name": name}
            for rev in sorted(w.revisions.values(), key=lambda r: r.number):
                labels_r = dict(labels, revision_name=rev.short)
                if any(labels_r.get(k.split(".", 2)[2]) != v for k, v in terms.items()
                       if k.startswith("resource.labels.")):
                    continue
                counts = {}
                for t, status, _lat in rev.stats:
                    if start <= t <= end:
                        cls = f"{status // 100}xx"
                        counts[cls] = counts.get(cls, 0) + 1
                for cls in sorted(counts):
                    want = terms.get("metric.labels.response_code_class")
                    if want and want != cls:
                        continue
                    series.append({
                        "metric": {"type": "run.googleapis.com/request_count",
                                   "labels": {"response_code_class": cls}},
                        "resource": {"type": "cloud_run_revision", "labels": labels_r},
                        "metricKind": 2, "valueType": 2, "unit": "1",
                        "points": [{"interval": {"startTime": ts(max(start, rev.create_time)),
                                                 "endTime": ts(end)},
                                    "value": {"int64Value": str(counts[cls])}}],
                    })
    reducer = q.get("aggregation.crossSeriesReducer", "0")
    reducer = {"REDUCE_NONE": 0, "REDUCE_SUM": 4}.get(reducer, as_int(reducer, -1))
    if reducer == 4:
        fields = q["__all"].get("aggregation.groupByFields", [])
        groups = {}
        for ts_ in series:
            keep = {}
            for f in fields:
                kind, _, label = f.partition(".labels.")
                src = ts_["metric"] if kind == "metric" else ts_["resource"]
                if label in src["labels"]:
                    keep[f] = src["labels"][label]
            k = json.dumps(keep, sort_keys=True)
            g = groups.get(k)
            if g is None:
                g = copy.deepcopy(ts_)
                g["metric"]["labels"] = {f.split(".labels.")[1]: v for f, v in keep.items()
                                         if f.startswith("metric.")}
                g["resource"]["labels"] = {f.split(".labels.")[1]: v for f, v in keep.items()
                                           if f.startswith("resource.")}
                g["points"][0]["interval"]["startTime"] = ts(start) if start else g["points"][0]["interval"]["startTime"]
                groups[k] = g
            else:
                p0 = g["points"][0]["value"]
                p0["int64Value"] = str(int(p0["int64Value"]) + int(ts_["points"][0]["value"]["int64Value"]))
        series = list(groups.values())
    elif reducer != 0:
        raise invalid("aggregation.crossSeriesReducer: the fake supports only REDUCE_NONE and REDUCE_SUM.")
    return 200, paged(series, "timeSeries", q)


# ---- Compute Engine v1

CP = r"/compute/v1/projects/(?P<p>[^/]+)"
SCOPE = r"(?P<scope>global|regions/[^/]+)"
COLL = r"(?P<coll>" + "|".join(COMPUTE_KINDS) + ")"


def compute_op(fake, project, scope, op_type, target_link, target_id):
    now = time.time()
    name = f"operation-{int(now * 1000)}-{uuid.uuid4().hex[:12]}-{uuid.uuid4().hex[:8]}"
    op = {
        "kind": "compute#operation",
        "id": str(random.randint(10 ** 18, 9 * 10 ** 18)),
        "name": name,
        "operationType": op_type,
        "targetLink": target_link,
        "targetId": target_id,
        "status": "RUNNING",
        "user": "fake-caller@example.com",
        "progress": 0,
        "insertTime": ts(now),
        "startTime": ts(now),
        "selfLink": f"{COMPUTE_BASE}projects/{project}/{scope}/operations/{name}",
    }
    if scope != "global":
        op["region"] = f"{COMPUTE_BASE}projects/{project}/{scope}"
    with LOCK:
        fake.compute_ops[(project, scope, name)] = (now + fake.delay, op)
    return render_compute_op(fake, project, scope, name)


def render_compute_op(fake, project, scope, name):
    with LOCK:
        item = fake.compute_ops.get((project, scope, name))
    if item is None:
        raise ComputeError(404, "notFound",
                           f"The resource 'projects/{project}/{scope}/operations/{name}' was not found")
    ready, op = item
    op = copy.deepcopy(op)
    if time.time() >= ready:
        op["status"] = "DONE"
        op["progress"] = 100
        op["endTime"] = ts(ready)
    return op


def compute_items(fake, p, scope, coll):
    return fake.compute.setdefault((p, scope, coll), {})


def compute_refs(o, skip=("selfLink", "region", "kind", "id", "name", "users")):
    """Every string in o that names a load-balancing resource."""
    out = []
    if isinstance(o, dict):
        for k, v in o.items():
            if k in skip:
                continue
            out += compute_refs(v, ())
    elif isinstance(o, list):
        for v in o:
            out += compute_refs(v, ())
    elif isinstance(o, str):
        m = COMPUTE_REF.search(o)
        if m:
            out.append((o, m.groups()))
    return out


REF_FIELDS = {"group", "defaultService", "urlMap", "target", "sslCertificates", "service",
              "healthChecks", "backendService"}


def malformed_refs(o, where="resource"):
    """Reference fields whose value is not a resource URL (Compute refuses them)."""
    out = []
    if isinstance(o, dict):
        for k, v in o.items():
            vals = v if isinstance(v, list) else [v]
            if k in REF_FIELDS and all(isinstance(x, str) for x in vals):
                out += [(f"{where}.{k}", x) for x in vals if not COMPUTE_REF.search(x)]
            elif k != "cloudRun":
                out += malformed_refs(v, f"{where}.{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += malformed_refs(v, f"{where}[{i}]")
    return out


def check_refs(fake, project, body):
    for field, value in malformed_refs(body):
        raise ComputeError(400, "invalid",
                           f"Invalid value for field '{field}': '{value}'. The URL is malformed.")
    for raw, (p, scope, coll, name) in compute_refs(body):
        if name not in fake.compute.get((fake.project_id(p or project), scope, coll), {}):
            raise ComputeError(404, "notFound",
                               f"The resource 'projects/{p or project}/{scope}/{coll}/{name}' was not found")


def users_of(fake, project, scope, coll, name, res):
    users = []
    for (p, sc, c), items in fake.compute.items():
        for n, r in items.items():
            if (sc, c, n) == (scope, coll, name) and p == project:
                continue
            for raw, (rp, rscope, rcoll, rname) in compute_refs(r):
                if (fake.project_id(rp or p), rscope, rcoll, rname) == (project, scope, coll, name):
                    users.append(f"projects/{p}/{sc}/{c}/{n}")
            if coll == "addresses" and c == "forwardingRules" and res.get("address") and \
                    r.get("IPAddress") == res["address"]:
                users.append(f"projects/{p}/{sc}/{c}/{n}")
    return users


@api("GET", CP)
def compute_project(fake, q, b, p):
    pid = fake.project_id(p)
    return 200, {"kind": "compute#project", "name": pid, "id": fake.number(pid),
                 "selfLink": f"{COMPUTE_BASE}projects/{pid}",
                 "creationTimestamp": ts(fake.secret_time)}


@api("GET", CP + "/" + SCOPE + r"/operations/(?P<n>[^/]+)")
def compute_get_op(fake, q, b, p, scope, n):
    return 200, render_compute_op(fake, fake.project_id(p), scope, n)


@api("POST", CP + "/" + SCOPE + r"/operations/(?P<n>[^/]+)/wait")
def compute_wait_op(fake, q, b, p, scope, n):
    p = fake.project_id(p)
    op = render_compute_op(fake, p, scope, n)
    end = time.time() + 120
    while op["status"] != "DONE" and time.time() < end:
        time.sleep(0.02)
        op = render_compute_op(fake, p, scope, n)
    return 200, op


@api("DELETE", CP + "/" + SCOPE + r"/operations/(?P<n>[^/]+)")
def compute_delete_op(fake, q, b, p, scope, n):
    p = fake.project_id(p)
    render_compute_op(fake, p, scope, n)
    with LOCK:
        fake.compute_ops.pop((p, scope, n), None)
    return 200, {}


@api("GET", CP + "/" + SCOPE + r"/operations")
def compute_list_ops(fake, q, b, p, scope):
    p = fake.project_id(p)
    with LOCK:
        names = [n for (pp, sc, n) in fake.compute_ops if pp == p and sc == scope]
    items = [render_compute_op(fake, p, scope, n) for n in names]
    return 200, {"kind": "compute#operationList", "items": items,
                 "selfLink": f"{COMPUTE_BASE}projects/{p}/{scope}/operations"}


@api("GET", CP + "/" + SCOPE + "/" + COLL)
def compute_list(fake, q, b, p, scope, coll):
    p = fake.project_id(p)
    with LOCK:
        items = [copy.deepcopy(r) for _, r in sorted(compute_items(fake, p, scope, coll).items())]
    out = {"kind": COMPUTE_KINDS[coll] + "List", "id": f"projects/{p}/{scope}/{coll}",
           "selfLink": f"{COMPUTE_BASE}projects/{p}/{scope}/{coll}"}
    if items:
        out["items"] = items
    return 200, out


@api("POST", CP + "/" + SCOPE + "/" + COLL)
def compute_insert(fake, q, b, p, scope, coll):
    p = fake.project_id(p)
    rid_key = (p, q.get("requestId")) if q.get("requestId") else None
    with LOCK:
        seen = fake.compute_request_ids.get(rid_key) if rid_key else None
    if seen:  # the same request again (a retry): the same operation
        return 200, render_compute_op(fake, *seen)
    status, op = compute_insert_new(fake, q, b, p, scope, coll)
    if rid_key:
        with LOCK:
            fake.compute_request_ids[rid_key] = (p, scope, op["name"])
    return status, op


def compute_insert_new(fake, q, b, p, scope, coll):
    name = b.get("name") or ""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ComputeError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. "
                           f"Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'")
    with LOCK:
        items = compute_items(fake, p, scope, coll)
        if name in items:
            raise ComputeError(409, "alreadyExists",
                               f"The resource 'projects/{p}/{scope}/{coll}/{name}' already exists")
        res = copy.deepcopy(b)
        if coll == "forwardingRules" and res.get("IPAddress"):
            ref = COMPUTE_REF.search(res["IPAddress"])
            if ref:
                addr = compute_lookup(fake, p, res["IPAddress"], "addresses")
                if addr is None:
                    raise ComputeError(404, "notFound",
                                       f"The resource '{res['IPAddress']}' was not found")
                res["IPAddress"] = addr["address"]
        if coll == "forwardingRules" and not res.get("IPAddress"):
            fake.address_seq += 1  # an ephemeral address
            res["IPAddress"] = f"203.0.113.{fake.address_seq}"
        check_refs(fake, p, res)
        rid = str(random.randint(10 ** 18, 9 * 10 ** 18))
        link = f"{COMPUTE_BASE}projects/{p}/{scope}/{coll}/{name}"
        res.update({"kind": COMPUTE_KINDS[coll], "id": rid, "creationTimestamp": ts(),
                    "selfLink": link})
        if scope != "global":
            res["region"] = f"{COMPUTE_BASE}projects/{p}/{scope}"
        if coll in ("backendServices", "urlMaps"):
            res["fingerprint"] = new_fingerprint()
        if coll == "addresses":
            if not res.get("address"):
                fake.address_seq += 1
                res["address"] = f"203.0.113.{fake.address_seq}"
            res.setdefault("addressType", "EXTERNAL")
            res.setdefault("ipVersion", "IPV4")
            res["status"] = "RESERVED"
        if coll == "forwardingRules":
            for (ap, sc, c), addrs in fake.compute.items():
                if c == "addresses" and ap == p:
                    for a in addrs.values():
                        if a.get("address") == res.get("IPAddress"):
                            a["status"] = "IN_USE"
                            a["users"] = a.get("users", []) + [link]
        if coll == "sslCertificates" and res.get("managed"):
            res.setdefault("type", "MANAGED")
            res["managed"].setdefault("status", "PROVISIONING")
        items[name] = res
    return 200, compute_op(fake, p, scope, "insert", link, rid)


def get_compute(fake, p, scope, coll, n):
    p = fake.project_id(p)
    with LOCK:
        res = compute_items(fake, p, scope, coll).get(n)
    if res is None:
        raise ComputeError(404, "notFound", f"The resource 'projects/{p}/{scope}/{coll}/{n}' was not found")
    return p, res


@api("GET", CP + "/" + SCOPE + "/" + COLL + r"/(?P<n>[^/]+)")
def compute_get(fake, q, b, p, scope, coll, n):
    _, res = get_compute(fake, p, scope, coll, n)
    with LOCK:
        return 200, copy.deepcopy(res)


@api("DELETE", CP + "/" + SCOPE + "/" + COLL + r"/(?P<n>[^/]+)")
def compute_delete(fake, q, b, p, scope, coll, n):
    p, res = get_compute(fake, p, scope, coll, n)
    with LOCK:
        users = users_of(fake, p, scope, coll, n, res)
        if users:
            raise ComputeError(
                400, "resourceInUseByAnotherResource",
                f"The resource 'projects/{p}/{scope}/{coll}/{n}' is already being used by '{users[0]}'")
        compute_items(fake, p, scope, coll).pop(n, None)
        if coll == "forwardingRules":
            for (ap, sc, c), addrs in fake.compute.items():
                if c == "addresses" and ap == p:
                    for a in addrs.values():
                        if res["selfLink"] in a.get("users", []):
                            a["users"].remove(res["selfLink"])
                            if not a["users"]:
                                a.pop("users")
                                a["status"] = "RESERVED"
    return 200, compute_op(fake, p, scope, "delete", res["selfLink"], res["id"])


def merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def compute_change(fake, b, p, scope, coll, n, patch):
    p, res = get_compute(fake, p, scope, coll, n)
    with LOCK:
        given = b.get("fingerprint")
        if given and etag_bytes(given) != etag_bytes(res.get("fingerprint", "")):
            raise ComputeError(412, "conditionNotMet",
                               "Supplied fingerprint does not match current metadata fingerprint.")
        check_refs(fake, p, b)
        keep = {k: res[k] for k in ("kind", "id", "creationTimestamp", "selfLink", "region", "name")
                if k in res}
        if patch:
            merge(res, b)
        else:
            res.clear()
            res.update(copy.deepcopy(b))
        res.update(keep)
        res["fingerprint"] = new_fingerprint()
    return 200, compute_op(fake, p, scope, "patch" if patch else "update", res["selfLink"], res["id"])


@api("PATCH", CP + "/" + SCOPE + r"/(?P<coll>backendServices|urlMaps)/(?P<n>[^/]+)")
def compute_patch(fake, q, b, p, scope, coll, n):
    return compute_change(fake, b, p, scope, coll, n, patch=True)


@api("PUT", CP + "/" + SCOPE + r"/(?P<coll>backendServices|urlMaps)/(?P<n>[^/]+)")
def compute_update(fake, q, b, p, scope, coll, n):
    return compute_change(fake, b, p, scope, coll, n, patch=False)


# --------------------------------------------------------------------------
# Main


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None):
    global FAKE
    ap = argparse.ArgumentParser(description="A fake of a subset of the Google Cloud REST APIs, for tests.")
    ap.add_argument("--config", help="JSON config file")
    args = ap.parse_args(argv)
    config = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            config = json.load(f)
    FAKE = Fake(config)
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    FAKE.base_url = f"http://127.0.0.1:{port}"
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    sys.stdout.write(FAKE.base_url + "\n")
    sys.stdout.flush()
    parent = os.getppid()
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:  # whoever started the fake is gone
                break
    finally:
        with LOCK:
            FAKE.stopping = True
        server.shutdown()
        FAKE.kill_all()
        server.server_close()
        if FAKE.own_state_dir:
            shutil.rmtree(FAKE.state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
