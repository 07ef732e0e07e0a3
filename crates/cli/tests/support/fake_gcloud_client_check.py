#!/usr/bin/env python3
"""Checks fake_gcloud.py against the official Python Cloud Run client (REST transport).

Usage: PYTHONPATH=<dir with google-cloud-run> python3 fake_gcloud_client_check.py URL IMAGE [PROJECT]

URL is the fake's base URL (http://127.0.0.1:PORT), IMAGE an image that the
fake's config runs as an HTTP server. The script creates a service, waits for
its operation, lists and gets it, lists and gets its revisions, moves the
traffic (a 0 % tag "blue" on the revision plus 100 % to it by name), fetches
the service URL through the fake's /run/ route, and deletes the service.
It prints "ok" and exits 0, or prints what failed and exits 1.
"""

import sys
import urllib.error
import urllib.request
import uuid


def main():
    if len(sys.argv) < 3:
        print("usage: fake_gcloud_client_check.py URL IMAGE [PROJECT]")
        return 1
    url, image = sys.argv[1], sys.argv[2]
    project = sys.argv[3] if len(sys.argv) > 3 else "acme"
    location = "europe-west1"

    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    opts = ClientOptions(api_endpoint=url)
    services = run_v2.ServicesClient(
        transport="rest", client_options=opts, credentials=AnonymousCredentials())
    revisions = run_v2.RevisionsClient(
        transport="rest", client_options=opts, credentials=AnonymousCredentials())

    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
        return cond

    parent = f"projects/{project}/locations/{location}"
    service_id = "check-" + uuid.uuid4().hex[:6]
    name = f"{parent}/services/{service_id}"

    svc = run_v2.Service(
        labels={"team": "shop"},
        template=run_v2.RevisionTemplate(
            containers=[run_v2.Container(
                image=image,
                env=[run_v2.EnvVar(name="GREETING", value="hello")],
                resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "512Mi"}),
            )],
            scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=3),
            timeout="300s",
        ),
    )
    op = services.create_service(parent=parent, service=svc, service_id=service_id)
    created = op.result(timeout=60)
    check(created.name == name, f"created name {created.name!r} != {name!r}")
    check(created.labels.get("team") == "shop", f"labels did not round-trip: {dict(created.labels)}")
    check(created.generation == 1, f"generation {created.generation} != 1")
    check(created.observed_generation == 1, f"observed_generation {created.observed_generation} != 1")
    check(created.template.containers[0].image == image, "image did not round-trip")
    check(created.template.containers[0].env[0].value == "hello", "env did not round-trip")
    check(created.template.scaling.min_instance_count == 1, "scaling did not round-trip")
    check(created.template.timeout.total_seconds() == 300, f"timeout {created.template.timeout}")
    check(created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED,
          f"terminal condition {created.terminal_condition}")
    check(created.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL, f"ingress {created.ingress}")
    check(created.uri.startswith(url + "/run/"), f"uri {created.uri!r}")
    check(not created.reconciling, "still reconciling after the operation")
    check(created.create_time is not None and created.create_time.year >= 2024, "create_time")

    listed = list(services.list_services(parent=parent))
    check(any(s.name == name for s in listed), "list_services does not list the service")

    got = services.get_service(name=name)
    check(got.uid == created.uid, "get_service: uid differs from the created one")
    rev_short = got.latest_ready_revision.rsplit("/", 1)[-1]
    check(rev_short.startswith(service_id + "-"), f"latest_ready_revision {got.latest_ready_revision!r}")
    check(len(got.traffic_statuses) == 1 and got.traffic_statuses[0].percent == 100,
          f"traffic_statuses {list(got.traffic_statuses)}")

    revs = list(revisions.list_revisions(parent=name))
    check(len(revs) == 1, f"{len(revs)} revisions, expected 1")
    rev = revisions.get_revision(name=got.latest_ready_revision)
    check(rev.service == name, f"revision.service {rev.service!r}")
    ready = [c for c in rev.conditions if c.type_ == "Ready"]
    check(ready and ready[0].state == run_v2.Condition.State.CONDITION_SUCCEEDED,
          f"revision Ready condition {list(rev.conditions)}")
    check(rev.containers[0].image == image, "revision image")

    # Traffic: 100 % to the revision by name, plus a 0 % tag "blue" on it.
    got.traffic.clear()
    got.traffic.append(run_v2.TrafficTarget(
        type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
        revision=rev_short, percent=100))
    got.traffic.append(run_v2.TrafficTarget(
        type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
        revision=rev_short, percent=0, tag="blue"))
    updated = services.update_service(service=got).result(timeout=60)
    check(updated.generation == 2, f"generation after update {updated.generation} != 2")
    check(updated.observed_generation == 2, f"observed_generation {updated.observed_generation}")
    check(updated.latest_created_revision == got.latest_created_revision,
          "an update of the traffic alone created a revision")
    tags = {t.tag: t for t in updated.traffic_statuses if t.tag}
    check("blue" in tags and tags["blue"].revision == rev_short and tags["blue"].percent == 0,
          f"traffic_statuses after update {list(updated.traffic_statuses)}")
    check("blue" in tags and tags["blue"].uri.startswith(url + "/run/blue---"),
          f"tag uri {tags.get('blue').uri if 'blue' in tags else None!r}")
    check(len(list(revisions.list_revisions(parent=name))) == 1, "revisions after traffic update")

    # The service URL, through the fake's /run/ route (with a token: no public invoker).
    for target in [updated.uri + "/"] + ([tags["blue"].uri + "/"] if "blue" in tags else []):
        req = urllib.request.Request(target, headers={"Authorization": "Bearer test-token"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                check(r.status == 200, f"GET {target} answered {r.status}")
        except urllib.error.HTTPError as e:
            check(False, f"GET {target} answered {e.code}")

    services.delete_service(name=name).result(timeout=60)
    try:
        services.get_service(name=name)
        check(False, "the service is still there after delete")
    except Exception as e:  # google.api_core.exceptions.NotFound
        check(type(e).__name__ == "NotFound", f"get after delete raised {type(e).__name__}: {e}")

    if failures:
        for f in failures:
            print("FAILED:", f)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure plainly
        print(f"FAILED: {type(e).__name__}: {e}")
        sys.exit(1)
