//! Request counters per revision, and their Prometheus text.
