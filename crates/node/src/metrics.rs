//! The node's Prometheus metrics, served at `/metrics` in the text format.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use limes_runtime::CacheStats;

use crate::stats::Stats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    class: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tier {
    tier: String,
}

/// Buckets from 1 µs doubling to about 8 s: cold starts sit in the first few, executions anywhere.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 24))
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    invocations: Family<Outcome, Counter>,
    cold_start: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    execution: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    rejected: Family<Reason, Counter>,
    functions: Gauge,
    loaded: Gauge,
    compiles: Counter,
    compile_seconds: Counter<f64, AtomicU64>,
    cache_hits: Family<Tier, Counter>,
    forwarded: Family<Reason, Counter>,
    forward_added: Histogram,
    cluster_nodes: Gauge,
    nodes_released: Gauge,
    refused_versions: Family<Reason, Counter>,
    admitted: Family<Class, Counter>,
    shed: Family<ShedLabels, Counter>,
    queue_wait: Family<Class, Histogram, fn() -> Histogram>,
    queued: Family<Class, Gauge>,
    denied: Family<Reason, Counter>,
    connections: Gauge,
    connections_refused: Counter,
    /// The cache counters already reported, so that each scrape adds only what is new.
    seen: Mutex<CacheStats>,
    /// The same events kept for `GET /v1/stats` (the dashboard).
    stats: Stats,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("limes");
        let m = Self {
            invocations: Family::default(),
            cold_start: Family::new_with_constructor(latency_histogram),
            execution: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            rejected: Family::default(),
            functions: Gauge::default(),
            loaded: Gauge::default(),
            compiles: Counter::default(),
            compile_seconds: Counter::default(),
            cache_hits: Family::default(),
            forwarded: Family::default(),
            forward_added: latency_histogram(),
            cluster_nodes: Gauge::default(),
            nodes_released: Gauge::default(),
            refused_versions: Family::default(),
            admitted: Family::default(),
            shed: Family::default(),
            queue_wait: Family::new_with_constructor(latency_histogram),
            queued: Family::default(),
            denied: Family::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            seen: Mutex::default(),
            stats: Stats::default(),
            registry: Registry::default(),
        };
        registry.register(
            "invocations",
            "Invocations by function and outcome",
            m.invocations.clone(),
        );
        registry.register(
            "cold_start_seconds",
            "Time from request to guest entry",
            m.cold_start.clone(),
        );
        registry.register(
            "execution_seconds",
            "Time spent in the guest",
            m.execution.clone(),
        );
        registry.register("in_flight", "Instances running now", m.in_flight.clone());
        registry.register(
            "rejected",
            "Invocations refused by admission control",
            m.rejected.clone(),
        );
        registry.register("functions", "Functions deployed", m.functions.clone());
        registry.register(
            "functions_loaded",
            "Functions loaded and ready to start (they load on first use or in the background after a start)",
            m.loaded.clone(),
        );
        registry.register(
            "compiles",
            "Components compiled (AOT cache misses)",
            m.compiles.clone(),
        );
        registry.register(
            "compile_seconds",
            "Time spent compiling",
            m.compile_seconds.clone(),
        );
        registry.register(
            "aot_cache_hits",
            "Loads served by the AOT cache, by tier",
            m.cache_hits.clone(),
        );
        registry.register(
            "forwarded",
            "Invocations forwarded to another node, by reason (full here, or released)",
            m.forwarded.clone(),
        );
        registry.register(
            "forward_added_seconds",
            "Latency that forwarding added to an invocation",
            m.forward_added.clone(),
        );
        registry.register(
            "cluster_nodes",
            "Nodes of the cluster this node sees alive, itself included",
            m.cluster_nodes.clone(),
        );
        registry.register(
            "cluster_nodes_released",
            "Nodes the emergency plan in force releases for urgent work",
            m.nodes_released.clone(),
        );
        registry.register(
            "refused_versions",
            "Versions this node would not run, by reason (not-permitted, unsigned, bad-signature)",
            m.refused_versions.clone(),
        );
        registry.register(
            "admitted",
            "Invocations that got a run slot, by class",
            m.admitted.clone(),
        );
        registry.register(
            "shed",
            "Invocations that could not start within their class's queue deadline, by class and reason",
            m.shed.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time admitted invocations waited for a run slot, by class",
            m.queue_wait.clone(),
        );
        registry.register(
            "queued",
            "Invocations waiting for a run slot now, by class",
            m.queued.clone(),
        );
        registry.register(
            "requests_denied",
            "Requests refused by authentication (unauthorized) or authorization (forbidden)",
            m.denied.clone(),
        );
        registry.register(
            "connections",
            "HTTP connections open now (TLS handshakes included)",
            m.connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the node had --max-connections open",
            m.connections_refused.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The live figures behind `GET /v1/stats`.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts one finished invocation; `timings` is `(cold start, execution)` when it ran.
    pub fn invocation(&self, function: &str, outcome: &str, timings: Option<(Duration, Duration)>) {
        let labels = Outcome {
            function: function.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.invocations.get_or_create(&labels).inc();
        let in_flight = u64::try_from(self.in_flight.get()).unwrap_or(0);
        self.stats
            .invocation(function, outcome == "ok", timings, in_flight);
        if let Some((cold, exec)) = timings {
            let f = FunctionLabel {
                function: function.to_owned(),
            };
            self.cold_start
                .get_or_create(&f)
                .observe(cold.as_secs_f64());
            self.execution.get_or_create(&f).observe(exec.as_secs_f64());
        }
    }

    /// Counts an invocation refused by admission control.
    pub fn rejected(&self, reason: &str) {
        self.stats.shed();
        self.rejected
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a version refused for `reason` (an error kind).
    pub fn refused_version(&self, reason: &str) {
        self.refused_versions
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a call of `class` that got a run slot after waiting `waited`.
    pub fn admitted(&self, class: &str, waited: Duration) {
        let label = Class {
            class: class.to_owned(),
        };
        self.admitted.get_or_create(&label).inc();
        self.queue_wait
            .get_or_create(&label)
            .observe(waited.as_secs_f64());
    }

    /// Counts a call of `class` shed for `reason`.
    pub fn shed(&self, class: &str, reason: &str) {
        self.stats.shed();
        self.shed
            .get_or_create(&ShedLabels {
                class: class.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Moves the number of calls of `class` waiting for a run slot by `by`.
    pub fn queued(&self, class: crate::admission::Priority, by: i64) {
        self.queued
            .get_or_create(&Class {
                class: class.as_str().to_owned(),
            })
            .inc_by(by);
    }

    /// Counts a request refused for `reason` (`unauthorized` or `forbidden`).
    pub fn denied(&self, reason: &str) {
        self.denied
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an invocation forwarded to another node, and what forwarding added to it.
    pub fn forwarded(&self, reason: &str, added: Duration) {
        self.forwarded
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
        self.forward_added.observe(added.as_secs_f64());
    }

    /// Sets the cluster's size and the nodes released, as this node sees them.
    pub fn set_cluster(&self, nodes: usize, released: usize) {
        self.cluster_nodes.set(nodes as i64);
        self.nodes_released.set(released as i64);
    }

    /// The gauge of open connections.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// Counts a connection closed at once, past the connection cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The gauge of running instances.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Sets the number of deployed functions.
    pub fn set_functions(&self, n: u64) {
        self.functions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of functions loaded.
    pub fn set_loaded(&self, n: usize) {
        self.loaded.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus text format, with the AOT cache counters brought up to date,
    /// followed by those of `also` (other parts' registries).
    pub fn render(&self, cache: CacheStats, also: &[&Registry]) -> String {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            self.compiles.inc_by(cache.compiles - seen.compiles);
            self.compile_seconds
                .inc_by((cache.compile_time - seen.compile_time).as_secs_f64());
            let tier = |t: &str| {
                self.cache_hits
                    .get_or_create(&Tier { tier: t.to_owned() })
                    .clone()
            };
            tier("memory").inc_by(cache.memory_hits - seen.memory_hits);
            tier("disk").inc_by(cache.disk_hits - seen.disk_hits);
            *seen = cache;
        }
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        for registry in also {
            let _ = encode_registry(&mut out, registry);
        }
        let _ = encode_eof(&mut out);
        out
    }
}
