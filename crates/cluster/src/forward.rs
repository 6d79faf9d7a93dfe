//! Forwarded invocations on the wire: NATS request/reply on `limes.invoke.<node-id>`.
//!
//! The request carries the function and hop count in headers and the argument as the payload;
//! the reply carries the outcome in headers and the result (or error message) as the payload.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use limes_node::{Node, NodeError, Ran};

const FUNCTION: &str = "Limes-Function";
const HOPS: &str = "Limes-Hops";
const STATUS: &str = "Limes-Status";
const KIND: &str = "Limes-Kind";
const NODE: &str = "Limes-Node";
const VERSION: &str = "Limes-Version";
const COLD_START_US: &str = "Limes-Cold-Start-Us";
const EXECUTION_US: &str = "Limes-Execution-Us";

/// The subject a node serves forwarded invocations on.
pub fn subject(node_id: &str) -> String {
    format!("limes.invoke.{node_id}")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header(headers, name).and_then(|v| v.parse().ok())
}

/// Builds the request for `name`.
pub fn request(name: &str, hops: u32) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(FUNCTION, name);
    headers.insert(HOPS, hops.to_string().as_str());
    headers
}

/// Reads a reply: the outcome, or the remote node's error (status and kind kept).
pub fn reply(target: &str, message: &async_nats::Message) -> Result<Ran, NodeError> {
    let empty = HeaderMap::new();
    let headers = message.headers.as_ref().unwrap_or(&empty);
    let text = String::from_utf8_lossy(&message.payload).into_owned();
    let status: u16 = number(headers, STATUS).unwrap_or(500);
    if status != 200 {
        let status =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        return Err(NodeError::Remote {
            node: target.to_owned(),
            status,
            kind: header(headers, KIND).unwrap_or("remote").to_owned(),
            message: text,
        });
    }
    let micros = |name| Duration::from_micros(number(headers, name).unwrap_or(0));
    Ok(Ran {
        result: text,
        node: header(headers, NODE).unwrap_or(target).to_owned(),
        version: number(headers, VERSION).unwrap_or(0),
        cold_start: micros(COLD_START_US),
        execution: micros(EXECUTION_US),
        hops: number(headers, HOPS).unwrap_or(1),
        forward_added: None,
    })
}

fn encode(outcome: Result<Ran, NodeError>) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    match outcome {
        Ok(ran) => {
            headers.insert(STATUS, "200");
            headers.insert(NODE, ran.node.as_str());
            headers.insert(VERSION, ran.version.to_string().as_str());
            headers.insert(HOPS, ran.hops.to_string().as_str());
            headers.insert(
                COLD_START_US,
                ran.cold_start.as_micros().to_string().as_str(),
            );
            headers.insert(EXECUTION_US, ran.execution.as_micros().to_string().as_str());
            (headers, Bytes::from(ran.result))
        }
        Err(e) => {
            headers.insert(STATUS, e.status().as_u16().to_string().as_str());
            headers.insert(KIND, e.kind());
            (headers, Bytes::from(e.to_string()))
        }
    }
}

/// Serves forwarded invocations for `node` until the subscription ends (the client closed).
/// async-nats re-subscribes by itself after a reconnect.
pub async fn serve(client: async_nats::Client, node: Arc<Node>) -> Result<(), String> {
    let subject = subject(&node.config().node_id);
    let mut calls = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("subscribing to {subject}: {e}"))?;
    while let Some(message) = calls.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let (client, node) = (client.clone(), node.clone());
        tokio::spawn(async move {
            let empty = HeaderMap::new();
            let headers = message.headers.as_ref().unwrap_or(&empty);
            let outcome = match (
                header(headers, FUNCTION),
                std::str::from_utf8(&message.payload),
            ) {
                (Some(name), Ok(args)) => {
                    let hops = number(headers, HOPS).unwrap_or(limes_node::MAX_HOPS);
                    node.invoke(name, args, hops).await
                }
                (None, _) => Err(NodeError::BadRequest(
                    "a forwarded call without a Limes-Function header".into(),
                )),
                (_, Err(_)) => Err(NodeError::BadRequest("args must be UTF-8 text".into())),
            };
            let (headers, payload) = encode(outcome);
            if let Err(e) = client
                .publish_with_headers(reply_to, headers, payload)
                .await
            {
                tracing::warn!(error = %e, "could not answer a forwarded call");
            }
        });
    }
    Ok(())
}
