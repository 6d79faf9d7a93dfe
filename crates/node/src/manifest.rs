//! A function's manifest: its policy and admission limit, as the API takes it and the registry
//! stores it.
//!
//! The API takes the manifest as query parameters (`?memory=64MiB&timeout=5s&env=K=V`) or as a
//! JSON object with the same keys in a multipart part. Both go through [`Manifest::from_pairs`],
//! so they accept and reject exactly the same things. The function's own limits are here; what
//! each host capability grants is that capability's section ([`crate::capabilities`]).

use std::time::Duration;

pub use crate::parse::{parse_duration, parse_size};
use limes_runtime::Policy;
use serde::{Deserialize, Serialize};

use crate::capabilities::Sections;
use crate::triggers::Triggers;

/// Invocations of one function in flight at once, unless its manifest says otherwise.
///
/// 16: a 2-core node gains nothing from more, and one popular function cannot take the whole
/// node's capacity.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

/// The keys of the function's own limits; each capability adds its own (see [`keys`]).
const OWN_KEYS: &[&str] = &[
    "memory",
    "timeout",
    "fuel",
    "env",
    "max_concurrency",
    "public",
    "priority",
];

/// Every key a manifest may have: its own, then each capability's.
pub fn keys() -> impl Iterator<Item = &'static str> {
    OWN_KEYS
        .iter()
        .copied()
        .chain(Sections::keys().map(|(k, _)| k))
        .chain(Triggers::keys().map(|(k, _)| k))
}

/// A validated manifest, in the normalized form the registry stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Memory limit in bytes.
    pub memory_limit: u64,
    /// Timeout per invocation in milliseconds.
    pub timeout_ms: u64,
    /// CPU budget in fuel units; `None` is unmetered.
    pub fuel: Option<u64>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Invocations of this function in flight at once; more are refused with 429.
    pub max_concurrency: u32,
    /// Whether anyone may invoke it without a token (its `invoke` and `/fn/…` routes).
    #[serde(default)]
    pub public: bool,
    /// Its class when the node is busy: `urgent`, `regular` (default) or `batch`.
    #[serde(default)]
    pub priority: crate::admission::Priority,
    /// What each host capability grants it, in its own section; the keys stay top-level.
    #[serde(flatten)]
    pub capabilities: Sections,
    /// What runs it besides requests (schedules), in its own section; the keys stay top-level.
    #[serde(flatten)]
    pub triggers: Triggers,
}

impl Default for Manifest {
    fn default() -> Self {
        let policy = Policy::default();
        Self {
            memory_limit: policy.memory_limit,
            timeout_ms: policy.timeout.as_millis() as u64,
            fuel: None,
            env: Vec::new(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            public: false,
            priority: crate::admission::Priority::Regular,
            capabilities: Sections::default(),
            triggers: Triggers::default(),
        }
    }
}

impl Manifest {
    /// Builds a manifest from `key=value` pairs; a key may repeat where it makes a list.
    /// Every key not given keeps its default.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, String>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut m = Manifest::default();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            match key {
                "memory" => m.memory_limit = parse_size(value)?,
                "timeout" => m.timeout_ms = parse_duration(value)?.as_millis() as u64,
                "fuel" => m.fuel = Some(parse_number(key, value)?),
                "env" => m.env.push(parse_env(value)?),
                "max_concurrency" => {
                    m.max_concurrency = parse_number(key, value)?;
                    if m.max_concurrency == 0 {
                        return Err("max_concurrency must be at least 1".into());
                    }
                }
                "priority" => m.priority = value.parse()?,
                "public" => {
                    m.public = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("public={value:?}: expected true or false")),
                    }
                }
                other => match m
                    .capabilities
                    .parse(other, value)
                    .or_else(|| m.triggers.parse(other, value))
                {
                    Some(parsed) => parsed?,
                    None => {
                        return Err(format!(
                            "unknown manifest key {other:?}; known keys: {}",
                            keys().collect::<Vec<_>>().join(", ")
                        ));
                    }
                },
            }
        }
        if m.timeout_ms == 0 {
            return Err("timeout must be longer than 0 ms".into());
        }
        m.capabilities.finish()?;
        m.triggers.finish(&m.capabilities)?;
        Ok(m)
    }

    /// Builds a manifest from a JSON object with the keys of [`keys`]. Lists may be arrays;
    /// `env` may also be an object.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        use serde_json::Value;
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("manifest is not valid JSON: {e}"))?;
        let Value::Object(object) = value else {
            return Err("manifest must be a JSON object".into());
        };
        let scalar = |key: &str, v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(format!(
                "manifest key {key:?}: expected a string, number or boolean, found {other}"
            )),
        };
        let mut pairs = Vec::new();
        for (key, value) in &object {
            match value {
                Value::Array(items) => {
                    for item in items {
                        pairs.push((key.clone(), scalar(key, item)?));
                    }
                }
                Value::Object(map) if key == "env" => {
                    for (k, v) in map {
                        pairs.push((key.clone(), format!("{k}={}", scalar(k, v)?)));
                    }
                }
                other => pairs.push((key.clone(), scalar(key, other)?)),
            }
        }
        Self::from_pairs(pairs)
    }

    /// The pairs that [`Manifest::from_pairs`] turns back into this manifest.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("memory".to_owned(), self.memory_limit.to_string()),
            ("timeout".to_owned(), format!("{}ms", self.timeout_ms)),
            (
                "max_concurrency".to_owned(),
                self.max_concurrency.to_string(),
            ),
        ];
        if self.public {
            pairs.push(("public".into(), "true".into()));
        }
        if self.priority != crate::admission::Priority::Regular {
            pairs.push(("priority".into(), self.priority.as_str().into()));
        }
        if let Some(fuel) = self.fuel {
            pairs.push(("fuel".into(), fuel.to_string()));
        }
        pairs.extend(
            self.env
                .iter()
                .map(|(k, v)| ("env".into(), format!("{k}={v}"))),
        );
        pairs.extend(
            self.capabilities
                .pairs()
                .into_iter()
                .chain(self.triggers.pairs())
                .map(|(k, v)| (k.to_owned(), v)),
        );
        pairs
    }

    /// The function's own limits as a runtime policy; each capability adds its part
    /// ([`Sections::apply`]).
    pub fn to_policy(&self) -> Policy {
        Policy {
            memory_limit: self.memory_limit,
            timeout: Duration::from_millis(self.timeout_ms),
            fuel: self.fuel,
            env: self.env.clone(),
            ..Policy::default()
        }
    }
}

/// Parses `K=V`.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("env {s:?}: expected K=V")),
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{key}={s:?} is not a whole number in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_json_agree_and_round_trip() {
        let from_query = Manifest::from_pairs([
            ("memory", "64MiB"),
            ("timeout", "5s"),
            ("env", "A=1"),
            ("allow_connect", "10.0.0.0/8"),
            ("max_concurrency", "2"),
            ("public", "true"),
            ("priority", "urgent"),
        ])
        .unwrap();
        let from_json = Manifest::from_json(
            br#"{"memory":"64MiB","timeout":"5s","env":{"A":"1"},"allow_connect":["10.0.0.0/8"],"max_concurrency":2,"public":true,"priority":"urgent"}"#,
        )
        .unwrap();
        assert_eq!(from_query, from_json);
        assert_eq!(from_query.memory_limit, 64 << 20);
        assert_eq!(
            Manifest::from_pairs(from_query.to_pairs()).unwrap(),
            from_query
        );
        assert!(from_query.public);
        assert_eq!(from_query.to_policy().timeout, Duration::from_secs(5));
        let private = Manifest::from_pairs([("dir", "@data::/data")]).unwrap();
        assert!(private.capabilities.files.uses_private_dir());
    }

    #[test]
    fn records_stored_before_the_capability_sections_read_the_same() {
        // The registry and the cluster keep manifests as JSON; the sections are flattened so
        // that the keys, and every record written before, stay as they were.
        let stored = br#"{"memory_limit":1024,"timeout_ms":500,"fuel":null,"env":[],"dirs":["@data::/d"],"allow_bind":[],"allow_connect":["10.0.0.1"],"max_concurrency":2,"pass_headers":["cookie"],"kv":["default"]}"#;
        let manifest: Manifest = serde_json::from_slice(stored).unwrap();
        assert_eq!(manifest.capabilities.files.dirs, ["@data::/d"]);
        assert_eq!(manifest.capabilities.network.allow_connect, ["10.0.0.1"]);
        assert_eq!(manifest.capabilities.http.pass_headers, ["cookie"]);
        assert_eq!(manifest.capabilities.kv.stores, ["default"]);
        let again: serde_json::Value = serde_json::to_value(&manifest).unwrap();
        assert_eq!(again["dirs"], serde_json::json!(["@data::/d"]));
        assert_eq!(again["kv"], serde_json::json!(["default"]));
        assert!(again.get("kv_shared").is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let err = |pairs: &[(&str, &str)]| Manifest::from_pairs(pairs.iter().copied()).unwrap_err();
        assert!(
            err(&[("memory", "lots")]).contains("memory")
                || err(&[("memory", "lots")]).contains("size")
        );
        assert!(err(&[("colour", "red")]).contains("unknown manifest key"));
        assert!(err(&[("max_concurrency", "0")]).contains("at least 1"));
        assert!(err(&[("priority", "vip")]).contains("urgent, regular or batch"));
        assert!(err(&[("allow_bind", "nowhere")]).contains("nowhere"));
        assert!(Manifest::from_json(b"[1]").is_err());
        // The private directory has one spelling; other relative hosts are refused.
        for host in ["@data/", "@data/.", "@data//", "data", "./x", "@other"] {
            let message = err(&[("dir", &format!("{host}::/d"))]);
            assert!(message.contains("exactly @data"), "{host}: {message}");
        }
    }
}
