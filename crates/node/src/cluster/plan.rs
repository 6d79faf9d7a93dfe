//! The emergency plan, as the node and the cluster exchange it: what an operator declares and
//! what the cluster decided (`limes-cluster` decides; the node serves and audits it).

use serde::{Deserialize, Serialize};
use serde_json::json;

/// Added latency allowed for regular work by default: 10 ms, a round trip across a metro-area
/// edge network, small next to a cold microVM and far below what a user notices.
pub const DEFAULT_MAX_ADDED_MS: f64 = 10.0;

/// What `limes emergency declare` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Functions with priority everywhere.
    pub urgent: Vec<String>,
    /// `[x, y, radius]`: only nodes inside may be released. Everywhere when absent.
    #[serde(default)]
    pub area: Option<[f64; 3]>,
    /// Bound on the round-trip latency forwarding may add to regular work, in ms.
    #[serde(default = "default_bound")]
    pub max_added_ms: f64,
    /// The token that declared it; set by the node that took the request, whatever the
    /// request said.
    #[serde(default)]
    pub declared_by: Option<String>,
}

fn default_bound() -> f64 {
    DEFAULT_MAX_ADDED_MS
}

/// A decided emergency plan, as stored in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// What was declared.
    pub declaration: Declaration,
    /// Nodes that take only urgent work.
    pub released: Vec<String>,
    /// Nodes that keep taking regular work.
    pub keepers: Vec<String>,
    /// The worst round trip, in ms, from a node to its nearest keeper.
    pub worst_added_ms: f64,
    /// The node that decided, holding the lease.
    pub decided_by: String,
    /// When, in ms since the Unix epoch.
    pub decided_at_ms: u64,
}

impl Plan {
    /// Whether `name` is urgent under this plan.
    pub fn is_urgent(&self, name: &str) -> bool {
        self.declaration.urgent.iter().any(|u| u == name)
    }

    /// Whether node `id` is released.
    pub fn releases(&self, id: &str) -> bool {
        self.released.iter().any(|r| r == id)
    }
}

/// A plan as the API shows it: `{"active": true, "plan": …}`, or `{"active": false}`.
pub fn plan_json(plan: Option<&Plan>) -> serde_json::Value {
    match plan {
        Some(p) => json!({"active": true, "plan": p}),
        None => json!({"active": false}),
    }
}
