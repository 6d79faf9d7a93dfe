//! Request bodies, read only once a call has a place: here (admitted) or on another node (at
//! most one forwarded message's worth). A call with no room is refused before a byte of its
//! body is held, and every body must arrive within the header-read timeout, so that a body
//! trickled a byte at a time holds nothing for long.

use std::sync::Arc;

use crate::cluster::{MAX_FORWARDED_BODY, Ran};
use crate::error::NodeError;
use crate::node::{Node, Route};

impl Node {
    /// [`Node::invoke`] with the argument still to be read from `body`: the call is admitted
    /// (or placed elsewhere) first, and only then is its body read, at most `limit` bytes (and
    /// at most [`MAX_FORWARDED_BODY`] for a call going elsewhere, which must fit one message)
    /// within the connection's header-read timeout. A call with no room is refused before a
    /// byte of a large body is held in memory.
    pub async fn invoke_body(
        self: &Arc<Self>,
        name: &str,
        body: axum::body::Body,
        limit: usize,
    ) -> Result<Ran, NodeError> {
        let route = self.route(name, 0).await?;
        let bytes = match route {
            Route::Here(_) => self.read_body(body, limit).await?,
            Route::Elsewhere { .. } => self.read_forwarded_body(body, limit).await?,
        };
        let args = std::str::from_utf8(&bytes)
            .map_err(|_| NodeError::BadRequest("args must be UTF-8 text".into()))?;
        self.invoke_routed(route, name, args, 0).await
    }

    /// [`Node::read_body`] for a call going to another node: at most [`MAX_FORWARDED_BODY`]
    /// (one message) or `limit`, whichever is less. Past it the node is still full: 429.
    pub(crate) async fn read_forwarded_body(
        &self,
        body: axum::body::Body,
        limit: usize,
    ) -> Result<bytes::Bytes, NodeError> {
        match self.read_body(body, limit.min(MAX_FORWARDED_BODY)).await {
            Err(NodeError::TooLarge(_)) => Err(NodeError::Full),
            other => other,
        }
    }

    /// Reads `body` whole: at most `limit` bytes ([`NodeError::TooLarge`] past it), within the
    /// header-read timeout, so that a body sent a byte at a time holds nothing for long.
    pub(crate) async fn read_body(
        &self,
        body: axum::body::Body,
        limit: usize,
    ) -> Result<bytes::Bytes, NodeError> {
        let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit));
        match tokio::time::timeout(self.config().connections.header_read_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(NodeError::TooLarge(limit))
            }
            Ok(Err(e)) => Err(NodeError::BadRequest(format!("reading the body: {e}"))),
            Err(_) => Err(NodeError::BadRequest(
                "the body did not arrive in time".into(),
            )),
        }
    }
}
