//! Against the real Pub/Sub emulator, found as Mahavishnu finds it (`PUBSUB_EMULATOR_HOST`, else the
//! Cloud SDK from `CLOUDSDK_ROOT_DIR` or `gcloud` on PATH, and Java). Without one these tests fail with
//! the reason, unless `MAHAVISHNU_TEST_NO_PUBSUB=1` says to skip them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::SubscriptionAdmin;
use mahavishnu_core::deploy::events::{EventBus, PushSubscription, TopicRef};
use mahavishnu_pubsub::{Emulator, EmulatorSource, PubSubBus, RunningEmulator};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const PROJECT: &str = "mahavishnu-test";
const DELIVERY: Duration = Duration::from_secs(30);

/// Whether the emulator is missing and the test may say so and pass; panics with the reason when it
/// is missing and skipping was not asked for.
fn missing(reason: Result<(), String>) -> bool {
    match reason {
        Ok(()) => false,
        Err(reason) if std::env::var("MAHAVISHNU_TEST_NO_PUBSUB").as_deref() == Ok("1") => {
            eprintln!("skipped (MAHAVISHNU_TEST_NO_PUBSUB=1): {reason}");
            true
        }
        Err(reason) => panic!("{reason}"),
    }
}

/// The emulator state directory of one test, whose emulator is stopped when the test ends, passed or
/// not.
struct StateDir {
    root: tempfile::TempDir,
}

impl StateDir {
    fn new() -> StateDir {
        StateDir {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Not created yet, so that `ensure` has to make it.
    fn path(&self) -> PathBuf {
        self.root.path().join("state")
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(e) = Emulator::stop(&self.path()) {
            eprintln!("could not stop the test's emulator: {e}");
        }
    }
}

/// The launcher, for the tests of starting and stopping, which `PUBSUB_EMULATOR_HOST` must not bypass.
fn launcher() -> Option<EmulatorSource> {
    match Emulator::locate_launcher() {
        Ok(source) => Some(source),
        Err(reason) => {
            missing(Err(reason));
            None
        }
    }
}

/// A bus on an emulator of the test's own (or the one `PUBSUB_EMULATOR_HOST` names).
async fn bus() -> Option<(StateDir, RunningEmulator, PubSubBus)> {
    if missing(Emulator::locate().map(|_| ())) {
        return None;
    }
    let dir = StateDir::new();
    let emulator = Emulator::ensure(&dir.path())
        .await
        .expect("the emulator starts");
    let bus = PubSubBus::connect(&emulator.endpoint, PROJECT)
        .await
        .expect("the bus connects");
    Some((dir, emulator, bus))
}

/// Names no other test (nor an earlier run on a shared emulator) uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

fn topic(name: &str) -> TopicRef {
    TopicRef {
        project: PROJECT.into(),
        id: unique(name),
    }
}

fn push(id: &str, topic: &TopicRef, endpoint: &str) -> PushSubscription {
    PushSubscription {
        push_identity: None,
        id: unique(id),
        topic: topic.clone(),
        endpoint: endpoint.into(),
        dead_letter: None,
        ack_deadline: Duration::from_secs(10),
    }
}

async fn admin(emulator: &RunningEmulator) -> SubscriptionAdmin {
    SubscriptionAdmin::builder()
        .with_endpoint(&emulator.endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .expect("a subscription admin client")
}

/// The dead-letter policy as the emulator holds it; one with an empty topic counts as none.
async fn dead_letter(admin: &SubscriptionAdmin, name: &str) -> Option<(String, i32)> {
    admin
        .get_subscription()
        .set_subscription(name)
        .send()
        .await
        .expect("the subscription reads back")
        .dead_letter_policy
        .filter(|p| !p.dead_letter_topic.is_empty())
        .map(|p| (p.dead_letter_topic, p.max_delivery_attempts))
}

fn subscription_path(subscription: &PushSubscription) -> String {
    format!(
        "projects/{}/subscriptions/{}",
        subscription.topic.project, subscription.id
    )
}

/// A loopback HTTP server that answers every POST with 200 and hands its JSON body to the test.
struct PushServer {
    url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
}

impl PushServer {
    async fn start() -> PushServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!(
            "http://{}/events/push",
            listener.local_addr().expect("its address")
        );
        let (tx, bodies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, tx.clone()));
            }
        });
        PushServer { url, bodies }
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(DELIVERY, self.bodies.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing was pushed to {} within {DELIVERY:?}", self.url))
            .expect("the server runs")
    }

    /// Fails when anything arrives within `wait`.
    async fn none_within(&mut self, wait: Duration) {
        if let Ok(Some(body)) = tokio::time::timeout(wait, self.bodies.recv()).await {
            panic!(
                "{} was pushed to {}, which it should have left",
                body, self.url
            );
        }
    }
}

/// Reads requests off one connection (the emulator keeps it alive), by Content-Length.
async fn serve(mut stream: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Value>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("the push request has a Content-Length");
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "the push body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        let _ = tx.send(json);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

fn answers(host: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // The status line is enough, and the emulator may keep the connection open after it.
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).is_ok() && status.starts_with(b"HTTP/1.1 200")
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_starts_one_emulator_and_a_second_ensure_reuses_it() {
    let Some(source) = launcher() else { return };
    let dir = StateDir::new();
    let first = Emulator::ensure_with(source.clone(), &dir.path())
        .await
        .expect("the emulator starts");
    let pid = first.pid.expect("a started emulator has a pid");
    assert!(process_exists(pid));
    assert_eq!(first.endpoint, format!("http://{}", first.host));
    assert!(first.host.starts_with("127.0.0.1:"), "{}", first.host);
    assert!(answers(&first.host), "{} does not answer", first.host);

    assert_eq!(mode(&dir.path()), 0o700);
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("pubsub-emulator.json")).expect("the record"),
    )
    .expect("the record is JSON");
    assert_eq!(record["pid"], pid);
    assert_eq!(
        record["port"].to_string(),
        first.host.trim_start_matches("127.0.0.1:")
    );
    assert!(
        record["started"].as_u64().is_some_and(|t| t > 0),
        "{record}"
    );
    for file in [
        "pubsub-emulator.json",
        "pubsub-emulator.lock",
        "pubsub-emulator.log",
    ] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }

    let again = Emulator::ensure_with(source, &dir.path())
        .await
        .expect("the emulator is found again");
    assert_eq!(again, first, "a second ensure started another emulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_start_one_emulator() {
    let Some(source) = launcher() else { return };
    let dir = StateDir::new();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (source, path) = (source.clone(), dir.path());
            tokio::spawn(async move { Emulator::ensure_with(source, &path).await })
        })
        .collect();
    let mut found = Vec::new();
    for task in tasks {
        found.push(
            task.await
                .expect("the task ends")
                .expect("the emulator starts"),
        );
    }
    assert!(found[0].pid.is_some());
    assert_eq!(found[0], found[1], "two emulators were started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_emulator_and_the_next_ensure_starts_another() {
    let Some(source) = launcher() else { return };
    let dir = StateDir::new();
    let first = Emulator::ensure_with(source.clone(), &dir.path())
        .await
        .expect("the emulator starts");
    let pid = first.pid.expect("a pid");

    assert!(
        Emulator::stop(&dir.path()).expect("it stops"),
        "stop found nothing running"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!process_exists(pid), "process {pid} outlived stop");
    assert!(!answers(&first.host), "{} still answers", first.host);
    assert!(!dir.path().join("pubsub-emulator.json").exists());
    assert!(
        !Emulator::stop(&dir.path()).expect("stopping nothing"),
        "a second stop found something running"
    );

    // A record left by an emulator that died without stop (a reboot, say) is not reused.
    std::fs::write(
        dir.path().join("pubsub-emulator.json"),
        format!(
            r#"{{"pid":{pid},"port":{},"started":1}}"#,
            first.host.trim_start_matches("127.0.0.1:")
        ),
    )
    .expect("a stale record");
    let second = Emulator::ensure_with(source, &dir.path())
        .await
        .expect("a new emulator starts");
    assert_ne!(second.pid, first.pid);
    assert!(answers(&second.host));
}

#[tokio::test]
async fn a_launcher_that_dies_is_reported_with_the_end_of_its_log() {
    use std::os::unix::fs::PermissionsExt;
    // A stand-in for the launcher: this needs no emulator.
    let dir = StateDir::new();
    let launcher = dir.root.path().join("cloud-pubsub-emulator");
    std::fs::write(
        &launcher,
        "#!/bin/sh\necho \"starting with $1 $2\"\necho 'java.net.BindException: Address already in use' >&2\nexit 3\n",
    )
    .expect("the stand-in");
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))
        .expect("made executable");
    let source = EmulatorSource::Launcher {
        launcher,
        java: dir.root.path().join("jdk/bin/java"),
    };
    let error = Emulator::ensure_with(source, &dir.path())
        .await
        .expect_err("a launcher that exits")
        .to_string();
    assert!(error.contains("exited"), "{error}");
    assert!(error.contains("Address already in use"), "{error}");
    assert!(
        error.contains("starting with --host=127.0.0.1 --port="),
        "{error}"
    );
    assert!(!dir.path().join("pubsub-emulator.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_is_pushed_in_the_pubsub_envelope() {
    let Some((_dir, _emulator, bus)) = bus().await else {
        return;
    };
    let mut server = PushServer::start().await;
    let orders = topic("orders");
    let subscription = push("orders-to-billing", &orders, &server.url);
    bus.ensure_topic(&orders).await.expect("the topic");
    bus.ensure_push_subscription(&subscription)
        .await
        .expect("the subscription");

    let attributes = BTreeMap::from([
        ("kind".to_string(), "order.created".to_string()),
        ("tenant".to_string(), "acme é".to_string()),
    ]);
    let data = b"{\"order\": 42}\x00\xff";
    let id = bus
        .publish(&orders, data, &attributes)
        .await
        .expect("the message is published");
    assert!(!id.is_empty());

    let envelope = server.next().await;
    let message = &envelope["message"];
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(message["data"].as_str().expect("data is a string"))
        .expect("data is base64");
    assert_eq!(decoded, data);
    let pushed: BTreeMap<String, String> =
        serde_json::from_value(message["attributes"].clone()).expect("attributes are strings");
    assert_eq!(pushed, attributes);
    assert_eq!(message["messageId"], id.as_str());
    assert!(
        message["publishTime"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{envelope}"
    );
    assert_eq!(envelope["subscription"], subscription_path(&subscription));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensures_are_idempotent_and_a_new_endpoint_takes_the_messages() {
    let Some((_dir, emulator, bus)) = bus().await else {
        return;
    };
    let mut old = PushServer::start().await;
    let mut new = PushServer::start().await;
    let orders = topic("orders");
    let mut subscription = push("orders-to-shipping", &orders, &old.url);
    for _ in 0..2 {
        bus.ensure_topic(&orders).await.expect("the topic");
        bus.ensure_push_subscription(&subscription)
            .await
            .expect("the subscription");
    }
    let none = BTreeMap::new();
    bus.publish(&orders, b"first", &none)
        .await
        .expect("published");
    assert_eq!(old.next().await["message"]["data"], "Zmlyc3Q=");

    subscription.endpoint = new.url.clone();
    subscription.ack_deadline = Duration::from_secs(42);
    bus.ensure_push_subscription(&subscription)
        .await
        .expect("the endpoint moves");
    let stored = admin(&emulator)
        .await
        .get_subscription()
        .set_subscription(subscription_path(&subscription))
        .send()
        .await
        .expect("the subscription reads back");
    assert_eq!(
        stored
            .push_config
            .as_ref()
            .map(|p| p.push_endpoint.as_str()),
        Some(new.url.as_str())
    );
    assert_eq!(stored.ack_deadline_seconds, 42);

    bus.publish(&orders, b"second", &none)
        .await
        .expect("published");
    assert_eq!(new.next().await["message"]["data"], "c2Vjb25k");
    old.none_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_policy_is_set_changed_and_removed() {
    let Some((_dir, emulator, bus)) = bus().await else {
        return;
    };
    let orders = topic("orders");
    let dead = topic("orders-dead");
    bus.ensure_topic(&orders).await.expect("the topic");
    bus.ensure_topic(&dead)
        .await
        .expect("the dead-letter topic");
    let mut subscription = push("orders-to-audit", &orders, "http://127.0.0.1:9/events");
    subscription.dead_letter = Some((dead.clone(), 5));
    bus.ensure_push_subscription(&subscription)
        .await
        .expect("the subscription");

    let admin = admin(&emulator).await;
    let name = subscription_path(&subscription);
    assert_eq!(dead_letter(&admin, &name).await, Some((dead.path(), 5)));

    let mut changed = subscription.clone();
    changed.dead_letter = Some((dead.clone(), 12));
    bus.ensure_push_subscription(&changed)
        .await
        .expect("the policy changes");
    assert_eq!(dead_letter(&admin, &name).await, Some((dead.path(), 12)));

    changed.dead_letter = None;
    bus.ensure_push_subscription(&changed)
        .await
        .expect("the policy goes");
    assert_eq!(dead_letter(&admin, &name).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_what_is_missing_is_not_an_error() {
    let Some((_dir, emulator, bus)) = bus().await else {
        return;
    };
    let orders = topic("orders");
    let subscription = push("orders-to-nowhere", &orders, "http://127.0.0.1:9/events");
    bus.delete_subscription(PROJECT, &subscription.id)
        .await
        .expect("deleting a missing subscription");
    bus.delete_topic(&orders)
        .await
        .expect("deleting a missing topic");

    bus.ensure_topic(&orders).await.expect("the topic");
    bus.ensure_push_subscription(&subscription)
        .await
        .expect("the subscription");
    bus.delete_subscription(PROJECT, &subscription.id)
        .await
        .expect("deleting the subscription");
    bus.delete_topic(&orders).await.expect("deleting the topic");
    let gone = admin(&emulator)
        .await
        .get_subscription()
        .set_subscription(subscription_path(&subscription))
        .send()
        .await;
    assert!(gone.is_err(), "the subscription is still there: {gone:?}");
    let error = bus
        .publish(&orders, b"lost", &BTreeMap::new())
        .await
        .expect_err("publishing to a deleted topic");
    assert!(error.to_string().contains(&orders.path()), "{error}");

    bus.delete_subscription(PROJECT, &subscription.id)
        .await
        .expect("deleting it again");
    bus.delete_topic(&orders).await.expect("deleting it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_cannot_move_to_another_topic() {
    let Some((_dir, _emulator, bus)) = bus().await else {
        return;
    };
    let orders = topic("orders");
    let refunds = topic("refunds");
    bus.ensure_topic(&orders).await.expect("the topic");
    bus.ensure_topic(&refunds).await.expect("the other topic");
    let mut subscription = push("to-billing", &orders, "http://127.0.0.1:9/events");
    bus.ensure_push_subscription(&subscription)
        .await
        .expect("the subscription");
    subscription.topic = refunds.clone();
    let error = bus
        .ensure_push_subscription(&subscription)
        .await
        .expect_err("moving it")
        .to_string();
    assert!(
        error.contains(&orders.path()) && error.contains("delete it"),
        "{error}"
    );
}

#[tokio::test]
async fn the_client_environment_names_the_emulator() {
    // Connecting sends nothing, so this needs no emulator.
    let bus = PubSubBus::connect("http://127.0.0.1:8085", PROJECT)
        .await
        .expect("the bus");
    let env = bus.client_env();
    assert_eq!(env["PUBSUB_EMULATOR_HOST"], "127.0.0.1:8085");
    assert_eq!(env["PUBSUB_PROJECT_ID"], PROJECT);
    assert_eq!(env["GOOGLE_CLOUD_PROJECT"], PROJECT);
    assert!(
        bus.location().contains("127.0.0.1:8085"),
        "{}",
        bus.location()
    );
    let error = PubSubBus::connect("127.0.0.1:8085", PROJECT)
        .await
        .expect_err("an endpoint without a scheme")
        .to_string();
    assert!(error.contains("http://HOST:PORT"), "{error}");
}

/// Set in the child process of the test below, to the state directory it starts the emulator in.
const CHILD_DIR: &str = "MAHAVISHNU_TEST_PUBSUB_CHILD_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_outlives_the_process_that_started_it() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        // The child: start the emulator, say which, and exit.
        let source = Emulator::locate_launcher().expect("the launcher, as the parent found it");
        let running = Emulator::ensure_with(source, Path::new(&dir))
            .await
            .expect("the emulator starts");
        println!("child started pid={:?}", running.pid);
        return;
    }
    let Some(source) = launcher() else { return };
    let dir = StateDir::new();
    // This test binary again, running only this test, as the process that starts the emulator. Its
    // output is read to the end, which also shows the emulator does not hold the caller's pipes.
    let child = tokio::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "the_emulator_outlives_the_process_that_started_it",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("the child ends although the emulator it started runs on")
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started: u32 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("child started pid=Some("))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the child says which emulator it started: {stdout}"));

    assert!(
        process_exists(started),
        "the emulator ended with its caller"
    );
    let found = Emulator::ensure_with(source, &dir.path())
        .await
        .expect("the emulator is found");
    assert_eq!(found.pid, Some(started));
    assert!(answers(&found.host));
}

#[tokio::test]
async fn an_emulator_that_does_not_answer_is_named_in_the_error() {
    // A port nothing listens on: this needs no emulator.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bus = PubSubBus::connect(&format!("http://127.0.0.1:{port}"), PROJECT)
        .await
        .expect("the bus");
    let started = Instant::now();
    let error = bus
        .ensure_topic(&topic("orders"))
        .await
        .expect_err("no emulator there")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?} to give up",
        started.elapsed()
    );
    assert!(
        error.contains(&format!("127.0.0.1:{port} does not answer")),
        "{error}"
    );
}
