//! Who may do what on a node: roles, the role each route needs, and the check of every
//! request's bearer token against them.
//!
//! Each route's need is written once, in [`crate::ROUTES`]; the middleware, the OpenAPI
//! document and the tests all read it from there. A route missing from that table needs the
//! admin role: an oversight fails closed.

pub mod tokens;

use std::path::Path;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, header};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::node::Node;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, tokens and the audit log included.
    Admin,
    /// Deploy, remove and roll back functions, and all that `invoke` may.
    Deploy,
    /// Invoke functions and read them.
    Invoke,
    /// Declare and end emergencies, and read the cluster.
    Emergency,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deploy, Role::Invoke, Role::Emergency];

    /// The role's name, as the API and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deploy => "deploy",
            Role::Invoke => "invoke",
            Role::Emergency => "emergency",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; roles: admin, deploy, invoke, emergency"))
    }
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone may call it.
    Nothing,
    /// A valid token of any role.
    AnyToken,
    /// `invoke`, `deploy` or `admin`.
    Invoke,
    /// `deploy` or `admin`.
    Deploy,
    /// `emergency` or `admin`.
    Emergency,
    /// `admin`.
    Admin,
    /// Invoking one function: nothing if it was deployed `public=true`, else as [`Need::Invoke`].
    Function,
}

impl Need {
    /// The roles that satisfy this need (every role for [`Need::Nothing`] and
    /// [`Need::AnyToken`]).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Need::Nothing | Need::AnyToken => &Role::ALL,
            Need::Invoke | Need::Function => &[Role::Admin, Role::Deploy, Role::Invoke],
            Need::Deploy => &[Role::Admin, Role::Deploy],
            Need::Emergency => &[Role::Admin, Role::Emergency],
            Need::Admin => &[Role::Admin],
        }
    }

    fn describe(self) -> String {
        let names: Vec<&str> = self.roles().iter().map(|r| r.as_str()).collect();
        match self {
            Need::AnyToken => "a token of any role".into(),
            _ => format!("a token with the role {}", names.join(" or ")),
        }
    }
}

/// How a node checks requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every route but the public ones needs a bearer token with the right role.
    #[default]
    Tokens,
    /// No checks at all: for a node that listens on loopback only (enforced by
    /// [`crate::serve`]).
    None,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tokens" => Ok(AuthMode::Tokens),
            "none" => Ok(AuthMode::None),
            other => Err(format!("unknown auth mode {other:?}; use tokens or none")),
        }
    }
}

/// Who made a request, as the handlers and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `anonymous` on a node without auth, `public` for a call of a public
    /// function without a token.
    pub name: String,
    /// The token's role, if a token was checked.
    pub role: Option<Role>,
}

/// The file, in the data directory, that holds a node's first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// On a node's first start (no token known), makes an admin token named `admin-<node id>` and
/// writes it to `<data_dir>/admin-token`, readable by the node's user only. The file is written
/// before the record, so that a crash in between leaves no token that nobody holds.
pub(crate) fn bootstrap(
    store: &tokens::TokenStore,
    data_dir: &Path,
    node_id: &str,
) -> Result<(), NodeError> {
    if !store.is_empty() {
        return Ok(());
    }
    let new = tokens::mint(&format!("admin-{node_id}"), Role::Admin, "bootstrap", None)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        // A temporary file is created with mode 0600; the rename makes it appear whole.
        let mut file = tempfile::NamedTempFile::new_in(data_dir)?;
        writeln!(file, "{}", new.token)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| NodeError::Storage(format!("writing {}: {e}", path.display())))?;
    store.put(&new.record)?;
    tracing::warn!(
        token = %new.record.name,
        path = %path.display(),
        "first start: an admin token was written to this file (readable by this user only)"
    );
    Ok(())
}

/// The need of the route `path` (as matched, with its `{params}`) for `method`.
pub(crate) fn need_of(method: &Method, path: &str) -> Need {
    if path.starts_with("/fn/") {
        return Need::Function;
    }
    let method = if method == Method::HEAD {
        "get".to_owned()
    } else {
        method.as_str().to_ascii_lowercase()
    };
    crate::api::ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or(Need::Admin, |(_, _, need)| *need)
}

/// The function a [`Need::Function`] request calls: `/v1/functions/{name}/invoke` or
/// `/fn/{name}/…`.
fn function_of(path: &str) -> &str {
    let rest = path
        .strip_prefix("/v1/functions/")
        .or_else(|| path.strip_prefix("/fn/"))
        .unwrap_or_default();
    rest.split('/').next().unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Node {
    /// Decides whether a request with `headers` for `path` may go on, given its route's `need`.
    pub async fn authorize(
        self: &Arc<Self>,
        need: Need,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, NodeError> {
        let anonymous = |name: &str| Caller {
            name: name.to_owned(),
            role: None,
        };
        if self.config().auth == AuthMode::None {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Some(Role::Admin),
            });
        }
        if need == Need::Nothing {
            return Ok(anonymous("public"));
        }
        if need == Need::Function && self.is_public(function_of(path)).await {
            return Ok(anonymous("public"));
        }
        let denied = |e: NodeError| {
            self.metrics.denied(e.kind());
            e
        };
        let token = bearer(headers).ok_or_else(|| {
            denied(NodeError::Unauthorized(format!(
                "this request needs {}: send `Authorization: Bearer <token>`",
                need.describe()
            )))
        })?;
        let record = self
            .tokens()
            .verify(token)
            .map_err(|reason| denied(NodeError::Unauthorized(reason)))?;
        if !need.roles().contains(&record.role) {
            return Err(denied(NodeError::Forbidden(format!(
                "token {:?} has the role {}; this request needs {}",
                record.name,
                record.role.as_str(),
                need.describe()
            ))));
        }
        Ok(Caller {
            name: record.name,
            role: Some(record.role),
        })
    }
}

/// The middleware on every route: checks the caller and hands it to the handler.
pub(crate) async fn middleware(
    State(node): State<Arc<Node>>,
    mut request: Request,
    next: Next,
) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let need = need_of(request.method(), &matched);
    match node
        .authorize(need, request.uri().path(), request.headers())
        .await
    {
        // The last connections are kept for the load balancer and the operator.
        Ok(caller)
            if request
                .extensions()
                .get::<crate::server::Reserved>()
                .is_some()
                && matched != "/healthz"
                && !(caller.role == Some(Role::Admin)
                    && node.config().auth == AuthMode::Tokens) =>
        {
            node.metrics.denied("too-many-connections");
            NodeError::TooManyConnections.into_response()
        }
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_needs_nest() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Need::Deploy.roles().contains(&Role::Deploy));
        assert!(!Need::Deploy.roles().contains(&Role::Invoke));
        assert!(Need::Invoke.roles().contains(&Role::Deploy));
        assert!(!Need::Emergency.roles().contains(&Role::Deploy));
        assert_eq!(Need::Admin.roles(), &[Role::Admin]);
    }

    #[test]
    fn unknown_routes_need_admin_and_functions_are_found() {
        assert_eq!(need_of(&Method::PATCH, "/v1/functions"), Need::Admin);
        assert_eq!(need_of(&Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need_of(&Method::HEAD, "/v1/functions"), Need::Invoke);
        assert_eq!(need_of(&Method::POST, "/fn/{name}/{*path}"), Need::Function);
        assert_eq!(function_of("/v1/functions/sort/invoke"), "sort");
        assert_eq!(function_of("/fn/hello/a/b"), "hello");
        assert_eq!(function_of("/fn/hello"), "hello");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
