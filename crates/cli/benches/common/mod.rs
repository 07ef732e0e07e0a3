//! What the benchmarks share: medians, and a line per figure against its budget.

use std::time::Duration;

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn report(name: &str, samples: Vec<Duration>, budget: Duration) {
    let (low, high) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    let median = median(samples);
    let verdict = if median <= budget { "ok" } else { "OVER" };
    println!(
        "{name:<48} median {:>8.1} ms  min {:>8.1}  max {:>8.1}  (budget {:.0} ms: {verdict})",
        median.as_secs_f64() * 1000.0,
        low.as_secs_f64() * 1000.0,
        high.as_secs_f64() * 1000.0,
        budget.as_secs_f64() * 1000.0
    );
}
