//! The node's live figures as JSON (`GET /v1/stats`), for the dashboard: per function, counts
//! and cold-start and execution percentiles; for the node, one sample per second over the last
//! [`HISTORY_SECS`] seconds. Prometheus (`/metrics`) has the same events as counters and
//! buckets; this keeps what a page can draw without a time-series database.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How much history a page gets: five minutes, one sample a second.
pub const HISTORY_SECS: usize = 300;

/// Microseconds, 1 µs to 10 min at 2 significant digits (within 1 %): the node's own latency,
/// one histogram of 24 KiB.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds")
}

/// The same range at 1 significant digit (within 6.25 %) with 32-bit counts: 1.7 KiB, for the
/// two histograms every function has. At 2 digits and 64-bit counts they took 48 KiB a
/// function: 480 MiB on a node whose 10 000 functions had each run once, and a cache miss on
/// every call of a random one.
fn function_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 600_000_000, 1).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// p50 and p99 of a histogram in microseconds; zeros when it is empty.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
}

impl Percentiles {
    fn of<C: hdrhistogram::Counter>(h: &Histogram<C>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
        }
    }
}

/// One function's figures since the node started.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionStats {
    pub name: String,
    pub invocations: u64,
    pub errors: u64,
    pub cold_start_us: Percentiles,
    pub execution_us: Percentiles,
}

/// One second of the node's load.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    /// Its start, in seconds since the Unix epoch.
    pub at: u64,
    /// Invocations that ran (finished) in it.
    pub requests: u64,
    /// Of those, how many failed.
    pub errors: u64,
    /// Calls turned away (429 or 503: full, busy, shed).
    pub shed: u64,
    /// Most invocations in flight at once.
    pub in_flight: u64,
    /// Function time (cold start + execution) of the invocations, in microseconds.
    pub latency_us: Percentiles,
}

struct Function {
    invocations: u64,
    errors: u64,
    cold: Histogram<u32>,
    exec: Histogram<u32>,
}

struct Inner {
    functions: BTreeMap<String, Function>,
    current: Second,
    latency: Histogram<u64>,
    history: VecDeque<Second>,
}

/// The live figures of one node.
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                functions: BTreeMap::new(),
                current: Second::default(),
                latency: histogram(),
                history: VecDeque::with_capacity(HISTORY_SECS),
            }),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inner {
    /// Closes the seconds before `now`, empty ones included, so that the series has no gaps.
    fn advance(&mut self, now: u64) {
        if self.current.at == 0 {
            self.current.at = now;
        }
        while self.current.at < now {
            let mut done = std::mem::take(&mut self.current);
            done.latency_us = Percentiles::of(&self.latency);
            self.latency.reset();
            let next = done.at + 1;
            if self.history.len() == HISTORY_SECS {
                self.history.pop_front();
            }
            self.history.push_back(done);
            // After a long quiet spell, jump rather than push hundreds of empty seconds one by one.
            self.current.at = next.max(now.saturating_sub(HISTORY_SECS as u64));
        }
    }
}

impl Stats {
    fn with<T>(&self, now: u64, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.advance(now);
        f(&mut inner)
    }

    /// Records a finished invocation of `function`: its timings if it ran, and the number in
    /// flight when it finished.
    pub fn invocation(
        &self,
        function: &str,
        ok: bool,
        timings: Option<(Duration, Duration)>,
        in_flight: u64,
    ) {
        self.record(now_secs(), function, ok, timings, in_flight);
    }

    fn record(
        &self,
        now: u64,
        function: &str,
        ok: bool,
        timings: Option<(Duration, Duration)>,
        in_flight: u64,
    ) {
        self.with(now, |inner| {
            if !inner.functions.contains_key(function) {
                inner.functions.insert(
                    function.to_owned(),
                    Function {
                        invocations: 0,
                        errors: 0,
                        cold: function_histogram(),
                        exec: function_histogram(),
                    },
                );
            }
            let f = inner.functions.get_mut(function).expect("inserted above");
            f.invocations += 1;
            inner.current.requests += 1;
            inner.current.in_flight = inner.current.in_flight.max(in_flight);
            if !ok {
                f.errors += 1;
                inner.current.errors += 1;
            }
            if let Some((cold, exec)) = timings {
                f.cold.saturating_record(micros(cold));
                f.exec.saturating_record(micros(exec));
                inner.latency.saturating_record(micros(cold + exec));
            }
        });
    }

    /// Records a call turned away before it ran.
    pub fn shed(&self) {
        self.shed_at(now_secs());
    }

    fn shed_at(&self, now: u64) {
        self.with(now, |inner| inner.current.shed += 1);
    }

    /// Forgets a removed function's figures.
    pub fn forget(&self, function: &str) {
        self.with(now_secs(), |inner| {
            inner.functions.remove(function);
        });
    }

    /// Every function's figures, by name.
    pub fn functions(&self) -> Vec<FunctionStats> {
        self.with(now_secs(), |inner| {
            inner
                .functions
                .iter()
                .map(|(name, f)| FunctionStats {
                    name: name.clone(),
                    invocations: f.invocations,
                    errors: f.errors,
                    cold_start_us: Percentiles::of(&f.cold),
                    execution_us: Percentiles::of(&f.exec),
                })
                .collect()
        })
    }

    /// The closed seconds of the last [`HISTORY_SECS`], oldest first.
    pub fn seconds(&self) -> Vec<Second> {
        self.history_at(now_secs())
    }

    fn history_at(&self, now: u64) -> Vec<Second> {
        self.with(now, |inner| inner.history.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn functions_count_calls_and_errors_and_give_percentiles() {
        let stats = Stats::default();
        for i in 1..=100u32 {
            stats.record(1000, "f", true, Some((MS * i, MS * 2 * i)), 1);
        }
        stats.record(1000, "f", false, None, 1);
        let f = &stats.functions()[0];
        assert_eq!((f.name.as_str(), f.invocations, f.errors), ("f", 101, 1));
        // 1 significant digit: within 6.25 % of 50 ms, 99 ms and 100 ms.
        assert!((46_800..=53_200).contains(&f.cold_start_us.p50), "{f:?}");
        assert!((92_800..=105_200).contains(&f.cold_start_us.p99), "{f:?}");
        assert!((93_700..=106_300).contains(&f.execution_us.p50), "{f:?}");
        stats.forget("f");
        assert!(stats.functions().is_empty());
    }

    #[test]
    fn seconds_close_in_order_without_gaps_and_keep_five_minutes() {
        let stats = Stats::default();
        stats.record(1000, "f", true, Some((MS, MS)), 3);
        stats.record(1000, "f", false, None, 5);
        stats.shed_at(1000);
        stats.record(1002, "f", true, Some((MS, MS)), 1);
        let seconds = stats.history_at(1003);
        let at: Vec<u64> = seconds.iter().map(|s| s.at).collect();
        assert_eq!(at, vec![1000, 1001, 1002]);
        assert_eq!(
            (
                seconds[0].requests,
                seconds[0].errors,
                seconds[0].shed,
                seconds[0].in_flight
            ),
            (2, 1, 1, 5)
        );
        assert_eq!(seconds[1].requests, 0);
        assert!((1990..=2010).contains(&seconds[2].latency_us.p50));
        // An hour later: only the last five minutes, still one per second.
        let later = stats.history_at(1003 + 3600);
        assert_eq!(later.len(), HISTORY_SECS);
        assert!(later.windows(2).all(|w| w[1].at == w[0].at + 1));
        assert_eq!(later.last().unwrap().at, 1003 + 3600 - 1);
    }
}
