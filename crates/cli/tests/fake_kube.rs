//! The Kubernetes fake of the tests, checked against the reference client: the real `kubectl` applies
//! manifests to it, waits for rollouts and Jobs, reads Events, and traffic goes through its gateway,
//! its service proxy and its cluster network to a small Python web app.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_kube::FakeKube;

/// A web app: `/healthz` answers 200 (500 when `SICK` is set), any other path `NAME GREETING PATH`.
const APP: &str = r#"
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            code, body = (500, b"sick\n") if os.environ.get("SICK") else (200, b"ok\n")
        else:
            code, body = 200, ("%s %s %s\n" % (os.environ.get("NAME"), os.environ.get("GREETING"), self.path)).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        sys.stderr.write("served %s\n" % self.path)
        sys.stderr.flush()
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

struct Cluster {
    fake: FakeKube,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A fake with the web app registered as image `shop/web:1`, and a kubeconfig for namespace `shop`.
    fn start() -> Cluster {
        let fake = FakeKube::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), APP).unwrap();
        fake.add_image("shop/web:1", &["python3", "app.py"], dir.path());
        fake.kubeconfig(dir.path(), "shop");
        Cluster { fake, dir }
    }

    fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// kubectl, which must succeed; its standard output.
    fn ok(&self, args: &[&str], input: Option<&str>) -> String {
        let output = self.kubectl(args, input);
        assert!(
            output.status.success(),
            "kubectl {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args, None)).unwrap()
    }

    /// Writes `text` into the test's directory, for `kubectl -f`.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// Waits until `check` gives something, for at most `seconds`.
fn eventually<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request to `port` with `target` as the request target; (status, body).
fn http(port: u16, target: &str, host: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Every object the fake holds reads as the typed object kube-rs clients get (k8s-openapi's types
/// are strict about field types, so a status the fake got wrong shows here).
fn assert_typed(fake: &FakeKube) {
    use k8s_openapi::api::{apps, autoscaling, batch, core};
    fn check<T: serde::de::DeserializeOwned>(fake: &FakeKube, plural: &str) {
        for object in fake.objects(plural) {
            if let Err(error) = serde_json::from_value::<T>(object.clone()) {
                panic!("{plural}: {error}\n{object:#}");
            }
        }
    }
    check::<apps::v1::Deployment>(fake, "deployments");
    check::<core::v1::Service>(fake, "services");
    check::<core::v1::ConfigMap>(fake, "configmaps");
    check::<core::v1::Event>(fake, "events");
    check::<core::v1::Pod>(fake, "pods");
    check::<batch::v1::Job>(fake, "jobs");
    check::<autoscaling::v2::HorizontalPodAutoscaler>(fake, "horizontalpodautoscalers");
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A revision of service `web`: its Deployment (with a readiness probe) and its Service.
fn revision(revision: u32, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-{revision}
  labels: {{app.kubernetes.io/managed-by: mahavishnu, mahavishnu.dev/sandcastle: shop}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web, revision: "{revision}"}}
  template:
    metadata:
      labels: {{app: web, revision: "{revision}"}}
    spec:
      containers:
      - name: web
        image: shop/web:1
        env: [{{name: NAME, value: web-{revision}}}]
        envFrom: [{{configMapRef: {{name: web-env}}}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
---
apiVersion: v1
kind: Service
metadata:
  name: web-{revision}
  labels: {{app.kubernetes.io/managed-by: mahavishnu}}
spec:
  selector: {{app: web, revision: "{revision}"}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

const CONFIG_MAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-env
  labels: {app.kubernetes.io/managed-by: mahavishnu}
data:
  GREETING: hello
"#;

fn gateway_and_route(port: u16) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  gatewayClassName: fake
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  labels: {{app.kubernetes.io/managed-by: mahavishnu}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [web.shop.example]
  rules:
  - backendRefs:
    - {{name: web-1, port: 80, weight: 90}}
    - {{name: web-2, port: 80, weight: 10}}
"#
    )
}

#[test]
fn kubectl_applies_a_service_that_rolls_out_and_takes_weighted_traffic() {
    let cluster = Cluster::start();
    let others = r#"
apiVersion: v1
kind: Service
metadata: {name: alias}
spec: {type: ExternalName, externalName: web-2.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"#;
    let manifest = [
        CONFIG_MAP.to_string(),
        revision(1, 2),
        revision(2, 1),
        gateway_and_route(cluster.fake.gateway_port()),
        others.to_string(),
    ]
    .join("---\n");
    let file = cluster.file("web.yaml", &manifest);
    cluster.ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=mahavishnu",
            "-f",
            &file,
        ],
        None,
    );
    for deployment in ["deployment/web-1", "deployment/web-2"] {
        let out = cluster.ok(
            &[
                "rollout",
                "status",
                deployment,
                "-n",
                "shop",
                "--timeout=20s",
            ],
            None,
        );
        assert!(out.contains("successfully rolled out"), "{out}");
    }
    let listed = cluster.ok(&["get", "deploy,svc,cm,httproute", "-n", "shop"], None);
    // Printed by the server, as a Table, the way kubectl asks.
    assert!(
        listed.contains("READY") && listed.contains("2/2") && listed.contains("web.shop.example"),
        "{listed}"
    );
    for name in [
        "deployment.apps/web-1",
        "deployment.apps/web-2",
        "service/web-1",
        "configmap/web-env",
        "httproute.gateway.networking.k8s.io/web",
    ] {
        assert!(listed.contains(name), "{name} in:\n{listed}");
    }
    let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
    assert_eq!(deployment["status"]["readyReplicas"], 2, "{deployment}");
    assert_eq!(deployment["metadata"]["generation"], 1);
    let pods = cluster.fake.objects("pods");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let route = cluster.json(&["get", "httproute", "web", "-n", "shop"]);
    assert_eq!(
        route["status"]["parents"][0]["conditions"][0]["type"],
        "Accepted"
    );
    let gateway = cluster.json(&["get", "gateway", "edge", "-n", "shop"]);
    assert_eq!(gateway["status"]["addresses"][0]["value"], "127.0.0.1");

    // The gateway splits traffic by weight, and the app got its ConfigMap.
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let (code, body) = http(cluster.fake.gateway_port(), "/hi", "web.shop.example");
        assert_eq!(code, 200, "{body}");
        *seen.entry(body).or_default() += 1;
    }
    let one = seen.get("web-1 hello /hi\n").copied().unwrap_or(0);
    let two = seen.get("web-2 hello /hi\n").copied().unwrap_or(0);
    assert_eq!(one + two, 200, "{seen:?}");
    assert!((5..=40).contains(&two), "{seen:?}");
    let hits = cluster.fake.gateway_hits();
    assert_eq!(hits.get("shop/web-2").copied(), Some(u64::from(two)));
    let (code, _) = http(cluster.fake.gateway_port(), "/hi", "other.example");
    assert_eq!(code, 404);

    // The API server's service proxy, both spellings.
    let proxied = cluster.ok(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/services/web-1:http/proxy/a?b=c",
        ],
        None,
    );
    assert_eq!(proxied, "web-1 hello /a?b=c\n");
    let proxied = cluster.ok(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/services/http:web-2:80/proxy/z",
        ],
        None,
    );
    assert_eq!(proxied, "web-2 hello /z\n");
    let missing = cluster.kubectl(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/services/nowhere/proxy/",
        ],
        None,
    );
    assert!(!missing.status.success());

    // The cluster network resolves Service names and the route's hostname.
    let proxy = port_of(&cluster.fake.network_proxy_url());
    let (code, body) = http(
        proxy,
        "http://web-2.shop.svc.cluster.local/x",
        "web-2.shop.svc.cluster.local",
    );
    assert_eq!((code, body.as_str()), (200, "web-2 hello /x\n"));
    let (code, _) = http(proxy, "http://web-1.shop:80/x", "web-1.shop:80");
    assert_eq!(code, 200);
    let (code, _) = http(proxy, "http://web.shop.example/x", "web.shop.example");
    assert_eq!(code, 200);
    let (code, _) = http(proxy, "http://nothing.nowhere.svc/x", "nothing.nowhere.svc");
    assert_eq!(code, 502);
    let (code, body) = http(proxy, "http://alias.shop.svc/y", "alias.shop.svc");
    assert_eq!((code, body.as_str()), (200, "web-2 hello /y\n"));
    let (code, body) = http(proxy, "http://empty.shop/", "empty.shop");
    assert_eq!(code, 503, "{body}");
    let empty = cluster.kubectl(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/services/empty:80/proxy/",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(
        stderr.contains("no endpoints available for service \"empty\""),
        "{stderr}"
    );
    let service = cluster.json(&["get", "svc", "web-1", "-n", "shop"]);
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."),
        "{service}"
    );

    // Logs have stderr too; a list by label reads what Mahavishnu manages.
    let logs = cluster.ok(&["logs", "-n", "shop", "deployment/web-2"], None);
    assert!(
        logs.contains("listening") && logs.contains("served /z"),
        "{logs}"
    );
    let managed = cluster.json(&[
        "get",
        "deploy",
        "-n",
        "shop",
        "-l",
        "mahavishnu.dev/sandcastle=shop,app.kubernetes.io/managed-by in (mahavishnu)",
    ]);
    assert_eq!(managed["items"].as_array().unwrap().len(), 2);
    assert_typed(&cluster.fake);
}

#[test]
fn a_template_change_rolls_the_pods_and_deleting_the_deployment_deletes_them() {
    let cluster = Cluster::start();
    let file = cluster.file(
        "web.yaml",
        &[CONFIG_MAP.to_string(), revision(1, 2)].join("---\n"),
    );
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    cluster.ok(
        &[
            "rollout",
            "status",
            "deployment/web-1",
            "-n",
            "shop",
            "--timeout=20s",
        ],
        None,
    );
    let before: Vec<String> = cluster
        .fake
        .pod_names()
        .into_iter()
        .filter(|name| name.starts_with("shop/web-1-"))
        .collect();
    assert_eq!(before.len(), 2, "{before:?}");
    let changed = revision(1, 2).replace("value: web-1}", "value: web-1b}");
    let file = cluster.file("web.yaml", &[CONFIG_MAP.to_string(), changed].join("---\n"));
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    cluster.ok(
        &[
            "rollout",
            "status",
            "deployment/web-1",
            "-n",
            "shop",
            "--timeout=20s",
        ],
        None,
    );
    let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
    assert_eq!(deployment["metadata"]["generation"], 2);
    assert_eq!(deployment["status"]["observedGeneration"], 2);
    let after = eventually(5, "the old pods to go", || {
        let names = cluster.fake.pod_names();
        (names.len() == 2 && !names.iter().any(|n| before.contains(n))).then_some(names)
    });
    let answer = cluster.ok(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/services/web-1/proxy/",
        ],
        None,
    );
    assert_eq!(answer, "web-1b hello /\n", "{after:?}");

    // A killed container is restarted in its pod, which is ready again.
    let (namespace, pod) = after[0].split_once('/').unwrap();
    cluster.fake.kill_pod_process(namespace, pod);
    eventually(5, "the restarted container to be ready", || {
        let pod = cluster.json(&["get", "pod", pod, "-n", "shop"]);
        let status = &pod["status"]["containerStatuses"][0];
        (status["restartCount"] == 1 && status["ready"] == true).then_some(())
    });
    let previous = cluster.ok(&["logs", "-n", "shop", pod, "--previous"], None);
    assert!(previous.starts_with("listening"), "{previous}");

    cluster.ok(&["delete", "deployment", "web-1", "-n", "shop"], None);
    eventually(5, "the pods to be collected", || {
        cluster.fake.pod_names().is_empty().then_some(())
    });
    assert!(cluster.fake.objects("configmaps").len() == 1);
}

#[test]
fn pods_that_cannot_pull_fit_or_stay_up_say_why() {
    let cluster = Cluster::start();
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ghost}
spec:
  selector: {matchLabels: {app: ghost}}
  template:
    metadata: {labels: {app: ghost}}
    spec:
      containers: [{name: ghost, image: "registry.example/ghost:9"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: huge}
spec:
  selector: {matchLabels: {app: huge}}
  template:
    metadata: {labels: {app: huge}}
    spec:
      containers:
      - {name: huge, image: shop/web:1, resources: {requests: {cpu: "8", memory: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: crash}
spec:
  selector: {matchLabels: {app: crasher}}
  template:
    metadata: {labels: {app: crasher}}
    spec:
      containers:
      - {name: main, image: busybox, command: [sh, -c, "echo run $$; echo oops >&2; exit 3"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sick}
spec:
  progressDeadlineSeconds: 1
  selector: {matchLabels: {app: sick}}
  template:
    metadata: {labels: {app: sick}}
    spec:
      containers:
      - name: web
        image: shop/web:1
        env: [{name: SICK, value: "1"}]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: dying}
spec:
  selector: {matchLabels: {app: dying}}
  template:
    metadata: {labels: {app: dying}}
    spec:
      containers:
      - name: web
        image: shop/web:1
        env: [{name: SICK, value: "1"}]
        ports: [{containerPort: 8080}]
        livenessProbe: {httpGet: {path: /healthz, port: 8080}, failureThreshold: 2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: unconfigured}
spec:
  selector: {matchLabels: {app: unconfigured}}
  template:
    metadata: {labels: {app: unconfigured}}
    spec:
      containers:
      - {name: web, image: shop/web:1, envFrom: [{configMapRef: {name: absent}}]}
"#;
    let file = cluster.file("broken.yaml", manifest);
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    let pod_of = |app: &str| {
        eventually(5, app, || {
            cluster
                .fake
                .objects("pods")
                .into_iter()
                .find(|p| p["metadata"]["labels"]["app"] == app)
        })
    };
    let waiting = |app: &str, reason: &str| {
        eventually(8, reason, || {
            let pod = pod_of(app);
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            let pod = cluster.json(&["get", "pod", &name, "-n", "shop"]);
            let state = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            (state["reason"] == reason).then(|| (name, state["message"].clone(), pod.clone()))
        })
    };
    let events_of = |pod: &str| {
        let selector = format!("involvedObject.name={pod},involvedObject.kind=Pod");
        cluster.json(&["get", "events", "-n", "shop", "--field-selector", &selector])["items"]
            .as_array()
            .unwrap()
            .clone()
    };

    let (ghost, message, _) = waiting("ghost", "ImagePullBackOff");
    assert_eq!(
        message,
        "Back-off pulling image \"registry.example/ghost:9\""
    );
    let events = events_of(&ghost);
    assert!(
        events.iter().any(|e| e["type"] == "Warning"
            && e["reason"] == "Failed"
            && e["message"]
                == "Failed to pull image \"registry.example/ghost:9\": rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example/ghost:9\": not found"),
        "{events:?}"
    );

    let huge = pod_of("huge");
    let name = huge["metadata"]["name"].as_str().unwrap().to_string();
    let condition = eventually(5, "unschedulable", || {
        let pod = cluster.json(&["get", "pod", &name, "-n", "shop"]);
        let condition = pod["status"]["conditions"][0].clone();
        (condition["reason"] == "Unschedulable").then_some(condition)
    });
    assert_eq!(
        condition["message"],
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    assert!(
        events_of(&name)
            .iter()
            .any(|e| e["reason"] == "FailedScheduling")
    );

    let (crash, message, pod) = waiting("crasher", "CrashLoopBackOff");
    assert_eq!(
        message,
        format!("back-off 10s restarting failed container=main pod={crash}").as_str()
    );
    let status = &pod["status"]["containerStatuses"][0];
    assert!(status["restartCount"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    let previous = cluster.ok(&["logs", "-n", "shop", &crash, "--previous"], None);
    assert!(
        previous.starts_with("run ") && previous.contains("oops"),
        "{previous}"
    );

    let sick = pod_of("sick");
    let name = sick["metadata"]["name"].as_str().unwrap().to_string();
    // Before the app listens, the probe is refused; then the app answers 500.
    let event = eventually(5, "a failed readiness probe", || {
        events_of(&name).into_iter().find(|e| {
            e["reason"] == "Unhealthy"
                && e["message"] == "Readiness probe failed: HTTP probe failed with statuscode: 500"
        })
    });
    assert_eq!(event["type"], "Warning");
    let pod = cluster.json(&["get", "pod", &name, "-n", "shop"]);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["ready"], false,
        "{pod}"
    );
    let rollout = cluster.kubectl(
        &[
            "rollout",
            "status",
            "deployment/sick",
            "-n",
            "shop",
            "--timeout=5s",
        ],
        None,
    );
    // Not ready past its progress deadline: the rollout has failed.
    assert!(!rollout.status.success());
    let stderr = String::from_utf8_lossy(&rollout.stderr);
    assert!(
        stderr.contains("deployment \"sick\" exceeded its progress deadline"),
        "{stderr}"
    );
    let proxied = cluster.kubectl(
        &["get", "--raw", "/api/v1/namespaces/shop/pods/none/proxy/"],
        None,
    );
    assert!(!proxied.status.success());

    // A failing liveness probe restarts the container.
    let dying = pod_of("dying");
    let name = dying["metadata"]["name"].as_str().unwrap().to_string();
    eventually(8, "a restart after failed liveness probes", || {
        let pod = cluster.json(&["get", "pod", &name, "-n", "shop"]);
        (pod["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)).then_some(())
    });
    let events = events_of(&name);
    assert!(
        events.iter().any(
            |e| e["message"] == "Liveness probe failed: HTTP probe failed with statuscode: 500"
        ),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["reason"] == "Killing"),
        "{events:?}"
    );

    let (_, message, _) = waiting("unconfigured", "CreateContainerConfigError");
    assert_eq!(message, "configmap \"absent\" not found");
    assert_typed(&cluster.fake);
}

#[test]
fn jobs_complete_or_fail_at_their_backoff_limit() {
    let cluster = Cluster::start();
    let manifest = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox, command: [sh, -c, "echo migrated"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: broken, image: busybox, command: [sh, -c, "exit 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: slow, image: busybox, command: [sleep, "60"]}]
"#;
    let file = cluster.file("jobs.yaml", manifest);
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    cluster.ok(
        &[
            "wait",
            "-n",
            "shop",
            "--for=condition=complete",
            "job/migrate",
            "--timeout=10s",
        ],
        None,
    );
    let logs = cluster.ok(&["logs", "-n", "shop", "job/migrate"], None);
    assert_eq!(logs, "migrated\n");
    cluster.ok(
        &[
            "wait",
            "-n",
            "shop",
            "--for=condition=failed",
            "job/broken",
            "--timeout=10s",
        ],
        None,
    );
    let broken = cluster.json(&["get", "job", "broken", "-n", "shop"]);
    assert_eq!(broken["status"]["failed"], 2, "{broken}");
    assert_eq!(
        broken["status"]["conditions"][0]["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        broken["status"]["conditions"][0]["message"],
        "Job has reached the specified backoff limit"
    );
    let pods = cluster.json(&["get", "pods", "-n", "shop", "-l", "job-name=broken"]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 2);
    cluster.ok(
        &[
            "wait",
            "-n",
            "shop",
            "--for=condition=failed",
            "job/slow",
            "--timeout=10s",
        ],
        None,
    );
    assert_typed(&cluster.fake);
    let slow = cluster.json(&["get", "job", "slow", "-n", "shop"]);
    assert_eq!(
        slow["status"]["conditions"][0]["reason"],
        "DeadlineExceeded"
    );

    cluster.ok(&["delete", "job", "migrate", "broken", "-n", "shop"], None);
    eventually(5, "the Jobs' pods to be collected", || {
        let left = cluster.json(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "job-name in (migrate,broken)",
        ]);
        left["items"].as_array().unwrap().is_empty().then_some(())
    });
}

#[test]
fn an_autoscaler_owns_replicas_and_an_apply_without_them_keeps_them() {
    let cluster = Cluster::start();
    let file = cluster.file(
        "web.yaml",
        &[CONFIG_MAP.to_string(), revision(1, 1)].join("---\n"),
    );
    let apply = |file: &str| {
        cluster.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=mahavishnu",
                "-f",
                file,
            ],
            None,
        )
    };
    assert!(apply(&file).status.success());
    let hpa = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web-1}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-1}
  minReplicas: 3
  maxReplicas: 5
"#;
    let hpa = cluster.file("hpa.yaml", hpa);
    assert!(apply(&hpa).status.success());
    eventually(8, "three ready pods", || {
        let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
        (deployment["spec"]["replicas"] == 3 && deployment["status"]["readyReplicas"] == 3)
            .then_some(())
    });
    let hpa = cluster.json(&["get", "hpa", "web-1", "-n", "shop"]);
    assert_eq!(hpa["status"]["desiredReplicas"], 3);

    assert_typed(&cluster.fake);

    // Without replicas, the apply leaves the autoscaler's; with them, it conflicts unless forced.
    let without = revision(1, 1).replace("  replicas: 1\n", "");
    let file = cluster.file("web.yaml", &[CONFIG_MAP.to_string(), without].join("---\n"));
    assert!(apply(&file).status.success());
    let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
    assert_eq!(deployment["spec"]["replicas"], 3);
    let stored = cluster.fake.objects("deployments").remove(0);
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(
        managers.contains(&"horizontal-pod-autoscaler") && managers.contains(&"mahavishnu"),
        "{managers:?}"
    );
    let file = cluster.file(
        "web.yaml",
        &[CONFIG_MAP.to_string(), revision(1, 2)].join("---\n"),
    );
    let conflict = apply(&file);
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(!conflict.status.success());
    assert!(
        stderr.contains("conflict with \"horizontal-pod-autoscaler\"")
            && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    cluster.ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=mahavishnu",
            "--force-conflicts",
            "-f",
            &file,
        ],
        None,
    );
    // Forced to 2, below the autoscaler's minimum: the autoscaler raises it again.
    eventually(5, "the autoscaler to win again", || {
        let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
        (deployment["spec"]["replicas"] == 3).then_some(())
    });
    assert!(
        cluster
            .fake
            .calls()
            .iter()
            .any(|(method, path)| method == "PATCH"
                && path.contains("/deployments/web-1?")
                && path.contains("fieldManager=mahavishnu"))
    );
}

#[test]
fn a_server_dry_run_accepts_a_valid_file_and_stores_nothing() {
    let cluster = Cluster::start();
    let manifest = [
        CONFIG_MAP.to_string(),
        revision(1, 2),
        gateway_and_route(cluster.fake.gateway_port()),
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web-1}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-1}
  minReplicas: 1
  maxReplicas: 4
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox, command: [true]}]
"#
        .to_string(),
    ]
    .join("---\n");
    let file = cluster.file("all.yaml", &manifest);
    let out = cluster.ok(&["apply", "--dry-run=server", "-f", &file], None);
    assert!(
        out.contains("deployment.apps/web-1 created (server dry run)"),
        "{out}"
    );
    let out = cluster.ok(
        &["apply", "--server-side", "--dry-run=server", "-f", &file],
        None,
    );
    assert!(
        out.contains("job.batch/migrate serverside-applied (server dry run)"),
        "{out}"
    );
    for plural in [
        "configmaps",
        "deployments",
        "services",
        "gateways",
        "httproutes",
        "horizontalpodautoscalers",
        "jobs",
        "pods",
    ] {
        assert!(cluster.fake.objects(plural).is_empty(), "{plural} stored");
    }
    assert!(
        cluster
            .fake
            .calls()
            .iter()
            .any(|(method, path)| method == "POST" && path.contains("dryRun=All"))
    );

    // The server still refuses what is invalid.
    let invalid = cluster.file(
        "invalid.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: b}]\n",
    );
    let refused = cluster.kubectl(&["apply", "--dry-run=server", "-f", &invalid], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.selector: Required value"));
    let unknown = cluster.kubectl(
        &[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/shop/widgets",
        ],
        None,
    );
    assert!(!unknown.status.success());
}

#[test]
fn the_controllers_wait_their_delay() {
    let cluster = Cluster::start();
    cluster
        .fake
        .set_controller_delay(Duration::from_millis(4000));
    let file = cluster.file("web.yaml", &revision(1, 1));
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cluster.fake.pod_names().is_empty());
    eventually(15, "the pod, late", || {
        (cluster.fake.pod_names().len() == 1).then_some(())
    });
    let calls = cluster.fake.calls();
    assert!(calls.iter().any(|(method, path)| method == "PATCH"
        && path.starts_with("/apis/apps/v1/namespaces/shop/deployments/web-1?")));
    cluster.fake.clear_calls();
    assert!(cluster.fake.calls().is_empty());
}

#[test]
fn patches_of_every_kind_selectors_and_scale() {
    let cluster = Cluster::start();
    cluster.ok(&["apply", "--server-side", "-f", "-"], Some(CONFIG_MAP));
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: \"1\"}\n";
    cluster.ok(&["apply", "-n", "shop", "-f", "-"], Some(other));
    cluster.ok(
        &["label", "configmap", "other", "-n", "shop", "tier=back"],
        None,
    );
    let version = |name: &str| {
        cluster.json(&["get", "cm", name, "-n", "shop"])["metadata"]["resourceVersion"].clone()
    };
    let before = version("web-env");
    cluster.ok(
        &[
            "patch",
            "cm",
            "web-env",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"data":{"B":"2"}}"#,
        ],
        None,
    );
    cluster.ok(
        &[
            "patch",
            "cm",
            "web-env",
            "-n",
            "shop",
            "-p",
            r#"{"data":{"C":"3"}}"#,
        ],
        None,
    );
    cluster.ok(
        &[
            "patch", "cm", "web-env", "-n", "shop", "--type=json",
            "-p", r#"[{"op":"remove","path":"/data/GREETING"},{"op":"add","path":"/data/D","value":"4"}]"#,
        ],
        None,
    );
    let map = cluster.json(&["get", "cm", "web-env", "-n", "shop"]);
    assert_eq!(
        map["data"],
        serde_json::json!({ "B": "2", "C": "3", "D": "4" })
    );
    assert_ne!(map["metadata"]["resourceVersion"], before);
    // Nothing to change: the object is not written.
    let unchanged = version("web-env");
    cluster.ok(
        &[
            "patch",
            "cm",
            "web-env",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"data":{"B":"2"}}"#,
        ],
        None,
    );
    assert_eq!(version("web-env"), unchanged);

    let names = |selector: &str| {
        let list = cluster.json(&["get", "cm", "-n", "shop", "-l", selector]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("!tier"), ["web-env"]);
    assert_eq!(names("tier"), ["other"]);
    assert_eq!(names("tier notin (front)"), ["other", "web-env"]);
    assert_eq!(names("tier in (back,front)"), ["other"]);
    assert_eq!(names("tier!=back"), ["web-env"]);
    let fields = cluster.json(&[
        "get",
        "cm",
        "-n",
        "shop",
        "--field-selector",
        "metadata.name=other",
    ]);
    assert_eq!(fields["items"].as_array().unwrap().len(), 1);

    let file = cluster.file("web.yaml", &revision(1, 1));
    cluster.ok(&["apply", "--server-side", "-f", &file], None);
    cluster.ok(
        &["scale", "deployment/web-1", "-n", "shop", "--replicas=2"],
        None,
    );
    eventually(5, "two pods", || {
        (cluster.fake.pod_names().len() == 2).then_some(())
    });
    let deployment = cluster.json(&["get", "deploy", "web-1", "-n", "shop"]);
    assert_eq!(deployment["metadata"]["generation"], 2);
    cluster.ok(
        &["scale", "deployment/web-1", "-n", "shop", "--replicas=0"],
        None,
    );
    eventually(5, "no pods", || {
        cluster.fake.pod_names().is_empty().then_some(())
    });
    cluster.ok(&["delete", "cm", "-n", "shop", "-l", "tier=back"], None);
    assert_eq!(cluster.fake.objects("configmaps").len(), 1);
    let gone = cluster.kubectl(&["get", "cm", "other", "-n", "shop"], None);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("configmaps \"other\" not found"));
}
