//! Request counters per revision, and their Prometheus text.
//!
//! Each revision has totals since the router started (plain atomics) and a sliding window over the
//! last minute: 60 one-second slots, each holding a count, an error count and a log-bucket latency
//! histogram. Recording a request touches two atomics and one short per-revision mutex, and never
//! allocates, so the router's hot path stays cheap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mahavishnu_core::deploy::RevisionMetrics;

/// How many one-second slots the sliding window keeps: one minute, as `RevisionMetrics` promises.
const WINDOW_SECS: u64 = 60;

/// Sub-buckets per power of two in the latency histogram. Eight keeps a bucket within 12.5 % of its
/// lower bound, so a quantile read at the bucket's midpoint is off by at most about 6 %.
const SUB_BUCKETS: u32 = 8;
const SUB_BITS: u32 = 3;

/// Latencies are kept in microseconds up to 2^27 µs (about 134 s); anything slower lands in the last
/// bucket, which is still enough to tell a rollout gate that the revision is far too slow.
const MAX_LOG2: u32 = 27;

/// Number of latency buckets: values below `SUB_BUCKETS` µs get a bucket each, then `SUB_BUCKETS`
/// per power of two from 2^`SUB_BITS` up to and including 2^`MAX_LOG2`.
const BUCKETS: usize = ((MAX_LOG2 - SUB_BITS + 2) * SUB_BUCKETS) as usize;

/// Upper bounds, in seconds, of the Prometheus histogram's buckets (the usual defaults, starting
/// lower because a local router's upstreams answer in well under a millisecond).
pub const PROMETHEUS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The histogram bucket of a latency in microseconds.
fn bucket_of(micros: u64) -> usize {
    if micros < u64::from(SUB_BUCKETS) {
        return micros as usize;
    }
    let log2 = 63 - micros.leading_zeros();
    if log2 > MAX_LOG2 {
        return BUCKETS - 1;
    }
    // The top SUB_BITS bits below the leading one pick the sub-bucket within the octave.
    let sub = ((micros >> (log2 - SUB_BITS)) as u32) & (SUB_BUCKETS - 1);
    ((log2 - SUB_BITS + 1) * SUB_BUCKETS + sub) as usize
}

/// The smallest latency, in microseconds, that falls in bucket `index`.
fn bucket_low(index: usize) -> u64 {
    let index = index as u32;
    if index < SUB_BUCKETS {
        return u64::from(index);
    }
    let log2 = index / SUB_BUCKETS + SUB_BITS - 1;
    let sub = u64::from(index % SUB_BUCKETS);
    (1u64 << log2) + (sub << (log2 - SUB_BITS))
}

/// The value reported for bucket `index`: the middle of its range, in milliseconds.
fn bucket_mid_ms(index: usize) -> f64 {
    let low = bucket_low(index) as f64;
    let high = if index + 1 < BUCKETS {
        bucket_low(index + 1) as f64
    } else {
        low * 2.0
    };
    (low + high) / 2.0 / 1000.0
}

/// One second of the sliding window.
struct Slot {
    /// The second (since the stats were created) this slot holds; a slot whose second is older
    /// than the window is stale and read as empty.
    second: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

impl Slot {
    const EMPTY: Slot = Slot {
        second: u64::MAX,
        requests: 0,
        errors: 0,
        latency: [0; BUCKETS],
    };
}

/// The counters of one revision. Shared by the router's route table (to record) and the registry
/// (to read), so a revision keeps its totals when the table changes.
pub struct RevisionStats {
    started: Instant,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Non-cumulative counts per `PROMETHEUS_BUCKETS` entry, plus one for `+Inf`.
    prometheus: [AtomicU64; PROMETHEUS_BUCKETS.len() + 1],
    /// Sum of all latencies in nanoseconds (u64 nanoseconds overflow after 584 years of latency).
    sum_nanos: AtomicU64,
    window: Mutex<Box<[Slot; WINDOW_SECS as usize]>>,
}

impl std::fmt::Debug for RevisionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionStats")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for RevisionStats {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RevisionStats {
    /// Empty counters whose window starts at `started`.
    pub fn new(started: Instant) -> Self {
        RevisionStats {
            started,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            prometheus: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            window: Mutex::new(Box::new([Slot::EMPTY; WINDOW_SECS as usize])),
        }
    }

    /// Records one answered request that took `latency`, finishing at `now`; `error` when it was
    /// a 5xx or was not answered by the upstream at all.
    pub fn record(&self, now: Instant, latency: Duration, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = latency.as_secs_f64();
        let prom = PROMETHEUS_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(PROMETHEUS_BUCKETS.len());
        self.prometheus[prom].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);

        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = bucket_of(micros);
        let second = now.saturating_duration_since(self.started).as_secs();
        // A poisoned lock only means another recorder panicked mid-update; the counts are still
        // usable, so keep counting rather than losing the revision's metrics.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut window[(second % WINDOW_SECS) as usize];
        if slot.second != second {
            *slot = Slot::EMPTY;
            slot.second = second;
        }
        slot.requests = slot.requests.saturating_add(1);
        if error {
            slot.errors = slot.errors.saturating_add(1);
        }
        slot.latency[bucket] = slot.latency[bucket].saturating_add(1);
    }

    /// Requests recorded since the start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Errors recorded since the start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Totals since the start and the last minute's rate, error rate and latency quantiles, as of
    /// `now`.
    pub fn summary(&self, now: Instant) -> RevisionMetrics {
        let elapsed = now.saturating_duration_since(self.started);
        let current = elapsed.as_secs();
        let mut requests = 0u64;
        let mut errors = 0u64;
        let mut latency = [0u64; BUCKETS];
        {
            let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in window.iter() {
                if slot.second > current || current - slot.second >= WINDOW_SECS {
                    continue;
                }
                requests += u64::from(slot.requests);
                errors += u64::from(slot.errors);
                for (sum, count) in latency.iter_mut().zip(slot.latency.iter()) {
                    *sum += u64::from(*count);
                }
            }
        }
        // A router that started 5 s ago has 5 s of window, not 60: dividing by 60 would make a
        // fresh revision look idle to a rollout gate.
        let span = elapsed.as_secs_f64().clamp(1.0, WINDOW_SECS as f64);
        let quantile = |q: f64| -> Option<f64> {
            if requests == 0 {
                return None;
            }
            let rank = ((q * requests as f64).ceil() as u64).max(1);
            let mut seen = 0u64;
            for (index, count) in latency.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Some(bucket_mid_ms(index));
                }
            }
            None
        };
        RevisionMetrics {
            requests: self.requests(),
            errors: self.errors(),
            rps: requests as f64 / span,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        }
    }
}

/// A registry's revisions and their counters, copied out of its lock.
type Snapshot = Vec<(String, Arc<RevisionStats>)>;

/// The counters of every revision a router has routed to, by revision name. Revisions stay when a
/// route table drops them, so totals since the start survive a rollback.
#[derive(Debug)]
pub struct Registry {
    started: Instant,
    revisions: Mutex<BTreeMap<String, Arc<RevisionStats>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry whose windows start now.
    pub fn new() -> Self {
        Registry {
            started: Instant::now(),
            revisions: Mutex::new(BTreeMap::new()),
        }
    }

    /// The counters of `revision`, created empty the first time it is named.
    pub fn revision(&self, revision: &str) -> Arc<RevisionStats> {
        let mut revisions = self
            .revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = revisions.get(revision) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(RevisionStats::new(self.started));
        revisions.insert(revision.to_owned(), Arc::clone(&stats));
        stats
    }

    /// Every revision's summary as of now.
    pub fn summaries(&self) -> BTreeMap<String, RevisionMetrics> {
        let now = Instant::now();
        self.snapshot()
            .into_iter()
            .map(|(name, stats)| (name, stats.summary(now)))
            .collect()
    }

    /// The revisions and their counters, so a reader does not hold the registry's lock while it
    /// formats.
    fn snapshot(&self) -> Snapshot {
        let revisions = self
            .revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        revisions
            .iter()
            .map(|(name, stats)| (name.clone(), Arc::clone(stats)))
            .collect()
    }
}

/// Writes the Prometheus text exposition of several registries, each with its `service` label.
/// Every metric family appears once with its HELP and TYPE lines, as the format requires, however
/// many services there are.
pub fn write_prometheus<'a>(
    services: impl IntoIterator<Item = (&'a str, &'a Registry)>,
    out: &mut String,
) {
    let services: Vec<(&str, Snapshot)> = services
        .into_iter()
        .map(|(service, registry)| (service, registry.snapshot()))
        .collect();

    out.push_str(
        "# HELP mahavishnu_requests_total Requests answered by the router, by revision.\n",
    );
    out.push_str("# TYPE mahavishnu_requests_total counter\n");
    for (service, revisions) in &services {
        for (revision, stats) in revisions {
            let _ = writeln!(
                out,
                "mahavishnu_requests_total{{{}}} {}",
                Labels(service, revision),
                stats.requests()
            );
        }
    }

    out.push_str(
        "# HELP mahavishnu_request_errors_total Requests answered 5xx or not answered by an upstream, by revision.\n",
    );
    out.push_str("# TYPE mahavishnu_request_errors_total counter\n");
    for (service, revisions) in &services {
        for (revision, stats) in revisions {
            let _ = writeln!(
                out,
                "mahavishnu_request_errors_total{{{}}} {}",
                Labels(service, revision),
                stats.errors()
            );
        }
    }

    out.push_str(
        "# HELP mahavishnu_request_duration_seconds Time from a request's arrival to its response head, by revision.\n",
    );
    out.push_str("# TYPE mahavishnu_request_duration_seconds histogram\n");
    for (service, revisions) in &services {
        for (revision, stats) in revisions {
            let labels = Labels(service, revision);
            let mut cumulative = 0u64;
            for (le, count) in PROMETHEUS_BUCKETS.iter().zip(stats.prometheus.iter()) {
                cumulative += count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "mahavishnu_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += stats.prometheus[PROMETHEUS_BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mahavishnu_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let sum = stats.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "mahavishnu_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            // _count is the +Inf bucket by definition; reusing it keeps the two consistent even
            // while requests are being recorded concurrently.
            let _ = writeln!(
                out,
                "mahavishnu_request_duration_seconds_count{{{labels}}} {cumulative}"
            );
        }
    }
}

/// `service="..",revision=".."` with Prometheus label escaping.
struct Labels<'a>(&'a str, &'a str);

impl std::fmt::Display for Labels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("service=\"")?;
        escape(self.0, f)?;
        f.write_str("\",revision=\"")?;
        escape(self.1, f)?;
        f.write_str("\"")
    }
}

fn escape(value: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            c => f.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        // Every value maps to a bucket whose range contains it; a gap or overlap would skew
        // quantiles.
        for micros in (0..5000u64).chain([1 << 20, (1 << 27) - 1, 123_456_789]) {
            let b = bucket_of(micros);
            assert!(bucket_low(b) <= micros, "{micros} below bucket {b}");
            if b + 1 < BUCKETS {
                assert!(micros < bucket_low(b + 1), "{micros} above bucket {b}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for b in 1..BUCKETS {
            assert!(bucket_low(b) > bucket_low(b - 1));
        }
    }

    #[test]
    fn summary_counts_window_and_quantiles() {
        let start = Instant::now();
        let stats = RevisionStats::new(start);
        let now = start + Duration::from_secs(10);
        // 98 fast requests at 1 ms and 2 slow errors at 200 ms: p50 must be near 1 ms, p99 near
        // 200 ms.
        for _ in 0..98 {
            stats.record(now, Duration::from_millis(1), false);
        }
        for _ in 0..2 {
            stats.record(now, Duration::from_millis(200), true);
        }
        let m = stats.summary(now);
        assert_eq!(m.requests, 100);
        assert_eq!(m.errors, 2);
        assert!((m.error_rate - 0.02).abs() < 1e-9, "{m:?}");
        assert!((m.rps - 10.0).abs() < 1e-9, "100 requests over 10 s: {m:?}");
        let p50 = m.p50_ms.unwrap_or_default();
        let p99 = m.p99_ms.unwrap_or_default();
        assert!((0.94..=1.07).contains(&p50), "p50 {p50}");
        assert!((188.0..=213.0).contains(&p99), "p99 {p99}");

        // Two minutes later the window is empty but the totals stay.
        let later = now + Duration::from_secs(120);
        let m = stats.summary(later);
        assert_eq!((m.requests, m.errors), (100, 2));
        assert_eq!(m.rps, 0.0);
        assert_eq!(m.error_rate, 0.0);
        assert_eq!(m.p50_ms, None);
    }

    #[test]
    fn window_slides_second_by_second() {
        let start = Instant::now();
        let stats = RevisionStats::new(start);
        for s in 0..90u64 {
            stats.record(
                start + Duration::from_secs(s),
                Duration::from_micros(300),
                s % 2 == 0,
            );
        }
        // At second 89 the window holds seconds 30..=89: 60 requests, 30 of them errors.
        let m = stats.summary(start + Duration::from_millis(89_500));
        assert_eq!(m.requests, 90);
        assert!((m.rps - 1.0).abs() < 1e-9, "{m:?}");
        assert!((m.error_rate - 0.5).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn prometheus_histogram_is_cumulative() {
        let registry = Registry::new();
        let stats = registry.revision("web-1");
        let now = Instant::now();
        stats.record(now, Duration::from_micros(100), false);
        stats.record(now, Duration::from_millis(3), false);
        stats.record(now, Duration::from_secs(20), true);
        let mut out = String::new();
        write_prometheus([("we\"b", &registry)], &mut out);
        assert!(
            out.contains("mahavishnu_requests_total{service=\"we\\\"b\",revision=\"web-1\"} 3\n"),
            "{out}"
        );
        assert!(out.contains(
            "mahavishnu_request_errors_total{service=\"we\\\"b\",revision=\"web-1\"} 1\n"
        ));
        assert!(out.contains("le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains(
            "mahavishnu_request_duration_seconds_count{service=\"we\\\"b\",revision=\"web-1\"} 3\n"
        ));
        assert_eq!(out.matches("# TYPE").count(), 3);
    }
}
