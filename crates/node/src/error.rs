//! The errors of a node's operations, each with its HTTP status and a stable kind.

use http::StatusCode;

/// A failed node operation.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A function name that does not follow the naming rule.
    #[error(
        "invalid function name {0:?}: use 1–63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    InvalidName(String),
    /// No function of that name is deployed.
    #[error("no function named {0:?}")]
    NotFound(String),
    /// The function has no such version.
    #[error("function {name:?} has no version {version}")]
    NoSuchVersion { name: String, version: u32 },
    /// The manifest or a request parameter is not valid.
    #[error("{0}")]
    BadRequest(String),
    /// Loading or invoking the function failed.
    #[error(transparent)]
    Function(#[from] limes_runtime::Error),
    /// The function already runs as many invocations as its manifest allows.
    #[error("function {0:?} is at its concurrency limit; retry shortly")]
    Busy(String),
    /// The node runs as many instances as it has capacity for.
    #[error("the node is at capacity; retry shortly or elsewhere")]
    Full,
    /// The call could not start within its class's queue deadline (see [`crate::admission`]).
    #[error(
        "the node is busy: a {class} call could not start within its queue deadline ({reason}); retry shortly or elsewhere"
    )]
    Shed {
        /// The call's class.
        class: &'static str,
        /// Why: `queue_full`, `would_miss_deadline` or `deadline`.
        reason: &'static str,
    },
    /// The request came on a connection inside the headroom kept for `/healthz` and admins
    /// (see [`crate::server`]).
    #[error("the node has too many open connections; retry shortly")]
    TooManyConnections,
    /// The request's body is larger than the node takes (`--max-body`).
    #[error("the request body is larger than this node takes ({0} bytes)")]
    TooLarge(usize),
    /// The registry or artifact store failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The cluster could not be reached or refused the operation.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A cluster operation on a node that runs alone, or one that conflicts with another in
    /// progress.
    #[error("{0}")]
    Conflict(String),
    /// The request carries no valid token (none, unknown, revoked or expired).
    #[error("{0}")]
    Unauthorized(String),
    /// The token is valid but its role does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// The manifest asks for more than this node's operator allows (host directories,
    /// network egress).
    #[error("{0}")]
    NotPermitted(String),
    /// The node only runs signed components and this one carries no signature.
    #[error("{0}")]
    Unsigned(String),
    /// The component's signature does not verify against any trusted key.
    #[error("{0}")]
    BadSignature(String),
    /// The node that ran a forwarded invocation answered with an error.
    /// Pulling the component from its OCI registry failed.
    #[error(transparent)]
    Registry(#[from] crate::oci::RegistryError),

    #[error("on node {node}: {message}")]
    Remote {
        /// The node that answered.
        node: String,
        /// Its HTTP status.
        status: StatusCode,
        /// Its error kind.
        kind: String,
        /// Its message.
        message: String,
    },
}

impl NodeError {
    /// The HTTP status that reports this error.
    pub fn status(&self) -> StatusCode {
        use limes_runtime::Error as E;
        match self {
            NodeError::InvalidName(_)
            | NodeError::BadRequest(_)
            | NodeError::Unsigned(_)
            | NodeError::BadSignature(_) => StatusCode::BAD_REQUEST,
            NodeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NodeError::Forbidden(_) | NodeError::NotPermitted(_) => StatusCode::FORBIDDEN,
            NodeError::NotFound(_) | NodeError::NoSuchVersion { .. } => StatusCode::NOT_FOUND,
            NodeError::Busy(_) | NodeError::Full | NodeError::Shed { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            NodeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            NodeError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            NodeError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::Conflict(_) => StatusCode::CONFLICT,
            NodeError::Remote { status, .. } => *status,
            NodeError::Registry(e) => {
                use crate::oci::RegistryError as R;
                match e {
                    R::BadReference(_) => StatusCode::BAD_REQUEST,
                    R::NotAllowed(_) => StatusCode::FORBIDDEN,
                    R::NotFound(_) => StatusCode::NOT_FOUND,
                    R::NotWasm(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    R::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    // The registry's answer, not the client's: a gateway's failure.
                    R::Unauthorized(_) | R::DigestMismatch(_) | R::Unreachable(_) => {
                        StatusCode::BAD_GATEWAY
                    }
                }
            }
            NodeError::Function(e) => match e {
                e if e.is_load_error() => StatusCode::BAD_REQUEST,
                E::WrongKind { .. } | E::BadRequest { .. } => StatusCode::BAD_REQUEST,
                E::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                E::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
                E::Capacity { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// A stable, kebab-case name for the error, as in `{"error": {"kind": …}}`.
    pub fn kind(&self) -> &str {
        match self {
            NodeError::InvalidName(_) => "invalid-name",
            NodeError::NotFound(_) => "not-found",
            NodeError::NoSuchVersion { .. } => "no-such-version",
            NodeError::BadRequest(_) => "bad-request",
            NodeError::Function(e) => e.kind(),
            NodeError::Busy(_) => "function-busy",
            NodeError::Full => "node-full",
            NodeError::Shed { .. } => "shed",
            NodeError::TooLarge(_) => "too-large",
            NodeError::TooManyConnections => "too-many-connections",
            NodeError::Storage(_) => "storage",
            NodeError::Cluster(_) => "cluster-unavailable",
            NodeError::Conflict(_) => "conflict",
            NodeError::Unauthorized(_) => "unauthorized",
            NodeError::Forbidden(_) => "forbidden",
            NodeError::NotPermitted(_) => "not-permitted",
            NodeError::Unsigned(_) => "unsigned",
            NodeError::BadSignature(_) => "bad-signature",
            NodeError::Remote { kind, .. } => kind,
            NodeError::Registry(e) => e.kind(),
        }
    }

    /// Whether a retry later may succeed (the 429s); they carry `Retry-After`.
    pub fn is_retryable(&self) -> bool {
        self.status() == StatusCode::TOO_MANY_REQUESTS
    }
}
