//! The check of every request: its route's need (from [`super::ROUTES`]) against the caller's
//! bearer token. A route missing from that table needs the admin role: an oversight fails
//! closed.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, header};

use crate::auth::{AuthMode, Caller, Need, Role};
use crate::error::NodeError;
use crate::node::Node;

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
    super::ROUTES
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
