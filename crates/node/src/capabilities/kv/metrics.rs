//! Metrics of the key-value stores: operations and conflicts as they happen, keys and bytes
//! asked of the backend at each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use limes_runtime::kv::{StoreId, Usage};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    function: String,
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    function: String,
    store: String,
    operation: String,
}

/// The stores' metrics, in a registry of their own that `/metrics` appends.
pub struct KvMetrics {
    registry: Registry,
    operations: Family<OperationLabel, Counter>,
    conflicts: Family<StoreLabel, Counter>,
    keys: Family<StoreLabel, Gauge>,
    bytes: Family<StoreLabel, Gauge>,
}

impl Default for KvMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("limes_kv");
        let operations = Family::default();
        registry.register(
            "operations",
            "Key-value operations, by function (@shared for shared stores), store and kind",
            operations.clone(),
        );
        let conflicts = Family::default();
        registry.register(
            "conflicts",
            "Conditional writes (compare-and-swap, increment rounds) that found the key changed",
            conflicts.clone(),
        );
        let keys = Family::default();
        registry.register("keys", "Keys in each store", keys.clone());
        let bytes = Family::default();
        registry.register(
            "bytes",
            "Bytes of keys and values in each store (on NATS, with JetStream's own overhead)",
            bytes.clone(),
        );
        Self {
            registry,
            operations,
            conflicts,
            keys,
            bytes,
        }
    }
}

fn label(store: &StoreId) -> StoreLabel {
    StoreLabel {
        function: store.namespace.clone(),
        store: store.name.clone(),
    }
}

impl KvMetrics {
    /// Counts one `operation` on `store`.
    pub fn operation(&self, store: &StoreId, operation: &str) {
        self.operations
            .get_or_create(&OperationLabel {
                function: store.namespace.clone(),
                store: store.name.clone(),
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts a conditional write that lost.
    pub fn conflict(&self, store: &StoreId) {
        self.conflicts.get_or_create(&label(store)).inc();
    }

    /// Sets the gauges from the backend's `usage`; stores gone since are dropped.
    pub fn set_usage(&self, usage: &[Usage]) {
        self.keys.clear();
        self.bytes.clear();
        for u in usage {
            let l = label(&u.store);
            self.keys
                .get_or_create(&l)
                .set(i64::try_from(u.keys).unwrap_or(i64::MAX));
            self.bytes
                .get_or_create(&l)
                .set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
        }
    }

    /// The registry, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
