//! A function's manifest: its policy and admission limit, as the API takes it and the registry
//! stores it.
//!
//! The API takes the manifest as query parameters (`?memory=64MiB&timeout=5s&env=K=V`) or as a
//! JSON object with the same keys in a multipart part. Both go through [`Manifest::from_pairs`],
//! so they accept and reject exactly the same things.

use std::time::Duration;

pub use crate::parse::{parse_duration, parse_size};
use limes_runtime::{DirMount, NetworkPolicy, Policy};
use serde::{Deserialize, Serialize};

/// Invocations of one function in flight at once, unless its manifest says otherwise.
///
/// 16: a 2-core node gains nothing from more, and one popular function cannot take the whole
/// node's capacity.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

/// The keys a manifest may have.
pub const KEYS: &[&str] = &[
    "memory",
    "timeout",
    "fuel",
    "env",
    "dir",
    "allow_bind",
    "allow_connect",
    "max_concurrency",
    "public",
    "priority",
    "pass_headers",
    "kv",
    "kv_shared",
];

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
    /// Preopened directories, as `HOST::GUEST[:ro]`.
    pub dirs: Vec<String>,
    /// Bind allowlist, IPs or CIDRs.
    pub allow_bind: Vec<String>,
    /// Connect allowlist, IPs or CIDRs.
    pub allow_connect: Vec<String>,
    /// Invocations of this function in flight at once; more are refused with 429.
    pub max_concurrency: u32,
    /// Whether anyone may invoke it without a token (its `invoke` and `/fn/…` routes).
    #[serde(default)]
    pub public: bool,
    /// Its class when the node is busy: `urgent`, `regular` (default) or `batch`.
    #[serde(default)]
    pub priority: crate::admission::Priority,
    /// Credential headers a `wasi:http` function receives from its callers (`authorization`,
    /// `cookie`, …), lowercase; none by default (see [`crate::guest_headers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_headers: Vec<String>,
    /// Key-value stores of its own it may open (see [`crate::kv`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<String>,
    /// Shared key-value stores it may open, each allowed by the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv_shared: Vec<String>,
}

impl Default for Manifest {
    fn default() -> Self {
        let policy = Policy::default();
        Self {
            memory_limit: policy.memory_limit,
            timeout_ms: policy.timeout.as_millis() as u64,
            fuel: None,
            env: Vec::new(),
            dirs: Vec::new(),
            allow_bind: Vec::new(),
            allow_connect: Vec::new(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            public: false,
            priority: crate::admission::Priority::Regular,
            pass_headers: Vec::new(),
            kv: Vec::new(),
            kv_shared: Vec::new(),
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
                "dir" => {
                    check_dir_host(&value.parse::<DirMount>()?)?;
                    m.dirs.push(value.to_owned());
                }
                "allow_bind" | "allow_connect" => {
                    NetworkPolicy::parse_entry(value)?;
                    let list = if key == "allow_bind" {
                        &mut m.allow_bind
                    } else {
                        &mut m.allow_connect
                    };
                    list.push(value.to_owned());
                }
                "max_concurrency" => {
                    m.max_concurrency = parse_number(key, value)?;
                    if m.max_concurrency == 0 {
                        return Err("max_concurrency must be at least 1".into());
                    }
                }
                "priority" => m.priority = value.parse()?,
                "pass_headers" => {
                    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        m.pass_headers
                            .push(crate::guest_headers::check_pass_header(name)?);
                    }
                }
                "kv" | "kv_shared" => {
                    let list = if key == "kv" {
                        &mut m.kv
                    } else {
                        &mut m.kv_shared
                    };
                    for name in crate::kv::parse_store_names(value)? {
                        if !list.contains(&name) {
                            list.push(name);
                        }
                    }
                }
                "public" => {
                    m.public = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("public={value:?}: expected true or false")),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown manifest key {other:?}; known keys: {}",
                        KEYS.join(", ")
                    ));
                }
            }
        }
        if m.timeout_ms == 0 {
            return Err("timeout must be longer than 0 ms".into());
        }
        if let Some(both) = m.kv.iter().find(|s| m.kv_shared.contains(s)) {
            return Err(format!(
                "store {both:?} is in both kv and kv_shared: a store is the function's own or shared"
            ));
        }
        Ok(m)
    }

    /// Builds a manifest from a JSON object with the keys of [`KEYS`]. Lists may be arrays;
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
        pairs.extend(self.dirs.iter().map(|d| ("dir".into(), d.clone())));
        pairs.extend(
            self.pass_headers
                .iter()
                .map(|h| ("pass_headers".into(), h.clone())),
        );
        pairs.extend(self.kv.iter().map(|s| ("kv".into(), s.clone())));
        pairs.extend(
            self.kv_shared
                .iter()
                .map(|s| ("kv_shared".into(), s.clone())),
        );
        pairs.extend(
            self.allow_bind
                .iter()
                .map(|a| ("allow_bind".into(), a.clone())),
        );
        pairs.extend(
            self.allow_connect
                .iter()
                .map(|a| ("allow_connect".into(), a.clone())),
        );
        pairs
    }

    /// Whether a `dir` entry preopens the function's private directory
    /// ([`PRIVATE_DIR`](crate::files::PRIVATE_DIR)).
    pub fn uses_private_dir(&self) -> bool {
        self.dirs.iter().any(|d| {
            d.parse::<DirMount>()
                .is_ok_and(|m| m.host.as_os_str() == crate::files::PRIVATE_DIR)
        })
    }

    /// The runtime policy of this manifest; `mount` turns each `dir` entry into the mount the
    /// runtime opens (the node ties each to the directory it is resolved beneath).
    pub fn to_policy(
        &self,
        mount: impl Fn(DirMount) -> Result<DirMount, String>,
    ) -> Result<Policy, String> {
        let nets = |list: &[String]| {
            list.iter()
                .map(|s| NetworkPolicy::parse_entry(s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            memory_limit: self.memory_limit,
            timeout: Duration::from_millis(self.timeout_ms),
            fuel: self.fuel,
            dirs: self
                .dirs
                .iter()
                .map(|d| mount(d.parse()?))
                .collect::<Result<_, _>>()?,
            env: self.env.clone(),
            network: NetworkPolicy {
                bind: nets(&self.allow_bind)?,
                connect: nets(&self.allow_connect)?,
            },
            ..Policy::default()
        })
    }
}

/// A node's `dir` host is an absolute path or exactly [`PRIVATE_DIR`](crate::files::PRIVATE_DIR):
/// `@data/`, `@data/.` and other spellings would be taken for the private directory by one
/// reader and for a path relative to the node's working directory by another.
fn check_dir_host(mount: &DirMount) -> Result<(), String> {
    let host = mount.host.as_os_str();
    if host == crate::files::PRIVATE_DIR || mount.host.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "dir {}: the host side must be an absolute path or exactly {} (the function's own \
             directory)",
            mount.host.display(),
            crate::files::PRIVATE_DIR
        ))
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
        assert_eq!(
            from_query.to_policy(Ok).unwrap().timeout,
            Duration::from_secs(5)
        );
        let private = Manifest::from_pairs([("dir", "@data::/data")]).unwrap();
        assert!(private.uses_private_dir());
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
