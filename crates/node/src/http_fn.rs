//! Requests to `wasi:http` functions: run here with a fresh instance, or, when this node has no
//! room (or is released in an emergency), forwarded whole to another node of the cluster.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;

use crate::cluster::{HttpCall, MAX_FORWARDED_BODY};
use crate::error::NodeError;
use crate::node::{Admitted, Node, Route};

impl Node {
    /// Serves `request` (its path already stripped of `/fn/{name}`) with the `wasi:http`
    /// function `name`, forwarded `hops` times so far. Here, the response streams; forwarded,
    /// request and response are buffered, up to [`MAX_FORWARDED_BODY`] each. Either way the
    /// caller's credentials are removed first (see [`crate::guest_headers`]), so they neither
    /// reach a guest nor travel to another node.
    pub async fn serve_http(
        self: &Arc<Self>,
        name: &str,
        mut request: Request<Body>,
        hops: u32,
    ) -> Result<Response<Body>, NodeError> {
        let route = self.route(name, hops).await?;
        let pass = match &route {
            Route::Here(admitted) => admitted.live.pass_headers.clone(),
            // Not loaded here: the record says what the function may see.
            Route::Elsewhere { .. } => self
                .get(name)
                .await
                .map(|r| {
                    r.active_version()
                        .manifest
                        .capabilities
                        .http
                        .pass_headers
                        .clone()
                })
                .unwrap_or_default(),
        };
        crate::guest_headers::strip(request.headers_mut(), &pass);
        let (cluster, reason) = match route {
            Route::Here(admitted) => return self.run_http(admitted, name, request).await,
            Route::Elsewhere { cluster, reason } => (cluster, reason),
        };
        let (parts, body) = request.into_parts();
        let body = self.read_forwarded_body(body, MAX_FORWARDED_BODY).await?;
        let started = Instant::now();
        let ran = cluster
            .forward_http(HttpCall {
                name: name.to_owned(),
                request: Request::from_parts(parts, body),
                hops: hops + 1,
            })
            .await?;
        let added = started.elapsed().saturating_sub(ran.remote);
        self.metrics.forwarded(reason, added);
        let (mut parts, body) = ran.response.into_parts();
        if let Ok(node) = HeaderValue::from_str(&ran.node) {
            parts.headers.insert("x-limes-node", node);
        }
        parts
            .headers
            .insert("x-limes-hops", HeaderValue::from(ran.hops));
        parts.headers.insert(
            "x-limes-forward-us",
            HeaderValue::from(added.as_micros() as u64),
        );
        Ok(Response::from_parts(parts, Body::from(body)))
    }

    async fn run_http(
        &self,
        admitted: Admitted,
        name: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, NodeError> {
        let function = admitted.live.function.clone();
        let handled = self
            // Never inline: the guest writes its body from a task of its own, which must run
            // on the guest threads.
            .run_guest(&admitted.live, admitted.run.pool(), false, async move {
                function.handle_http(request).await
            })
            .await?;
        match handled {
            Ok(invocation) => {
                self.metrics.invocation(
                    name,
                    "ok",
                    Some((invocation.cold_start, Default::default())),
                );
                let (mut parts, body) = invocation.response.into_parts();
                parts.headers.insert(
                    "x-limes-cold-start-us",
                    HeaderValue::from(invocation.cold_start.as_micros() as u64),
                );
                if let Ok(node) = HeaderValue::from_str(&self.config().node_id) {
                    parts.headers.insert("x-limes-node", node);
                }
                // The admission slot stays taken until the body has been streamed.
                let body = body.map_frame(move |frame| {
                    let _held = &admitted;
                    frame
                });
                Ok(Response::from_parts(parts, Body::new(body)))
            }
            Err(e) => {
                self.metrics.invocation(name, e.kind(), None);
                Err(e.into())
            }
        }
    }
}

/// Collects a response for forwarding; a body past [`MAX_FORWARDED_BODY`] is an error.
pub async fn buffer(response: Response<Body>) -> Result<Response<Bytes>, NodeError> {
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_FORWARDED_BODY)
        .collect()
        .await
        .map_err(|e| {
            NodeError::BadRequest(format!(
                "the response cannot be forwarded ({e}; the limit is {MAX_FORWARDED_BODY} bytes)"
            ))
        })?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}
