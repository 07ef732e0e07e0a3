//! The conformance suite of the `Target` trait. Every target runs it unchanged: the tmux and pty targets
//! on this machine, later targets against whatever the tests can reach. A target passes when every check
//! holds; each failure names the check and what was seen.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mahavishnu_core::keys::{Key, NamedKey};
use mahavishnu_core::{
    Error, ExecRequest, InputPart, InstanceId, LaunchSpec, Observation, ObservedStatus, Result,
    ScreenOptions, Target,
};

/// What the suite needs to know about a target.
pub struct Fixture {
    /// The target under test.
    pub target: Arc<dyn Target>,
    /// A POSIX shell on the target, e.g. `/bin/sh`.
    pub shell: String,
    /// A directory that exists on the target, used as the working directory.
    pub cwd: PathBuf,
    /// A prefix for instance names, unique to this run.
    pub prefix: String,
    /// How long the suite waits for a screen or state to appear.
    pub patience: Duration,
}

impl Fixture {
    fn spec(&self, name: &str, command: &[&str]) -> LaunchSpec {
        let native = format!("{}-{name}", self.prefix);
        LaunchSpec {
            id: InstanceId::new(self.target.name().clone(), native)
                .expect("conformance names are valid ids"),
            profile: "conformance".into(),
            command: command.iter().map(|word| word.to_string()).collect(),
            cwd: self.cwd.clone(),
            env: BTreeMap::from([("MV_CONFORMANCE".to_string(), "yes it is".to_string())]),
            rows: 24,
            cols: 100,
            labels: BTreeMap::new(),
            container: mahavishnu_core::ContainerSpec {
                working_dir: Some(self.cwd.clone()),
                ..Default::default()
            },
        }
    }

    async fn launch(&self, name: &str, command: &[&str]) -> LaunchSpec {
        let spec = self.spec(name, command);
        let observation = self
            .target
            .launch(&spec)
            .await
            .unwrap_or_else(|e| panic!("launch {name}: {e}"));
        assert_eq!(
            observation.native,
            spec.id.native(),
            "launch reports the native id it was given"
        );
        spec
    }

    /// What the program has shown so far: the screen with its scrollback when the target has screens,
    /// else its logs; `None` when it has neither.
    async fn output(&self, native: &str) -> Option<mahavishnu_core::Result<String>> {
        let capabilities = self.target.capabilities();
        if capabilities.screen {
            let options = ScreenOptions {
                scrollback: true,
                ansi: false,
            };
            Some(self.target.screen(native, options).await)
        } else if capabilities.logs {
            Some(self.target.logs(native).await)
        } else {
            None
        }
    }

    /// Waits until the program's output (screen, else logs) passes `check`. A target that shows no
    /// output at all gets a moment instead, so that what follows still happens after the program ran.
    async fn output_until(&self, native: &str, what: &str, check: impl Fn(&str) -> bool) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < self.patience {
            match self.output(native).await {
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return;
                }
                Some(Ok(output)) if check(&output) => return,
                Some(Ok(output)) => last = output,
                Some(Err(_)) => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{native}: {what} never appeared in its output; last output:\n{last}");
    }

    /// Stops an instance a check is done with (two seconds of grace).
    async fn stop(&self, native: &str) {
        self.target
            .stop(native, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("stop {native}: {e}"));
    }

    async fn screen_until(&self, native: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < self.patience {
            if let Ok(screen) = self.target.screen(native, ScreenOptions::default()).await {
                if check(&screen) {
                    return screen;
                }
                last = screen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{native}: {what} never appeared on the screen; last screen:\n{last}");
    }

    async fn observe_until(
        &self,
        native: &str,
        what: &str,
        check: impl Fn(Option<&Observation>) -> bool,
    ) {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < self.patience {
            let observed = self.target.list().await.expect("list");
            let mine = observed
                .into_iter()
                .find(|observation| observation.native == native);
            if check(mine.as_ref()) {
                return;
            }
            last = mine;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{native}: never {what}; last observation: {last:?}");
    }
}

/// Runs the checks of every capability the target declares, and for every operation it does not
/// declare checks that it is refused with `Error::Unsupported` (neither carried out nor a panic).
pub async fn run_all(fixture: &Fixture) {
    let capabilities = fixture.target.capabilities();
    check("preflight", preflight(fixture)).await;
    check("launch and list", launch_and_list(fixture)).await;
    if capabilities.send {
        check("text is typed literally", literal_text(fixture)).await;
        check("named keys", named_keys(fixture)).await;
    }
    if capabilities.screen && capabilities.send {
        check("resize", resize(fixture)).await;
    }
    check("notices of output", output_notices(fixture)).await;
    if capabilities.exec {
        check("exec", exec(fixture)).await;
    }
    check("exit code and last screen", exit_and_last_screen(fixture)).await;
    if capabilities.screen {
        check("scrollback", scrollback(fixture)).await;
    }
    if capabilities.logs {
        check("logs", logs(fixture)).await;
    }
    check("idle time", idle_time(fixture)).await;
    if capabilities.attach {
        check("attach command", attach(fixture)).await;
    }
    check("stop", stop(fixture)).await;
    if capabilities.recover {
        check("recover", recover(fixture)).await;
    }
    check("undeclared operations are unsupported", undeclared(fixture)).await;
    check("unknown instances", unknown(fixture)).await;
}

async fn check(name: &str, body: impl Future<Output = ()>) {
    let started = Instant::now();
    body.await;
    eprintln!(
        "conformance: {name} ok ({} ms)",
        started.elapsed().as_millis()
    );
}

async fn preflight(fixture: &Fixture) {
    let verdict = fixture.target.preflight().await;
    assert!(verdict.ready, "preflight: {}", verdict.detail);
    assert_eq!(
        &verdict.target,
        fixture.target.name(),
        "preflight names the target by its name"
    );
    assert!(
        !fixture.target.location().trim().is_empty(),
        "location says where the target points"
    );
}

async fn launch_and_list(fixture: &Fixture) {
    let spec = fixture.launch("list", &[&fixture.shell]).await;
    let native = spec.id.native();
    fixture
        .observe_until(native, "listed as running", |o| {
            o.is_some_and(|o| o.status == ObservedStatus::Running)
        })
        .await;
    let inspected = fixture
        .target
        .inspect(native)
        .await
        .expect("inspect")
        .expect("inspect finds it");
    assert_eq!(inspected.status, ObservedStatus::Running);
    if fixture.target.capabilities().host_processes {
        assert!(
            inspected.pid.is_some(),
            "a running local instance reports its pid"
        );
    }
    fixture.stop(native).await;
}

async fn literal_text(fixture: &Fixture) {
    // `cat` echoes what it receives: anything a shell would interpret must come back unchanged.
    let spec = fixture.launch("literal", &["cat"]).await;
    let native = spec.id.native();
    let nasty = r#"a'b"c $(touch pwned) `id` ; | & > x \n ünïcødé $HOME"#;
    let input = [
        InputPart::Text(nasty.into()),
        InputPart::Key(Key::Named(NamedKey::Enter)),
    ];
    fixture.target.send(native, &input).await.expect("send");
    fixture
        .output_until(native, "the text twice (echo and cat)", |output| {
            output.matches(nasty).count() >= 2
        })
        .await;
    assert!(
        !fixture.cwd.join("pwned").exists(),
        "text was interpreted by a shell"
    );
    fixture.stop(native).await;
}

async fn named_keys(fixture: &Fixture) {
    let spec = fixture.launch("keys", &["cat"]).await;
    let native = spec.id.native();
    let input = [
        InputPart::Text("abcx".into()),
        InputPart::Key(Key::Named(NamedKey::Backspace)),
        InputPart::Text("d".into()),
        InputPart::Key(Key::Named(NamedKey::Enter)),
    ];
    fixture
        .target
        .send(native, &input)
        .await
        .expect("send keys");
    fixture
        .output_until(native, "`abcd` echoed back by cat", |output| {
            output.matches("abcd").count() >= 2
        })
        .await;
    fixture
        .target
        .send(native, &[InputPart::Key(Key::Ctrl('d'))])
        .await
        .expect("send C-d");
    fixture
        .observe_until(native, "ended by C-d", |o| {
            o.is_none_or(|o| o.status == ObservedStatus::Exited(0))
        })
        .await;
    fixture.stop(native).await;
}

/// A terminal with a screen and a keyboard can be resized: the program sees its new size.
async fn resize(fixture: &Fixture) {
    let spec = fixture.launch("resize", &[&fixture.shell]).await;
    let native = spec.id.native();
    fixture.target.resize(native, 31, 97).await.expect("resize");
    let input = [
        InputPart::Text("stty size".into()),
        InputPart::Key(Key::Named(NamedKey::Enter)),
    ];
    fixture.target.send(native, &input).await.expect("send");
    fixture
        .screen_until(native, "`31 97` from stty", |screen| {
            screen.lines().any(|line| line.trim() == "31 97")
        })
        .await;
    fixture.stop(native).await;
}

/// A target that sends notices of output (`screen_changes`) names the instance that printed,
/// whether or not anything else did meanwhile.
async fn output_notices(fixture: &Fixture) {
    let Some(mut changes) = fixture.target.screen_changes() else {
        return;
    };
    let quiet = fixture.launch("quiet", &[&fixture.shell]).await;
    let spec = fixture.launch("notices", &["cat"]).await;
    let native = spec.id.native();
    // A session is found a moment after it starts: type until a notice names it.
    let started = Instant::now();
    let mut seen = Vec::new();
    let noticed = 'typing: loop {
        assert!(
            started.elapsed() < fixture.patience,
            "no notice named {native} while it printed; notices seen: {seen:?}"
        );
        let input = [
            InputPart::Text("x".into()),
            InputPart::Key(Key::Named(NamedKey::Enter)),
        ];
        fixture.target.send(native, &input).await.expect("send");
        let round = Instant::now() + Duration::from_millis(500);
        while let Ok(notice) = tokio::time::timeout_at(round.into(), changes.recv()).await {
            match notice {
                Ok(changed) if changed == native => break 'typing true,
                Ok(changed) => seen.push(changed),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("the notices ended: {error}"),
            }
        }
    };
    assert!(noticed);
    fixture.stop(native).await;
    fixture.stop(quiet.id.native()).await;
}

async fn exec(fixture: &Fixture) {
    let spec = fixture.launch("exec", &[&fixture.shell]).await;
    let native = spec.id.native();
    let script = "echo \"$MV_CONFORMANCE\"; pwd; echo oops >&2; exit 7";
    let request = ExecRequest {
        command: vec![fixture.shell.clone(), "-c".into(), script.into()],
        timeout: Duration::from_secs(10),
    };
    let output = fixture.target.exec(native, &request).await.expect("exec");
    assert_eq!(output.exit_code, Some(7));
    assert_eq!(
        output.stdout,
        format!("yes it is\n{}\n", fixture.cwd.display())
    );
    assert_eq!(output.stderr, "oops\n");
    assert!(!output.timed_out);
    let slow = ExecRequest {
        command: vec!["sleep".into(), "5".into()],
        timeout: Duration::from_millis(200),
    };
    let output = fixture
        .target
        .exec(native, &slow)
        .await
        .expect("exec with timeout");
    assert!(output.timed_out && output.exit_code.is_none(), "{output:?}");
    assert!(
        output.duration_ms < 3000,
        "the timeout kills the command: {output:?}"
    );
    fixture.stop(native).await;
}

async fn exit_and_last_screen(fixture: &Fixture) {
    let spec = fixture
        .launch("exits", &[&fixture.shell, "-c", "echo last words; exit 3"])
        .await;
    let native = spec.id.native();
    fixture
        .observe_until(native, "exited with code 3", |o| {
            o.is_some_and(|o| o.status == ObservedStatus::Exited(3))
        })
        .await;
    if fixture.target.capabilities().screen {
        let screen = fixture
            .target
            .screen(native, ScreenOptions::default())
            .await
            .expect("screen of an exited instance");
        assert!(
            screen.contains("last words"),
            "the last screen is kept: {screen:?}"
        );
    }
    if fixture.target.capabilities().logs {
        let logs = fixture
            .target
            .logs(native)
            .await
            .expect("logs of an exited instance");
        assert!(
            logs.contains("last words"),
            "the output of an exited instance is kept: {logs:?}"
        );
    }
    fixture
        .target
        .stop(native, Duration::from_secs(1))
        .await
        .expect("stop an exited instance");
    fixture
        .observe_until(native, "gone after stop", |o| o.is_none())
        .await;
}

async fn scrollback(fixture: &Fixture) {
    let spec = fixture
        .launch(
            "scroll",
            &[
                &fixture.shell,
                "-c",
                "i=1; while [ $i -le 300 ]; do echo line$i; i=$((i+1)); done; exec cat",
            ],
        )
        .await;
    let native = spec.id.native();
    fixture
        .screen_until(native, "line300", |screen| screen.contains("line300"))
        .await;
    let visible = fixture
        .target
        .screen(native, ScreenOptions::default())
        .await
        .expect("screen");
    assert!(
        !visible.contains("line1\n"),
        "the visible screen holds only the last rows"
    );
    assert!(
        visible.lines().count() <= 24,
        "one line per row: {} lines",
        visible.lines().count()
    );
    let all = fixture
        .target
        .screen(
            native,
            ScreenOptions {
                scrollback: true,
                ansi: false,
            },
        )
        .await
        .expect("scrollback");
    let lines: Vec<&str> = all
        .lines()
        .filter(|line| line.starts_with("line"))
        .collect();
    assert_eq!(
        lines.first(),
        Some(&"line1"),
        "scrollback starts at the first line"
    );
    assert_eq!(lines.len(), 300, "every line is kept, in order");
    fixture.stop(native).await;
}

async fn logs(fixture: &Fixture) {
    let spec = fixture
        .launch(
            "logs",
            &[
                &fixture.shell,
                "-c",
                "echo logged-first; echo logged-second; exec cat",
            ],
        )
        .await;
    let native = spec.id.native();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(logs) = fixture.target.logs(native).await {
            let first = logs.find("logged-first");
            let second = logs.find("logged-second");
            if let (Some(first), Some(second)) = (first, second) {
                assert!(first < second, "the output keeps its order: {logs:?}");
                break;
            }
            last = logs;
        }
        assert!(
            started.elapsed() < fixture.patience,
            "{native}: the logs never held what the program printed; last logs:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.stop(native).await;
}

async fn attach(fixture: &Fixture) {
    let spec = fixture.launch("attach", &[&fixture.shell]).await;
    let native = spec.id.native();
    let argv = fixture
        .target
        .attach_command(native)
        .expect("attach command");
    assert!(
        argv.first().is_some_and(|program| !program.is_empty()),
        "the attach command names a program: {argv:?}"
    );
    fixture.stop(native).await;
}

/// Runs one operation in a task of its own, so that a panic is reported as the check's failure, and
/// asserts that it was refused with `Error::Unsupported` naming this target.
async fn refused<T, F>(fixture: &Fixture, operation: &str, call: F)
where
    T: std::fmt::Debug + Send + 'static,
    F: FnOnce(Arc<dyn Target>) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>,
{
    let result = tokio::spawn(call(Arc::clone(&fixture.target))).await;
    let result = match result {
        Ok(result) => result,
        Err(error) => panic!("{operation} is not declared, and it panicked: {error}"),
    };
    match result {
        Err(Error::Unsupported { target, .. }) => assert_eq!(
            &target,
            fixture.target.name(),
            "the Unsupported error of {operation} names the target"
        ),
        other => {
            panic!("{operation} is not declared, so it returns Error::Unsupported, not {other:?}")
        }
    }
}

async fn undeclared(fixture: &Fixture) {
    let capabilities = fixture.target.capabilities();
    let spec = fixture.launch("undeclared", &[&fixture.shell]).await;
    let native = spec.id.native().to_string();
    if !capabilities.screen {
        let id = native.clone();
        refused(fixture, "screen", move |target| {
            Box::pin(async move { target.screen(&id, ScreenOptions::default()).await })
        })
        .await;
        let id = native.clone();
        let screens = tokio::spawn({
            let target = Arc::clone(&fixture.target);
            async move { target.screens(&[id]).await }
        })
        .await
        .unwrap_or_else(|error| panic!("screens is not declared, and it panicked: {error}"));
        assert_eq!(screens.len(), 1, "one result per instance");
        assert!(
            matches!(screens[0], Err(Error::Unsupported { .. })),
            "screens is not declared, so it returns Error::Unsupported, not {:?}",
            screens[0]
        );
    }
    if !capabilities.send {
        let id = native.clone();
        refused(fixture, "send", move |target| {
            Box::pin(async move { target.send(&id, &[InputPart::Text("x".into())]).await })
        })
        .await;
    }
    if !(capabilities.screen && capabilities.send) {
        let id = native.clone();
        refused(fixture, "resize", move |target| {
            Box::pin(async move { target.resize(&id, 30, 100).await })
        })
        .await;
    }
    if !capabilities.exec {
        let id = native.clone();
        let request = ExecRequest {
            command: vec!["true".into()],
            timeout: Duration::from_secs(5),
        };
        refused(fixture, "exec", move |target| {
            Box::pin(async move { target.exec(&id, &request).await })
        })
        .await;
    }
    if !capabilities.logs {
        let id = native.clone();
        refused(fixture, "logs", move |target| {
            Box::pin(async move { target.logs(&id).await })
        })
        .await;
    }
    if !capabilities.attach {
        let id = native.clone();
        refused(fixture, "attach", move |target| {
            Box::pin(async move { target.attach_command(&id) })
        })
        .await;
    }
    if !capabilities.recover {
        refused(fixture, "recover", move |target| {
            Box::pin(async move { target.recover().await })
        })
        .await;
    }
    fixture
        .target
        .stop(&native, Duration::from_secs(2))
        .await
        .expect("stop");
}

async fn idle_time(fixture: &Fixture) {
    let spec = fixture.launch("idle", &["cat"]).await;
    let native = spec.id.native();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let observation = fixture
        .target
        .inspect(native)
        .await
        .expect("inspect")
        .expect("found");
    // A local target sees its terminals' last output and foreground process; a remote one (a pod)
    // may not, and then the orchestrator measures idle time from the screens it reads.
    let local = fixture.target.capabilities().host_processes;
    match observation.idle_ms {
        Some(idle) => assert!(
            (200..=60_000).contains(&idle),
            "idle time after 2.2 s of silence: {idle} ms"
        ),
        None => assert!(!local, "a local target reports idle time"),
    }
    if local {
        assert_eq!(
            observation.foreground_job,
            Some(false),
            "cat itself holds the foreground"
        );
    }
    fixture.stop(native).await;
}

async fn stop(fixture: &Fixture) {
    // A program that ignores SIGHUP and SIGTERM is killed after the grace period.
    let spec = fixture
        .launch(
            "stubborn",
            &[
                &fixture.shell,
                "-c",
                "trap '' HUP TERM; echo ready; while :; do sleep 1; done",
            ],
        )
        .await;
    let native = spec.id.native();
    fixture
        .output_until(native, "ready", |output| output.contains("ready"))
        .await;
    let started = Instant::now();
    fixture
        .target
        .stop(native, Duration::from_millis(300))
        .await
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    fixture
        .observe_until(native, "gone after stop", |o| o.is_none())
        .await;
    fixture
        .target
        .stop(native, Duration::from_millis(100))
        .await
        .expect("stopping twice succeeds");
}

async fn recover(fixture: &Fixture) {
    let spec = fixture.launch("recover", &[&fixture.shell]).await;
    let native = spec.id.native();
    let specs = fixture.target.recover().await.expect("recover");
    let found = specs
        .iter()
        .find(|found| found.id == spec.id)
        .expect("a running instance is recoverable");
    assert_eq!(found.command, spec.command);
    assert_eq!(found.cwd, spec.cwd);
    fixture.stop(native).await;
}

async fn unknown(fixture: &Fixture) {
    let native = format!("{}-never-launched", fixture.prefix);
    assert!(
        fixture
            .target
            .inspect(&native)
            .await
            .expect("inspect")
            .is_none()
    );
    assert!(
        fixture
            .target
            .send(&native, &[InputPart::Text("x".into())])
            .await
            .is_err()
    );
    assert!(
        fixture
            .target
            .screen(&native, ScreenOptions::default())
            .await
            .is_err()
    );
    fixture
        .target
        .stop(&native, Duration::from_millis(100))
        .await
        .expect("stopping an unknown instance succeeds");
}
