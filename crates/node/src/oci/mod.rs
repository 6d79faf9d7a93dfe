//! Components in OCI registries: `limes deploy NAME oci://HOST/REPO:TAG` has the node pull the
//! component itself, and `limes push FILE oci://…` publishes one.
//!
//! Components travel as the Wasm OCI artifact that `wkg`, wasmCloud and Spin use (the CNCF TAG
//! Runtime layout): an image manifest whose config has the media type [`WASM_CONFIG`] and whose
//! one layer is the component, [`WASM_LAYER`]. Anything else is refused as not a Wasm artifact.
//! Every byte pulled is checked against the digest that names it — the manifest against a
//! `@sha256:` reference, the layer against the manifest — so a registry, a mirror or a proxy
//! that alters the component is caught. Which registries the node trusts, and as whom it pulls,
//! is the operator's choice ([`RegistryConfig`]); a deployer names only the reference.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

pub use error::RegistryError;

mod credentials;
mod error;

/// The scheme of a component's reference in a registry.
pub const SCHEME: &str = "oci://";
/// The media type of a Wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The media type of a Wasm artifact's layer: the component itself.
pub const WASM_LAYER: &str = "application/wasm";

/// The operator's registry settings (`limes serve --registry-…`).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Credentials in the format of Docker's `config.json`; anonymous without.
    pub auth_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted besides the system's.
    pub ca: Vec<PathBuf>,
    /// Registries (`HOST:PORT`) reached over plain HTTP; the node pulls from them too.
    pub insecure: Vec<String>,
    /// Registries the node pulls from over HTTPS: `HOST`, `HOST/REPO-PREFIX` (the repositories
    /// below it only), or `*` for any. Empty (the default) with no insecure ones: deploys from
    /// registries are off. A deployer must not make the node reach hosts of the operator's
    /// network that the operator did not name, nor read repositories its credentials reach.
    pub allow: Vec<String>,
}

/// An artifact resolved to its manifest: what [`Registries::fetch`] gets, and what can be
/// checked before (the component's digest, for a signature).
#[derive(Debug)]
pub struct Artifact {
    /// Where it came from, pinned: `oci://HOST/REPO@sha256:…` (the manifest's digest).
    pub source: String,
    reference: String,
    image: Reference,
    auth: RegistryAuth,
    layer: oci_client::manifest::OciDescriptor,
    component_digest: String,
    limit: u64,
}

impl Artifact {
    /// The SHA-256 of its component, hex, as its manifest names it (and as the bytes fetched
    /// will be, or the fetch fails).
    pub fn component_digest(&self) -> &str {
        &self.component_digest
    }
}

/// Pulls held at once: see [`Registries::turn`].
pub const PULLS_AT_ONCE: usize = 2;

/// The longest a registry may take to answer for a manifest, or to send a component.
pub const PULL_DEADLINE: Duration = Duration::from_secs(120);

/// `work`, or a timeout past [`PULL_DEADLINE`]: a registry that trickles is not waited for.
async fn deadline<T>(
    reference: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(PULL_DEADLINE, work)
        .await
        .map_err(|_| {
            RegistryError::Unreachable(format!(
                "{reference}: the registry took longer than {} s",
                PULL_DEADLINE.as_secs()
            ))
        })
}

/// A client of OCI registries, with the operator's credentials and trust.
pub struct Registries {
    client: Client,
    auths: HashMap<String, RegistryAuth>,
    /// `--registry-allow` and `--registry-insecure`.
    allowed: Vec<String>,
    turns: tokio::sync::Semaphore,
}

impl Registries {
    /// A client for `config`; its CA and credential files are read now.
    pub fn new(config: &RegistryConfig) -> Result<Self, String> {
        let mut roots = Vec::new();
        for path in &config.ca {
            let data = std::fs::read(path)
                .map_err(|e| format!("--registry-ca {}: {e}", path.display()))?;
            roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let client = Client::try_from(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            extra_root_certificates: roots,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: "limes",
            ..ClientConfig::default()
        })
        .map_err(|e| format!("the registry client: {e}"))?;
        let auths = match &config.auth_file {
            Some(path) => credentials::read(path)?,
            None => HashMap::new(),
        };
        let allowed = config
            .allow
            .iter()
            .chain(&config.insecure)
            .cloned()
            .collect();
        Ok(Self {
            client,
            auths,
            allowed,
            turns: tokio::sync::Semaphore::new(PULLS_AT_ONCE),
        })
    }

    /// A client for pushing: to any registry the user names.
    pub fn for_push(config: &RegistryConfig) -> Result<Self, String> {
        let mut config = config.clone();
        config.allow = vec!["*".into()];
        Self::new(&config)
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        self.auths
            .get(reference.resolve_registry())
            .or_else(|| self.auths.get(reference.registry()))
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Waits for a turn to pull: at most [`PULLS_AT_ONCE`] pulled components are held at once,
    /// whatever many deploys ask (a deploy naming a reference costs its sender a few bytes, the
    /// node up to `--max-body`). Hold the permit until the component is stored.
    pub async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.turns
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// The artifact `reference` names (`oci://HOST/REPO:TAG` or `…@sha256:…`): its manifest,
    /// checked, but not yet its component, which must be at most `limit` bytes.
    pub async fn resolve(&self, reference: &str, limit: u64) -> Result<Artifact, RegistryError> {
        let image = parse(reference)?;
        self.check_listed(&image)?;
        let auth = self.auth(&image);
        // Only the manifest: its config is never fetched (a registry could make it any size).
        // The client checks it against a `@sha256:` reference's digest.
        let (manifest, digest) =
            deadline(reference, self.client.pull_image_manifest(&image, &auth))
                .await?
                .map_err(|e| RegistryError::from_oci(reference, e))?;
        let mut layer = wasm_layer(reference, &manifest)?.clone();
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(RegistryError::TooLarge {
                size: layer.size.max(0) as u64,
                limit,
            });
        }
        let component_digest = layer
            .digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                RegistryError::NotWasm(format!(
                    "{reference}: its layer's digest {} is not a sha256 digest",
                    layer.digest
                ))
            })?
            .to_ascii_lowercase();
        // Other places to fetch the layer from, which the client would try if the registry
        // failed: hosts the operator did not list.
        layer.urls = None;
        Ok(Artifact {
            source: format!(
                "{SCHEME}{}/{}@{digest}",
                image.resolve_registry(),
                image.repository()
            ),
            reference: reference.to_owned(),
            image,
            auth,
            layer,
            component_digest,
            limit,
        })
    }

    /// The component of `artifact`, checked against its digest.
    pub async fn fetch(&self, artifact: &Artifact) -> Result<Bytes, RegistryError> {
        let reference = artifact.reference.as_str();
        deadline(reference, self.read(artifact)).await?
    }

    async fn read(&self, artifact: &Artifact) -> Result<Bytes, RegistryError> {
        let (reference, limit) = (artifact.reference.as_str(), artifact.limit);
        self.client
            .store_auth_if_needed(artifact.image.resolve_registry(), &artifact.auth)
            .await;
        let mut stream = self
            .client
            .pull_blob_stream(&artifact.image, &artifact.layer)
            .await
            .map_err(|e| RegistryError::from_oci(reference, e))?;
        let mut component = BytesMut::with_capacity(artifact.layer.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // The client checks the digest as the bytes come, and says so as an I/O error.
                match e.get_ref().and_then(|e| e.downcast_ref::<oci_client::errors::DigestError>()) {
                    Some(digest) => RegistryError::DigestMismatch(format!(
                        "{reference}: the component the registry sent does not match its manifest ({digest}); refused"
                    )),
                    None => RegistryError::Unreachable(format!(
                        "{reference}: reading the component: {e}"
                    )),
                }
            })?;
            // A registry that sends more than the manifest said is not believed either.
            if (component.len() + chunk.len()) as u64 > limit {
                return Err(RegistryError::TooLarge {
                    size: (component.len() + chunk.len()) as u64,
                    limit,
                });
            }
            component.extend_from_slice(&chunk);
        }
        let actual = limes_runtime::Digest::of(&component).to_string();
        if actual != artifact.component_digest {
            return Err(RegistryError::DigestMismatch(format!(
                "{reference}: the component the registry sent is sha256:{actual}, not {} as its manifest says; refused",
                artifact.layer.digest
            )));
        }
        if !component.starts_with(b"\0asm") {
            return Err(RegistryError::NotWasm(format!(
                "{reference}: its layer is not WebAssembly"
            )));
        }
        Ok(component.freeze())
    }

    /// Refuses a registry (or repository) the operator did not list.
    fn check_listed(&self, image: &Reference) -> Result<(), RegistryError> {
        let repository = image.repository();
        let listed = |host: &str| {
            self.allowed.iter().any(|entry| {
                entry == "*"
                    || entry == host
                    // HOST/PREFIX: the repositories below it only.
                    || entry.split_once('/').is_some_and(|(h, prefix)| {
                        let prefix = prefix.trim_end_matches('/');
                        h == host
                            && repository
                                .strip_prefix(prefix)
                                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    })
            })
        };
        if listed(image.registry()) || listed(image.resolve_registry()) {
            return Ok(());
        }
        Err(RegistryError::NotAllowed(format!(
            "this node does not pull from {}/{repository}: the operator lists the registries it may with --registry-allow (now: {})",
            image.registry(),
            if self.allowed.is_empty() {
                "none".to_owned()
            } else {
                self.allowed.join(", ")
            }
        )))
    }

    /// Publishes `component` as a Wasm artifact at `reference`; returns it pinned to the digest
    /// of the manifest pushed.
    pub async fn push(&self, reference: &str, component: Bytes) -> Result<String, RegistryError> {
        let image = parse(reference)?;
        if image.digest().is_some() {
            return Err(RegistryError::BadReference(format!(
                "{reference}: push to a tag; the digest is the registry's to give"
            )));
        }
        if !component.starts_with(b"\0asm") {
            return Err(RegistryError::NotWasm("the file is not WebAssembly".into()));
        }
        let auth = self.auth(&image);
        let oci = |e| RegistryError::from_oci(reference, e);
        let layer = ImageLayer::new(component, WASM_LAYER.to_owned(), None);
        let config = serde_json::json!({
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.sha256_digest()],
        });
        let config = Config::new(
            serde_json::to_vec(&config).expect("JSON"),
            WASM_CONFIG.to_owned(),
            None,
        );
        let layers = [layer];
        let manifest = OciImageManifest::build(&layers, &config, None);
        self.client
            .push(&image, &layers, config, &auth, Some(manifest))
            .await
            .map_err(oci)?;
        let digest = self
            .client
            .fetch_manifest_digest(&image, &auth)
            .await
            .map_err(oci)?;
        Ok(format!(
            "{SCHEME}{}/{}@{digest}",
            image.resolve_registry(),
            image.repository()
        ))
    }
}

/// `oci://HOST/REPO:TAG` as a reference.
fn parse(reference: &str) -> Result<Reference, RegistryError> {
    let bad = |why: String| {
        RegistryError::BadReference(format!(
            "{reference:?}: {why}; expected oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:DIGEST"
        ))
    };
    let rest = reference
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("not an oci:// reference".into()))?;
    rest.parse::<Reference>().map_err(|e| bad(e.to_string()))
}

/// The component's layer of a Wasm artifact's manifest.
fn wasm_layer<'m>(
    reference: &str,
    manifest: &'m OciImageManifest,
) -> Result<&'m oci_client::manifest::OciDescriptor, RegistryError> {
    let not_wasm = |why: String| {
        RegistryError::NotWasm(format!(
            "{reference} is not a Wasm component artifact: {why}"
        ))
    };
    if manifest.config.media_type != WASM_CONFIG {
        return Err(not_wasm(format!(
            "its config is {}, not {WASM_CONFIG}",
            manifest.config.media_type
        )));
    }
    match &manifest.layers[..] {
        [layer] if layer.media_type == WASM_LAYER => Ok(layer),
        [layer] => Err(not_wasm(format!(
            "its layer is {}, not {WASM_LAYER}",
            layer.media_type
        ))),
        layers => Err(not_wasm(format!("it has {} layers, not one", layers.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_be_oci_urls() {
        assert!(parse("oci://localhost:5000/limes/hello:v1").is_ok());
        assert!(parse("oci://localhost:5000/limes/hello@sha256:0000000000000000000000000000000000000000000000000000000000000000").is_ok());
        for bad in [
            "localhost:5000/x:v1",
            "oci://",
            "oci://HOST/Upper:v1",
            "https://h/x:v1",
        ] {
            assert_eq!(parse(bad).unwrap_err().kind(), "bad-reference", "{bad}");
        }
    }

    #[test]
    fn only_listed_registries_and_repositories_are_pulled_from() {
        let registries = |allow: &[&str], insecure: &[&str]| {
            Registries::new(&RegistryConfig {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                insecure: insecure.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .unwrap()
        };
        let listed =
            |r: &Registries, reference: &str| r.check_listed(&parse(reference).unwrap()).is_ok();
        let none = registries(&[], &[]);
        assert!(!listed(&none, "oci://ghcr.io/a/b:v1"));
        let err = none
            .check_listed(&parse("oci://ghcr.io/a/b:v1").unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), "not-permitted");
        assert!(
            err.to_string().contains("--registry-allow (now: none)"),
            "{err}"
        );
        let r = registries(&["ghcr.io/brigade/", "docker.io"], &["10.0.0.5:5000"]);
        assert!(listed(&r, "oci://ghcr.io/brigade/sort:v1"));
        assert!(listed(&r, "oci://ghcr.io/brigade/tools/sort:v1"));
        assert!(!listed(&r, "oci://ghcr.io/brigadex/sort:v1"));
        assert!(!listed(&r, "oci://ghcr.io/other/sort:v1"));
        assert!(listed(&r, "oci://10.0.0.5:5000/any/thing:v1"));
        assert!(!listed(&r, "oci://10.0.0.5:5001/any/thing:v1"));
        assert!(!listed(&r, "oci://10.0.0.5/any/thing:v1"));
        // Docker Hub by either of its names.
        assert!(listed(&r, "oci://docker.io/library/x:v1"));
        assert!(listed(&r, "oci://index.docker.io/library/x:v1"));
        assert!(listed(
            &registries(&["*"], &[]),
            "oci://anywhere.example/x:v1"
        ));
    }
}
