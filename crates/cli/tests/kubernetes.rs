//! The kubernetes target end to end, against the fake API server of the tests (no real cluster runs on
//! these machines), and the fake's honesty checked with the real kubectl.

#![cfg(feature = "kubernetes")]

mod support;

use std::process::Command;

use support::fake_kube::FakeKube;
use support::{World, target_named};

/// A world whose kubernetes target talks to `fake`, in namespace `dev`, with a default image.
fn kube_world(fake: &FakeKube) -> World {
    let world = World::new();
    let kubeconfig = fake.kubeconfig(world.dir.path(), "dev");
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.kubernetes]\nkubeconfig = {:?}\nimage = \"busybox:1.36\"\nstartup_timeout_ms = 10000\n",
            kubeconfig.display().to_string()
        ),
    )
    .unwrap();
    world
}

fn kubectl(fake: &FakeKube, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--server")
        .arg(fake.url())
        .args(["--token", "fake-token", "--insecure-skip-tls-verify=false"])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("run kubectl")
}

/// kubectl's minor version (`kubectl version --client`).
fn kubectl_minor() -> u32 {
    let output = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .expect(
            "kubectl is installed (the Debian package kubernetes-client, or the upstream binary)",
        );
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    version["clientVersion"]["minor"]
        .as_str()
        .unwrap_or("0")
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0)
}

/// kubectl, the reference client, accepts the fake: it lists Mahavishnu's pods and execs in them.
#[test]
fn kubectl_lists_and_execs_against_the_fake() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let id = world
        .launch(&["shell", "--target", "kubernetes", "--name", "probe"])
        .remove(0);
    assert_eq!(id, "k8s:dev/probe");

    let listed = kubectl(
        &fake,
        &[
            "get",
            "pods",
            "-n",
            "dev",
            "-l",
            "app.kubernetes.io/managed-by=mahavishnu",
        ],
    );
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && stdout.contains("probe"),
        "kubectl get pods:\n{stdout}\n{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // kubectl speaks the websocket exec protocol from 1.30 on (SPDY before, which the fake lacks).
    if kubectl_minor() >= 30 {
        let exec = kubectl(
            &fake,
            &[
                "exec",
                "-n",
                "dev",
                "probe",
                "--",
                "sh",
                "-c",
                "echo from-kubectl; exit 3",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout),
            "from-kubectl\n",
            "kubectl exec: {}",
            String::from_utf8_lossy(&exec.stderr)
        );
        assert_eq!(
            exec.status.code(),
            Some(3),
            "kubectl passes the exit code on: {}",
            String::from_utf8_lossy(&exec.stderr)
        );
    } else {
        eprintln!(
            "kubectl older than 1.30 speaks only SPDY for exec; the exec cross-check needs 1.30+"
        );
    }
    let json = kubectl(&fake, &["get", "pod", "probe", "-n", "dev", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_slice(&json.stdout).expect("kubectl -o json");
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(
        pod["metadata"]["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty())
    );
    world.ok(&["terminal", "send", &id, "echo via-$((40+2))"]);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--for",
        "^via-42",
        "--timeout",
        "20",
    ]);
    let logs = kubectl(&fake, &["logs", "-n", "dev", "probe"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("via-42"),
        "kubectl logs shows what the session printed: {}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // A watch stream sees a new pod added and then running.
    let address = format!("127.0.0.1:{}", fake.port);
    let watcher = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /api/v1/namespaces/dev/pods?watch=true&resourceVersion=1&timeoutSeconds=3 HTTP/1.1\r\n\
             Host: fake\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    world.launch(&["shell", "--target", "kubernetes", "--name", "watched"]);
    let events = watcher.join().unwrap();
    assert!(
        events.contains(r#""type":"ADDED""#) && events.contains(r#""name":"watched""#),
        "{events}"
    );
    assert!(events.contains(r#""phase":"Running""#), "{events}");

    world.ok(&["terminal", "close", "--all", "--grace", "0"]);
    let started = std::time::Instant::now();
    while !fake.pod_names().is_empty() && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(fake.pod_names().is_empty(), "close deleted the pods");
}

/// Shells in pods: launch three, type, wait, read the screen, exec, list, logs, close.
#[test]
fn shells_in_pods_launch_type_read_exec_and_close() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let targets = world.json(&["targets"]);
    let kubernetes = target_named(&targets, "kubernetes");
    assert_eq!(kubernetes["ready"], true, "{kubernetes}");
    assert!(
        kubernetes["detail"]
            .as_str()
            .unwrap()
            .contains("v1.33.0-fake"),
        "{kubernetes}"
    );

    let launched = world.json(&[
        "terminal",
        "launch",
        "shell",
        "--target",
        "kubernetes",
        "--count",
        "3",
    ])["instances"]
        .clone();
    let ids: Vec<String> = launched
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| id.starts_with("k8s:dev/mv-")),
        "{ids:?}"
    );
    assert_eq!(fake.pod_names().len(), 3);

    let id = &ids[0];
    world.ok(&["terminal", "wait", id, "--idle", "300", "--timeout", "20"]);
    world.ok(&[
        "terminal",
        "send",
        id,
        "echo hello-$((6*7)) 'it''s' \"$HOME\"",
    ]);
    world.ok(&[
        "terminal",
        "wait",
        id,
        "--for",
        "^hello-42 its",
        "--timeout",
        "20",
    ]);
    let screen = world.ok(&["terminal", "capture", id]);
    assert!(
        screen.contains("echo hello-$((6*7))"),
        "the typed line is on the screen:\n{screen}"
    );
    world.ok(&["terminal", "keys", id, "C-c"]);

    let exec = world.json(&[
        "instances",
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "echo $MAHAVISHNU_INSTANCE_ID; exit 4",
    ]);
    assert_eq!(exec["exit_code"], 4, "{exec}");
    assert_eq!(exec["stdout"], format!("{id}\n"));

    let listed = world.json(&["instances", "list", "--target", "kubernetes"])["instances"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let status = world.json(&["instances", "status", id]);
    assert!(
        matches!(status["state"].as_str(), Some("running" | "waiting")),
        "{status}"
    );
    let logs = world.ok(&["instances", "logs", id]);
    assert!(logs.contains("hello-42"), "{logs}");

    world.ok(&["instances", "stop", &ids[0], "--grace", "0"]);
    world.ok(&["terminal", "close", "--all", "--grace", "0"]);
    let started = std::time::Instant::now();
    while !fake.pod_names().is_empty() && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        fake.pod_names().is_empty(),
        "every pod is deleted: {:?}",
        fake.pod_names()
    );
    assert_eq!(world.state_of(id), "closed");
}

/// A pod that cannot run is reported with the cluster's own reason.
#[test]
fn pods_that_cannot_run_say_why() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    for (image, reason) in [
        ("example/pull-fails:1", "ErrImagePull"),
        ("example/unschedulable:1", "Insufficient cpu"),
        ("example/crash:1", "CrashLoopBackOff"),
    ] {
        let stderr = world.fails(
            &[
                "terminal",
                "launch",
                "shell",
                "--target",
                "kubernetes",
                "--image",
                image,
            ],
            1,
        );
        assert!(stderr.contains(reason), "{image}: {stderr}");
    }
    let stderr = world.fails(
        &[
            "terminal",
            "launch",
            "shell",
            "--target",
            "kubernetes",
            "--namespace",
            "missing",
        ],
        1,
    );
    assert!(
        stderr.contains("namespaces \"missing\" not found"),
        "{stderr}"
    );
    let stderr = world.fails(
        &[
            "terminal",
            "launch",
            "shell",
            "--target",
            "kubernetes",
            "--name",
            "Bad_Name",
        ],
        1,
    );
    assert!(stderr.contains("cannot name a pod"), "{stderr}");
}

/// `--dry-run` prints the exact manifests and creates nothing.
#[test]
fn dry_run_prints_the_manifests() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[profiles.agent]\nprogram = \"qwen\"\nargs = [\"--yolo\"]\nimage = \"ghcr.io/acme/qwen:1\"\n\
         resources = { cpu = \"500m\", memory = \"1Gi\", memory_limit = \"2Gi\" }\n",
    )
    .unwrap();
    world.ok(&["trust"]);
    let yaml = world.ok(&[
        "--output",
        "yaml",
        "terminal",
        "launch",
        "agent",
        "--target",
        "kubernetes",
        "--count",
        "2",
        "--namespace",
        "team",
        "--dry-run",
    ]);
    let documents: Vec<&str> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(documents.len(), 2, "{yaml}");
    for document in documents {
        let pod: serde_json::Value = serde_yaml::from_str(document).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["namespace"], "team");
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "mahavishnu"
        );
        assert_eq!(pod["metadata"]["labels"]["mahavishnu.dev/profile"], "agent");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], "ghcr.io/acme/qwen:1");
        assert_eq!(container["command"], serde_json::json!(["qwen", "--yolo"]));
        assert_eq!(container["resources"]["requests"]["cpu"], "500m");
        assert_eq!(container["resources"]["limits"]["memory"], "2Gi");
        assert_eq!(container["tty"], true);
        assert_eq!(container["stdin"], true);
    }
    assert!(fake.pod_names().is_empty(), "a dry run creates nothing");
    assert!(
        world.json(&["terminal", "list", "--all"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// After the state is lost, `recover` re-adopts the pods by their labels.
#[test]
fn pods_are_recovered_after_the_state_is_lost() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let ids = world.launch(&["shell", "--target", "kubernetes", "--count", "2"]);
    std::fs::remove_dir_all(world.state_dir()).unwrap();
    assert!(
        world.json(&["terminal", "list"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let adopted = support::sorted_ids(&world.json(&["terminal", "recover"])["instances"].clone());
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(adopted, expected);
    let exec = world.json(&["terminal", "exec", &ids[0], "--", "true"]);
    assert_eq!(exec["exit_code"], 0);
}

/// Preflight names what is wrong: an unreadable kubeconfig, a namespace that does not exist.
#[test]
fn preflight_says_why_the_cluster_is_not_ready() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    for (key, value, reason) in [
        ("NAMESPACE", "missing", "namespace `missing` does not exist"),
        (
            "KUBECONFIG",
            "/nonexistent/kubeconfig",
            "/nonexistent/kubeconfig",
        ),
    ] {
        let output = world
            .command(&["--output", "json", "targets"])
            .env(format!("MAHAVISHNU_TARGETS__KUBERNETES__{key}"), value)
            .output()
            .unwrap();
        let verdicts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let kubernetes = target_named(&verdicts, "kubernetes");
        assert_eq!(kubernetes["ready"], false, "{key}={value}: {kubernetes}");
        assert!(
            kubernetes["detail"].as_str().unwrap().contains(reason),
            "{key}={value}: {kubernetes}"
        );
    }
}

/// A cluster that never answers is reported within seconds, not after the request timeout.
#[test]
fn an_unresponsive_cluster_is_reported_quickly() {
    // A listener that is never served: connections are made, requests never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let world = World::new();
    let kubeconfig = world.dir.path().join("silent-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: silent\nclusters:\n- name: silent\n  cluster:\n    \
             server: http://{}\ncontexts:\n- name: silent\n  context:\n    cluster: silent\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = world
        .command(&["--output", "json", "targets"])
        .env("MAHAVISHNU_TARGETS__KUBERNETES__KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let verdicts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let kubernetes = target_named(&verdicts, "kubernetes");
    assert_eq!(kubernetes["ready"], false);
    assert!(
        kubernetes["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 5s"),
        "{verdicts}"
    );
    drop(silent);
}

/// Against a real cluster, when `MAHAVISHNU_TEST_KUBECONFIG` names one: launch a pod, exec, close;
/// then deploy a web server, verify it, destroy it. A set but unreachable cluster fails the test.
#[test]
fn a_real_cluster_when_one_is_configured() {
    let Some(kubeconfig) = std::env::var_os("MAHAVISHNU_TEST_KUBECONFIG") else {
        eprintln!("MAHAVISHNU_TEST_KUBECONFIG is not set: no real cluster to test against");
        return;
    };
    let world = World::new();
    let image = std::env::var("MAHAVISHNU_TEST_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.kubernetes]\nkubeconfig = {:?}\nimage = {image:?}\n",
            std::path::PathBuf::from(kubeconfig).display().to_string()
        ),
    )
    .unwrap();
    let targets = world.json(&["targets"]);
    assert_eq!(
        targets[2]["ready"], true,
        "the configured cluster is reachable: {}",
        targets[2]
    );
    let id = world.launch(&["shell", "--target", "kubernetes"]).remove(0);
    let exec = world.json(&[
        "terminal",
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo real-$((2+3))",
    ]);
    assert_eq!(exec["stdout"], "real-5\n");
    world.ok(&["terminal", "close", &id]);

    // A deployment: a web server that listens on $PORT (8080), deployed, verified from inside the
    // cluster through the API server's service proxy, and destroyed.
    let image = std::env::var("MAHAVISHNU_TEST_DEPLOY_IMAGE")
        .unwrap_or_else(|_| "nginxinc/nginx-unprivileged:1.27".into());
    let sandcastle = format!("mv-test-{}", std::process::id());
    std::fs::write(
        world.work().join("mahavishnu.deploy.toml"),
        format!(
            "[sandcastle]\nname = \"{sandcastle}\"\nplatform = \"kubernetes\"\n\n[services.web]\n\
             image = \"{image}\"\nhealth = {{ path = \"/\", deadline = \"180s\" }}\n"
        ),
    )
    .unwrap();
    let report = world.json(&["deploy", "apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let verify = world.json(&["deploy", "verify"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
    world.ok(&["deploy", "destroy"]);
    let status = world.json(&["deploy", "status"]);
    assert!(
        status["regions"][0]["services"]
            .as_array()
            .is_none_or(|services| services
                .iter()
                .all(|s| s["revisions"].as_array().is_none_or(Vec::is_empty))),
        "destroyed: {status:#}"
    );
}

/// `instances logs --follow` prints as the pod prints, and ends when it ends.
#[test]
fn logs_follow_until_the_pod_ends() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let id = world
        .launch(&[
            "shell",
            "--target",
            "kubernetes",
            "--",
            "-c",
            "echo first; sleep 1; echo second",
        ])
        .remove(0);
    let started = std::time::Instant::now();
    let followed = world.ok(&["instances", "logs", "--follow", &id]);
    assert!(
        followed.contains("first") && followed.contains("second"),
        "{followed:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it waited for the rest"
    );
    assert_eq!(world.state_of(&id), "exited");
}

/// A value that must never be readable from a pod, an event, an error or the state.
const TOKEN: &str = "tok-51f0-do-not-leak";

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Regression: the pod annotation held the whole launch spec, env values included, so anyone who may
/// read pods read the secrets. The values now live in a Secret that the pod owns and reads them from.
#[test]
fn env_values_are_not_readable_from_the_pod_and_leave_with_it() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let env = format!("API_TOKEN={TOKEN}");
    let id = world
        .launch(&[
            "shell",
            "--target",
            "kubernetes",
            "--name",
            "keeper",
            "--env",
            &env,
            "--env",
            "MODE=fast",
        ])
        .remove(0);

    // The attack: someone who may only read pods reads everything a pod says.
    for args in [
        &["get", "pod", "keeper", "-n", "dev", "-o", "json"][..],
        &["get", "pods", "-A", "-o", "yaml"][..],
    ] {
        let read = kubectl(&fake, args);
        let text = String::from_utf8_lossy(&read.stdout);
        assert!(
            read.status.success() && text.contains("keeper"),
            "kubectl {args:?}: {text}"
        );
        assert!(
            !text.contains(TOKEN),
            "kubectl {args:?} shows the value:\n{text}"
        );
    }
    let pod: serde_json::Value = serde_json::from_slice(
        &kubectl(&fake, &["get", "pod", "keeper", "-n", "dev", "-o", "json"]).stdout,
    )
    .unwrap();
    let env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(
        env[0]["valueFrom"]["secretKeyRef"],
        serde_json::json!({ "name": "keeper", "key": "API_TOKEN", "optional": false }),
        "{env}"
    );
    let stored: serde_json::Value = serde_json::from_str(
        pod["metadata"]["annotations"]["mahavishnu.dev/spec"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored["env"],
        serde_json::json!({ "API_TOKEN": "", "MODE": "" }),
        "names only"
    );

    // The program still gets the values, in its terminal and in side commands.
    world.ok(&["terminal", "send", &id, "echo len-${#API_TOKEN}-$MODE"]);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--for",
        "^len-20-fast",
        "--timeout",
        "20",
    ]);
    let exec = world.json(&[
        "terminal",
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        &format!("test \"$API_TOKEN\" = {TOKEN}"),
    ]);
    assert_eq!(exec["exit_code"], 0, "{exec}");

    // The Secret: Mahavishnu's, opaque, base64, owned by the pod.
    let secret = fake.secret("dev", "keeper").expect("the env Secret");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mahavishnu"
    );
    assert_eq!(
        secret["data"]["API_TOKEN"], "dG9rLTUxZjAtZG8tbm90LWxlYWs=",
        "{secret}"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Pod");
    assert_eq!(owner["name"], "keeper");
    assert_eq!(owner["uid"], pod["metadata"]["uid"]);
    assert_eq!(owner["blockOwnerDeletion"], true);

    // Nothing of the value in events or in the state.
    let events = world.ok(&["events", "--limit", "1000"]);
    assert!(!events.contains(TOKEN), "{events}");
    assert_eq!(
        files_containing(&world.state_dir(), TOKEN),
        Vec::<std::path::PathBuf>::new()
    );

    // The fake has no garbage collector: the Secret goes because Mahavishnu deletes it.
    world.ok(&["terminal", "close", &id, "--grace", "0"]);
    assert_eq!(fake.secret_names(), Vec::<String>::new());
    assert!(fake.pod_names().is_empty());
}

/// `terminal launch shell --target kubernetes ARGS --env API_TOKEN=TOKEN`, which must fail without
/// showing the value; returns its stderr.
fn failed_launch_with_env(world: &World, args: &[&str]) -> String {
    let env = format!("API_TOKEN={TOKEN}");
    let mut all = vec!["terminal", "launch", "shell", "--target", "kubernetes"];
    all.extend(args);
    all.extend(["--env", &env]);
    let stderr = world.fails(&all, 1);
    assert!(!stderr.contains(TOKEN), "{stderr}");
    stderr
}

/// A launch that fails after its Secret was made deletes it and says nothing of the values; a Secret
/// that is not Mahavishnu's is never taken over nor deleted.
#[test]
fn failed_launches_leave_no_secret_and_foreign_secrets_are_left_alone() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let stderr = failed_launch_with_env(&world, &["--image", "example/pull-fails:1"]);
    assert!(stderr.contains("ErrImagePull"), "{stderr}");
    assert_eq!(
        fake.secret_names(),
        Vec::<String>::new(),
        "the pod did not run"
    );

    // A pod of that name exists already: the Secret made for the launch is deleted again.
    world.launch(&["shell", "--target", "kubernetes", "--name", "taken"]);
    std::fs::remove_dir_all(world.state_dir()).unwrap();
    let stderr = failed_launch_with_env(&world, &["--name", "taken"]);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(fake.secret_names(), Vec::<String>::new());

    // Someone else's Secret of the pod's name: the launch refuses and leaves it as it was.
    kubectl_create(&fake, &foreign_secret("held"));
    let before = fake.secret("dev", "held").unwrap();
    let stderr = failed_launch_with_env(&world, &["--name", "held"]);
    assert!(
        stderr.contains("Secret `dev/held` already exists"),
        "{stderr}"
    );
    assert_eq!(fake.secret("dev", "held").unwrap(), before);
    assert!(!fake.pod_names().contains(&"dev/held".to_string()));

    // Closing a pod without env leaves an unrelated Secret of the same name.
    kubectl_create(&fake, &foreign_secret("taken"));
    world.ok(&["terminal", "recover"]);
    world.ok(&["terminal", "close", "k8s:dev/taken", "--grace", "0"]);
    assert!(
        fake.secret("dev", "taken").is_some(),
        "not Mahavishnu's Secret"
    );
}

/// A Secret that is not Mahavishnu's (no label), as JSON for `kubectl create -f -`.
fn foreign_secret(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": "dev" },
        "data": { "OWN": "dGhlaXJz" },
    })
    .to_string()
}

/// `kubectl create -f -` of `manifest`; asserts success.
fn kubectl_create(fake: &FakeKube, manifest: &str) {
    use std::io::Write;
    let mut create = Command::new("kubectl")
        .arg("--server")
        .arg(fake.url())
        .args([
            "--token",
            "fake-token",
            "create",
            "--validate=false",
            "-f",
            "-",
        ])
        .env("KUBECONFIG", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    create
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let created = create.wait_with_output().unwrap();
    assert!(
        created.status.success(),
        "kubectl create {manifest}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
}

/// `--dry-run` shows the Secret with its values redacted, and creates nothing.
#[test]
fn dry_runs_show_the_env_secret_redacted() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let env = format!("API_TOKEN={TOKEN}");
    for format in ["yaml", "json"] {
        let shown = world.ok(&[
            "--output",
            format,
            "terminal",
            "launch",
            "shell",
            "--target",
            "kubernetes",
            "--name",
            "planned",
            "--env",
            &env,
            "--dry-run",
        ]);
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains("dG9rLTUxZjAtZG8tbm90LWxlYWs"), "{shown}");
        let plan: serde_json::Value = if format == "json" {
            serde_json::from_str::<serde_json::Value>(&shown).unwrap()[0].clone()
        } else {
            serde_yaml::from_str(shown.trim_start_matches("---\n")).unwrap()
        };
        assert_eq!(plan["kind"], "List", "{plan}");
        let secret = &plan["items"][0];
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(secret["metadata"]["name"], "planned");
        assert_eq!(secret["stringData"]["API_TOKEN"], "<redacted>");
        let pod = &plan["items"][1];
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "planned"
        );
    }
    assert!(fake.pod_names().is_empty() && fake.secret_names().is_empty());
}

/// A labelled pod made by someone else, as JSON for `kubectl create -f -`.
fn planted_pod(name: &str, record: &serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "dev",
            "labels": { "app.kubernetes.io/managed-by": "mahavishnu" },
            "annotations": { "mahavishnu.dev/spec": record.to_string() },
        },
        "spec": { "containers": [{ "name": "main", "image": "busybox:1.36", "command": ["sleep", "60"] }] },
    })
    .to_string()
}

/// Regression: `recover` adopted any labelled pod's record as it was, so a pod could plant a `tmux:` or
/// `pty:` instance (then driven on this machine) or claim another pod's id. Only a pod's own `k8s:`
/// record is adopted now; the rest is skipped without stopping the others.
#[test]
fn recover_adopts_only_a_pods_own_kubernetes_record() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let good = world
        .launch(&[
            "shell",
            "--target",
            "kubernetes",
            "--name",
            "good",
            "--env",
            "A=1",
        ])
        .remove(0);
    let pod: serde_json::Value = serde_json::from_slice(
        &kubectl(&fake, &["get", "pod", "good", "-n", "dev", "-o", "json"]).stdout,
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(
        pod["metadata"]["annotations"]["mahavishnu.dev/spec"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let claiming = |id: &str| {
        let mut record = record.clone();
        record["id"] = serde_json::json!(id);
        record["profile"] = serde_json::json!("planted");
        record
    };
    for (name, record) in [
        ("hostile-tmux", claiming("tmux:evil")),
        ("hostile-pty", claiming("pty:x")),
        ("hostile-other", claiming("k8s:dev/victim")),
        ("hostile-twin", claiming("k8s:dev/good")),
        ("hostile-junk", serde_json::json!("not a launch spec")),
    ] {
        kubectl_create(&fake, &planted_pod(name, &record));
    }

    std::fs::remove_dir_all(world.state_dir()).unwrap();
    let adopted = world.json(&["terminal", "recover"])["instances"].clone();
    assert_eq!(
        support::sorted_ids(&adopted),
        vec![good.clone()],
        "{adopted}"
    );
    assert_eq!(
        adopted[0]["profile"], "shell",
        "the pod's own record: {adopted}"
    );
    let known = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert_eq!(support::sorted_ids(&known), vec![good.clone()], "{known}");
    let exec = world.json(&["terminal", "exec", &good, "--", "sh", "-c", "echo $A"]);
    assert_eq!(exec["stdout"], "1\n");
}

/// Two clusters: an instance made in one context is reached there, whichever context is current when
/// a later command runs, and never through another.
#[test]
fn an_id_leads_only_to_the_cluster_it_was_made_in() {
    let (home, away) = (FakeKube::start(), FakeKube::start());
    let world = kube_world(&home);
    let kubeconfig = world.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: home\nclusters:\n- name: home\n  cluster:\n    server: {}\n\
             - name: away\n  cluster:\n    server: {}\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: fake\n    namespace: dev\n\
             - name: away\n  context:\n    cluster: away\n    user: fake\n    namespace: dev\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            home.url(),
            away.url()
        ),
    )
    .unwrap();
    let id = world
        .launch(&[
            "shell",
            "--target",
            "kubernetes",
            "--context",
            "away",
            "--name",
            "far",
        ])
        .remove(0);
    assert_eq!(away.pod_names(), vec!["dev/far".to_string()]);
    // A pod in the current context's cluster, which no call on the other instance may touch.
    let decoy = world
        .launch(&["shell", "--target", "kubernetes", "--name", "decoy"])
        .remove(0);
    assert_eq!(home.pod_names(), vec!["dev/decoy".to_string()]);

    // The current context is `home`; the instance was made in `away`, and every call goes there.
    let listed = world.json(&["terminal", "list"])["instances"].clone();
    let far = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|instance| instance["id"] == id.as_str())
        .unwrap();
    assert!(
        far["state"] == "running" || far["state"] == "waiting",
        "observed in its own cluster: {far}"
    );
    assert_eq!(world.sh(&id, "echo far-away").trim(), "far-away");
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);
    assert!(away.pod_names().is_empty(), "closed in its own cluster");
    assert_eq!(
        home.pod_names(),
        vec!["dev/decoy".to_string()],
        "the current context's cluster is untouched"
    );
    world.ok(&["terminal", "close", &decoy, "--grace", "0.2"]);
}
