//! Why a pull or a push failed, as the API tells it.

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Why a pull or a push failed. The kinds are part of the API: a client tells "no such tag" from
/// "the registry refused us" from "not a component".
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not a reference: `oci://HOST/REPO:TAG` or `oci://HOST/REPO@sha256:…`.
    #[error("{0}")]
    BadReference(String),
    /// The registry has no such repository, tag or digest.
    #[error("{0}")]
    NotFound(String),
    /// The registry refused the node's credentials (or asked for some it has none of).
    #[error("{0}")]
    Unauthorized(String),
    /// The artifact is not a Wasm component in the Wasm OCI layout.
    #[error("{0}")]
    NotWasm(String),
    /// What the registry sent does not hash to the digest that names it.
    #[error("{0}")]
    DigestMismatch(String),
    /// The component is larger than the node takes.
    #[error("the component is {size} bytes; this node takes at most {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The node's limit (`--max-body`).
        limit: u64,
    },
    /// The operator has not listed the registry (`--registry-allow`).
    #[error("{0}")]
    NotAllowed(String),
    /// The registry could not be reached, or answered with something else.
    #[error("{0}")]
    Unreachable(String),
}

impl RegistryError {
    /// The error's kind, as in `{"error": {"kind": …}}`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::BadReference(_) => "bad-reference",
            RegistryError::NotFound(_) => "artifact-not-found",
            RegistryError::Unauthorized(_) => "registry-unauthorized",
            RegistryError::NotWasm(_) => "not-wasm",
            RegistryError::DigestMismatch(_) => "digest-mismatch",
            RegistryError::TooLarge { .. } => "too-large",
            RegistryError::NotAllowed(_) => "not-permitted",
            RegistryError::Unreachable(_) => "registry-unreachable",
        }
    }

    /// What the registry's answer means for this reference.
    pub(super) fn from_oci(reference: &str, e: OciDistributionError) -> Self {
        use OciDistributionError as E;
        let unauthorized = || {
            RegistryError::Unauthorized(format!(
                "the registry refused access to {reference}: check the node's registry credentials (--registry-auth)"
            ))
        };
        let not_found =
            || RegistryError::NotFound(format!("{reference}: no such artifact in the registry"));
        match e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => unauthorized(),
            E::ImageManifestNotFoundError(_) => not_found(),
            E::ServerError {
                code: 401 | 403, ..
            } => unauthorized(),
            E::ServerError { code: 404, .. } => not_found(),
            // Not the body: it is whatever the registry (or a host it redirected to) sent.
            E::ServerError { code, .. } => RegistryError::Unreachable(format!(
                "{reference}: the registry answered HTTP {code}"
            )),
            E::RegistryError { ref envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found()
                } else {
                    RegistryError::Unreachable(format!("{reference}: {e}"))
                }
            }
            E::DigestError(e) => RegistryError::DigestMismatch(format!(
                "{reference}: what the registry sent does not match its digest ({e}); refused"
            )),
            E::IncompatibleLayerMediaTypeError(_)
            | E::UnsupportedMediaTypeError(_)
            | E::ImageIndexParsingNoPlatformResolverError => RegistryError::NotWasm(format!(
                "{reference} is not a Wasm component artifact ({e})"
            )),
            E::RequestError(e) => RegistryError::Unreachable(format!(
                "{reference}: cannot reach the registry ({e}); a registry that speaks plain HTTP must be listed with --registry-insecure, one with its own CA given with --registry-ca"
            )),
            other => RegistryError::Unreachable(format!("{reference}: {other}")),
        }
    }
}
