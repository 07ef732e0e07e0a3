//! The router's cost, measured side by side with the upstream it fronts.
//!
//! One run alternates phases that load a trivial upstream directly and through the router, so a
//! noisy machine slows both alike; then checks a 90/10 split over 2,000 requests and how soon a
//! `set_routes` shows in responses under load. The upstream runs in its own process, as a revision
//! does; the router and the load generator share this one.
//!
//! `cargo bench -p mahavishnu-local --bench router`

use std::convert::Infallible;
use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mahavishnu_local::router::{REVISION_HEADER, RouteRevision, RouteTable, Router, Upstream};
use tokio::net::{TcpListener, TcpStream};

/// Set in the child process that plays the upstream.
const UPSTREAM_ROLE: &str = "MAHAVISHNU_ROUTER_BENCH_UPSTREAM";
const CONNECTIONS: usize = 32;
const PHASE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

/// The upstream child's process id, for its CPU time.
static UPSTREAM_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn main() {
    if std::env::var_os(UPSTREAM_ROLE).is_some() {
        return run_upstream();
    }
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// The upstream: answers every request with "ok", and prints its port for the parent.
fn run_upstream() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
}

/// Which revision the rollback watch waits for, and when it was first seen.
#[derive(Default)]
struct Watch {
    armed: AtomicBool,
    target: Mutex<String>,
    seen: Mutex<Option<Instant>>,
}

impl Watch {
    fn check(&self, revision: Option<&hyper::header::HeaderValue>) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let Some(revision) = revision else { return };
        let target = self.target.lock().expect("lock");
        if revision.as_bytes() == target.as_bytes() {
            let mut seen = self.seen.lock().expect("lock");
            if seen.is_none() {
                *seen = Some(Instant::now());
            }
        }
    }
}

/// One keep-alive connection sending GET / back to back until `until`; returns latencies in µs.
async fn worker(addr: SocketAddr, until: Instant, watch: Option<Arc<Watch>>) -> Vec<u32> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(100_000);
    while Instant::now() < until {
        let request = Request::get("/")
            .header(hyper::header::HOST, "bench")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let start = Instant::now();
        // A keep-alive connection is ready again only once hyper has seen the previous exchange
        // end; sending before that fails with "connection was not ready".
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        if let Some(watch) = &watch {
            watch.check(response.headers().get(REVISION_HEADER));
        }
        let status = response.status();
        response.into_body().collect().await.expect("body");
        assert!(status.is_success(), "status {status}");
        latencies.push(start.elapsed().as_micros() as u32);
    }
    latencies
}

struct Phase {
    /// CPU seconds used by the upstream and by this process (router and load generator), per
    /// request, in µs.
    cpu_us: f64,
    rps: f64,
    median_ms: f64,
    p99_ms: f64,
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are the 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

async fn load(addr: SocketAddr, connections: usize, length: Duration) -> Phase {
    let upstream_pid = UPSTREAM_PID
        .get()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let cpu_before = cpu_seconds("self") + cpu_seconds(&upstream_pid);
    let start = Instant::now();
    let until = start + length;
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(addr, until, None)))
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") + cpu_seconds(&upstream_pid) - cpu_before;
    all.sort_unstable();
    let at = |q: f64| f64::from(all[((all.len() - 1) as f64 * q) as usize]) / 1000.0;
    Phase {
        cpu_us: cpu / all.len() as f64 * 1e6,
        rps: all.len() as f64 / elapsed,
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The upstream process, killed however the benchmark ends (a panic included), so it never
/// outlives the run.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn one(name: &str, weight: u8, upstream: SocketAddr) -> RouteRevision {
    RouteRevision {
        name: name.to_owned(),
        weight,
        upstreams: vec![Upstream { addr: upstream }],
    }
}

async fn bench() {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Killed(
        Command::new(exe)
            .env(UPSTREAM_ROLE, "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn upstream"),
    );
    let _ = UPSTREAM_PID.set(child.0.id());
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("upstream port");
    let port: u16 = line.trim().parse().expect("port");
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let router = Router::bind(0).await.expect("bind router");
    router.set_routes(RouteTable {
        revisions: vec![one("rev-a", 100, upstream)],
    });
    let via = SocketAddr::from((Ipv4Addr::LOCALHOST, router.port()));

    // Warm up both paths (connections, pools, page cache) before measuring.
    load(upstream, CONNECTIONS, Duration::from_secs(1)).await;
    load(via, CONNECTIONS, Duration::from_secs(1)).await;

    println!(
        "{CONNECTIONS} keep-alive connections, {} s per phase, {ROUNDS} rounds",
        PHASE.as_secs()
    );
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>12} {:>12}",
        "phase", "round", "req/s", "median ms", "p99 ms", "CPU µs/req"
    );
    let mut direct = Vec::new();
    let mut routed = Vec::new();
    for round in 1..=ROUNDS {
        for (label, addr) in [("direct", upstream), ("router", via)] {
            let phase = load(addr, CONNECTIONS, PHASE).await;
            println!(
                "{label:<8} {round:>6} {:>12.0} {:>12.3} {:>12.3} {:>12.1}",
                phase.rps, phase.median_ms, phase.p99_ms, phase.cpu_us
            );
            if label == "direct" {
                &mut direct
            } else {
                &mut routed
            }
            .push(phase);
        }
    }

    // One connection at a time: the latency a single request pays for the extra hop when the
    // machine is not saturated.
    let mut direct_one = Vec::new();
    let mut routed_one = Vec::new();
    for _ in 0..ROUNDS {
        direct_one.push(load(upstream, 1, Duration::from_secs(2)).await.median_ms);
        routed_one.push(load(via, 1, Duration::from_secs(2)).await.median_ms);
    }

    // 90/10 over 2,000 requests on one connection.
    router.set_routes(RouteTable {
        revisions: vec![one("rev-a", 90, upstream), one("rev-b", 10, upstream)],
    });
    let stream = TcpStream::connect(via).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut to_a = 0u32;
    for _ in 0..2000 {
        let request = Request::get("/")
            .header(hyper::header::HOST, "bench")
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        if response
            .headers()
            .get(REVISION_HEADER)
            .map(|v| v.as_bytes())
            == Some(b"rev-a")
        {
            to_a += 1;
        }
        response.into_body().collect().await.expect("body");
    }

    // Rollback visible: under full load, the time from set_routes to the first response naming
    // the new revision.
    let watch = Arc::new(Watch::default());
    router.set_routes(RouteTable {
        revisions: vec![one("rev-a", 100, upstream), one("rev-b", 0, upstream)],
    });
    let until = Instant::now() + Duration::from_secs(8);
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(worker(via, until, Some(Arc::clone(&watch)))))
        .collect();
    let mut switches = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (from, to) = if i % 2 == 0 {
            ("rev-a", "rev-b")
        } else {
            ("rev-b", "rev-a")
        };
        *watch.target.lock().expect("lock") = to.to_owned();
        *watch.seen.lock().expect("lock") = None;
        watch.armed.store(true, Ordering::Release);
        let start = Instant::now();
        router.set_routes(RouteTable {
            revisions: vec![one(to, 100, upstream), one(from, 0, upstream)],
        });
        loop {
            if let Some(seen) = *watch.seen.lock().expect("lock") {
                switches.push(seen.saturating_duration_since(start).as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "the new revision never answered"
            );
            tokio::task::yield_now().await;
        }
        watch.armed.store(false, Ordering::Release);
    }
    for w in workers {
        w.await.expect("worker");
    }
    router.shutdown();
    drop(child);

    let direct_rps = median(direct.iter().map(|p| p.rps).collect());
    let routed_rps = median(routed.iter().map(|p| p.rps).collect());
    let direct_ms = median(direct.iter().map(|p| p.median_ms).collect());
    let routed_ms = median(routed.iter().map(|p| p.median_ms).collect());
    let direct_cpu = median(direct.iter().map(|p| p.cpu_us).collect());
    let routed_cpu = median(routed.iter().map(|p| p.cpu_us).collect());
    let direct_one_ms = median(direct_one);
    let routed_one_ms = median(routed_one);
    let switch_max = switches.iter().copied().fold(0.0, f64::max);
    let switch_ms = median(switches);

    println!();
    println!("| figure | target | direct | via router | result |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| requests per second, {CONNECTIONS} connections (median of {ROUNDS}) | ≥ 80 % of direct | {direct_rps:.0} | {routed_rps:.0} | {:.0} % |",
        routed_rps / direct_rps * 100.0
    );
    println!(
        "| median latency, {CONNECTIONS} connections | added ≤ 0.2 ms | {direct_ms:.3} ms | {routed_ms:.3} ms | +{:.3} ms |",
        routed_ms - direct_ms
    );
    println!(
        "| CPU per request, all processes, {CONNECTIONS} connections | | {direct_cpu:.1} µs | {routed_cpu:.1} µs | router +{:.1} µs |",
        routed_cpu - direct_cpu
    );
    println!(
        "| median latency, 1 connection | added ≤ 0.2 ms | {direct_one_ms:.3} ms | {routed_one_ms:.3} ms | +{:.3} ms |",
        routed_one_ms - direct_one_ms
    );
    println!(
        "| split of 2,000 requests at 90/10 | within ±2 points | | {to_a} / {} | {:.1} / {:.1} % |",
        2000 - to_a,
        f64::from(to_a) / 20.0,
        f64::from(2000 - to_a) / 20.0
    );
    println!(
        "| set_routes to first response from the new revision, under load (10 switches) | ≤ 50 ms | | median {switch_ms:.3} ms | max {switch_max:.3} ms |"
    );
}
