//! Benchmark of `terminal list` across named targets, driving the release binary as a user would:
//! 50 shells on tmux, 50 on pty, and 20 on each of two clusters (`east` and `west`, each a fake API
//! server of the tests, standing in for a real cluster).
//!
//! `cargo bench -p mahavishnu --bench list`: prints the medians of the list of the local targets alone
//! (and again while `serve` runs, whose tmux control client then answers the list's tmux reads), of all
//! four targets, and of all four while one cluster, then both, answer every request 2 s late
//! (the targets are asked at the same time, so two slow clusters cost no more than one). A slow list
//! that takes more than five times the latency is measured a few times only, and marked so by its
//! count of runs.

#[allow(dead_code)]
#[path = "../tests/support/fake_kube.rs"]
mod fake_kube;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fake_kube::FakeKube;

const RUNS: usize = 15;
/// Runs of a list that takes far longer than its goal (see `Bench::list`).
const CUT_RUNS: usize = 3;
const LOCAL_SHELLS: usize = 50;
const CLUSTER_SHELLS: usize = 20;
const SLOW: Duration = Duration::from_secs(2);

struct Bench {
    home: tempfile::TempDir,
    socket: String,
}

impl Bench {
    fn command(&self, args: &[&str]) -> Command {
        let home = self.home.path();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mahavishnu"));
        command
            .args(args)
            .current_dir(home.join("work"))
            .env("HOME", home.join("home"))
            .env("MAHAVISHNU_STATE_DIR", home.join("state"))
            .env("MAHAVISHNU_RUNTIME_DIR", home.join("run"))
            .env("MAHAVISHNU_CONFIG", home.join("home/config.toml"))
            .env("MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME", &self.socket)
            .env("SHELL", "/bin/sh")
            .env_remove("MAHAVISHNU_TERMINAL__MAX_CONCURRENT");
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run mahavishnu");
        assert!(
            output.status.success(),
            "mahavishnu {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `serve` on a free loopback port, once it has told the CLI where it runs; stopped when dropped.
    fn start_serve(&self) -> Serve {
        let child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start serve");
        let file = self.home.path().join("state/serve.json");
        let started = Instant::now();
        while !file.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Serve(child)
    }

    fn configure(&self, text: &str) {
        std::fs::write(self.home.path().join("home/config.toml"), text).unwrap();
    }

    fn launch(&self, target: &str, count: usize) {
        let ids = self.run(&[
            "terminal",
            "launch",
            "shell",
            "--target",
            target,
            "--count",
            &count.to_string(),
        ]);
        assert_eq!(ids.lines().count(), count, "{target}: {ids}");
    }

    /// `terminal list ARGS` `RUNS` times (after one unmeasured run when `warm`) and returns the
    /// durations. Every row must have been reached, except in a list of slow targets (`cut_after`
    /// given), which tells how many rows were shown as unknown. When the first run of such a list
    /// takes longer than `cut_after`, far off any goal, only `CUT_RUNS` runs are made, so that the
    /// bench still ends.
    fn list(
        &self,
        args: &[&str],
        rows: usize,
        warm: bool,
        cut_after: Option<Duration>,
    ) -> Vec<Duration> {
        let mut all = vec!["--output", "json", "terminal", "list"];
        all.extend(args);
        let unknown_rows = std::cell::RefCell::new((0, String::new()));
        let measure = || {
            let started = Instant::now();
            let stdout = self.run(&all);
            let took = started.elapsed();
            let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            let listed = listed["instances"].as_array().cloned().unwrap_or_default();
            assert_eq!(listed.len(), rows, "terminal list {args:?}");
            let unknown: Vec<_> = listed
                .iter()
                .filter(|row| row.get("unknown").is_some_and(|u| !u.is_null()))
                .collect();
            if cut_after.is_none() {
                assert!(unknown.is_empty(), "rows not reached: {unknown:?}");
            } else if let Some(row) = unknown.first() {
                let mut seen = unknown_rows.borrow_mut();
                if unknown.len() > seen.0 {
                    *seen = (unknown.len(), row["unknown"].to_string());
                }
            }
            if took > Duration::from_secs(1) {
                eprintln!("  terminal list {args:?}: {:.1} s", took.as_secs_f64());
            }
            took
        };
        if warm {
            measure();
        }
        let first = measure();
        let runs = match cut_after {
            Some(limit) if first > limit => {
                eprintln!(
                    "  terminal list {args:?} took {:.1} s, over {:.0} s: {CUT_RUNS} runs only",
                    first.as_secs_f64(),
                    limit.as_secs_f64()
                );
                CUT_RUNS
            }
            _ => RUNS,
        };
        let samples = std::iter::once(first)
            .chain((1..runs).map(|_| measure()))
            .collect();
        let (unknown, reason) = unknown_rows.into_inner();
        if unknown > 0 {
            println!("  up to {unknown} of {rows} rows shown as unknown: {reason}");
        }
        samples
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self
            .command(&["terminal", "close", "--all", "--grace", "0"])
            .output();
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A running `serve`, ended with SIGTERM (so that it removes its file) when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Prints one row of the table; returns the median.
fn report(name: &str, samples: Vec<Duration>, budget: Duration) -> Duration {
    let (low, high) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    let runs = samples.len();
    let median = median(samples);
    let verdict = if median <= budget { "ok" } else { "OVER" };
    println!(
        "{name:<44} {runs:>4} {:>10.1} {:>10.1} {:>10.1}   {:>8.0} {verdict}",
        ms(median),
        ms(low),
        ms(high),
        ms(budget)
    );
    median
}

fn kube_target(dir: &Path, name: &str, fake: &FakeKube) -> String {
    let dir = dir.join(format!("kube-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = fake.kubeconfig(&dir, "bench");
    format!(
        "[targets.{name}]\nkind = \"kubernetes\"\nkubeconfig = {:?}\nimage = \"busybox:1.36\"\n\
         request_timeout_ms = 30000\n",
        kubeconfig.display().to_string()
    )
}

fn main() {
    let home = tempfile::Builder::new()
        .prefix("mvbench")
        .tempdir()
        .unwrap();
    for dir in ["home", "work"] {
        std::fs::create_dir_all(home.path().join(dir)).unwrap();
    }
    let bench = Bench {
        socket: format!("mvbench-list-{}", std::process::id()),
        home,
    };
    let (east, west) = (FakeKube::start(), FakeKube::start());
    println!(
        "{} cores; {LOCAL_SHELLS} shells on tmux, {LOCAL_SHELLS} on pty, {CLUSTER_SHELLS} on each of 2 fake clusters; {RUNS} runs each",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // The local targets alone, with no cluster in the configuration.
    bench.configure("");
    bench.launch("tmux", LOCAL_SHELLS);
    bench.launch("pty", LOCAL_SHELLS);
    // Timed once every shell has drawn its prompt: a list as a user sees it, not the first seconds.
    bench.run(&["terminal", "wait", "--all", "--waiting", "--timeout", "60"]);
    let local = 2 * LOCAL_SHELLS;
    let fast = Duration::from_millis(10);
    println!(
        "{:<44} {:>4} {:>10} {:>10} {:>10}   {:>8}",
        "terminal list", "runs", "median ms", "min ms", "max ms", "goal ms"
    );
    report(
        "--target tmux (no clusters configured)",
        bench.list(&["--target", "tmux"], LOCAL_SHELLS, true, None),
        fast,
    );
    report(
        "--target pty (no clusters configured)",
        bench.list(&["--target", "pty"], LOCAL_SHELLS, true, None),
        fast,
    );
    report(
        "all (tmux + pty, no clusters configured)",
        bench.list(&[], local, true, None),
        fast,
    );
    // While `serve` runs, the CLI's tmux reads go through serve's control client of the server.
    {
        let serve = bench.start_serve();
        report(
            "--target tmux, while serve runs",
            bench.list(&["--target", "tmux"], LOCAL_SHELLS, true, None),
            fast,
        );
        report(
            "all (tmux + pty), while serve runs",
            bench.list(&[], local, true, None),
            fast,
        );
        drop(serve);
    }

    // Both clusters configured, with shells of their own.
    let dir = bench.home.path().to_path_buf();
    bench.configure(&format!(
        "{}\n{}",
        kube_target(&dir, "east", &east),
        kube_target(&dir, "west", &west)
    ));
    bench.launch("east", CLUSTER_SHELLS);
    bench.launch("west", CLUSTER_SHELLS);
    let rows = local + 2 * CLUSTER_SHELLS;
    report(
        "--target tmux (clusters configured)",
        bench.list(&["--target", "tmux"], LOCAL_SHELLS, true, None),
        fast,
    );
    report(
        "--target pty (clusters configured)",
        bench.list(&["--target", "pty"], LOCAL_SHELLS, true, None),
        fast,
    );
    report(
        "all four targets, clusters fast",
        bench.list(&[], rows, true, None),
        Duration::from_millis(250),
    );

    east.set_latency(SLOW);
    let one = report(
        "all four, east answers 2 s late",
        bench.list(&[], rows, false, Some(5 * SLOW)),
        SLOW + Duration::from_millis(500),
    );
    west.set_latency(SLOW);
    let both = report(
        "all four, east and west answer 2 s late",
        bench.list(&[], rows, false, Some(5 * SLOW)),
        SLOW + Duration::from_millis(500),
    );
    println!(
        "two slow clusters / one slow cluster: {:.2} ({})",
        both.as_secs_f64() / one.as_secs_f64(),
        if both.as_secs_f64() < one.as_secs_f64() * 1.25 {
            "asked in parallel"
        } else {
            "asked one after the other"
        }
    );

    east.set_latency(Duration::ZERO);
    west.set_latency(Duration::ZERO);
    bench.run(&["terminal", "close", "--all", "--grace", "0"]);
}
