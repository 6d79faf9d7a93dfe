//! Forwarded invocations on the wire: NATS request/reply on `limes.invoke.<node-id>` for `run`
//! functions and `limes.http.<node-id>` for `wasi:http` functions.
//!
//! The request carries the function and hop count in headers and the argument (or the HTTP
//! body) as the payload; an HTTP request's method, URI and headers travel as JSON in one
//! header. The reply carries the outcome in headers and the result, HTTP body or error message
//! as the payload.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use limes_node::{HttpCall, HttpRan, Node, NodeError, Ran};
use serde::{Deserialize, Serialize};

const FUNCTION: &str = "Limes-Function";
const HOPS: &str = "Limes-Hops";
const STATUS: &str = "Limes-Status";
const KIND: &str = "Limes-Kind";
const NODE: &str = "Limes-Node";
const VERSION: &str = "Limes-Version";
const COLD_START_US: &str = "Limes-Cold-Start-Us";
const EXECUTION_US: &str = "Limes-Execution-Us";
const HEAD: &str = "Limes-Head";
const ELAPSED_US: &str = "Limes-Elapsed-Us";

/// The subject a node serves forwarded `run` invocations on.
pub fn subject(node_id: &str) -> String {
    format!("limes.invoke.{node_id}")
}

/// The subject a node serves forwarded `wasi:http` requests on.
pub fn http_subject(node_id: &str) -> String {
    format!("limes.http.{node_id}")
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
    remote_error(target, headers, &message.payload)?;
    let micros = |name| Duration::from_micros(number(headers, name).unwrap_or(0));
    Ok(Ran {
        result: String::from_utf8_lossy(&message.payload).into_owned(),
        node: header(headers, NODE).unwrap_or(target).to_owned(),
        version: number(headers, VERSION).unwrap_or(0),
        cold_start: micros(COLD_START_US),
        execution: micros(EXECUTION_US),
        hops: number(headers, HOPS).unwrap_or(1),
        forward_added: None,
    })
}

/// The remote node's error, when its reply carries one.
fn remote_error(target: &str, headers: &HeaderMap, payload: &Bytes) -> Result<(), NodeError> {
    let status: u16 = number(headers, STATUS).unwrap_or(500);
    if status == 200 {
        return Ok(());
    }
    Err(NodeError::Remote {
        node: target.to_owned(),
        status: http::StatusCode::from_u16(status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        kind: header(headers, KIND).unwrap_or("remote").to_owned(),
        message: String::from_utf8_lossy(payload).into_owned(),
    })
}

fn error_reply(e: &NodeError) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(STATUS, e.status().as_u16().to_string().as_str());
    headers.insert(KIND, e.kind());
    (headers, Bytes::from(e.to_string()))
}

/// An HTTP head: the request's method and URI, or the response's status, and the headers
/// (those that are text; others are dropped).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    headers: Vec<(String, String)>,
}

fn text_headers(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

fn apply_headers(map: &mut http::HeaderMap, headers: Vec<(String, String)>) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            map.append(k, v);
        }
    }
}

/// Builds the request for a forwarded `wasi:http` call: headers and payload.
pub fn http_request(call: &HttpCall) -> Result<(HeaderMap, Bytes), NodeError> {
    let (parts, body) = call.request.clone().into_parts();
    let head = Head {
        method: Some(parts.method.to_string()),
        uri: Some(parts.uri.to_string()),
        headers: text_headers(&parts.headers),
        ..Head::default()
    };
    let mut headers = request(&call.name, call.hops);
    let json = serde_json::to_string(&head).map_err(|e| NodeError::Storage(e.to_string()))?;
    headers.insert(HEAD, json.as_str());
    Ok((headers, body))
}

/// Reads the reply to a forwarded `wasi:http` call.
pub fn http_reply(target: &str, message: &async_nats::Message) -> Result<HttpRan, NodeError> {
    let empty = HeaderMap::new();
    let headers = message.headers.as_ref().unwrap_or(&empty);
    remote_error(target, headers, &message.payload)?;
    let head: Head = header(headers, HEAD)
        .and_then(|h| serde_json::from_str(h).ok())
        .ok_or_else(|| NodeError::Cluster(format!("node {target} sent a reply without a head")))?;
    let mut response = http::Response::new(message.payload.clone());
    *response.status_mut() = head
        .status
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::BAD_GATEWAY);
    apply_headers(response.headers_mut(), head.headers);
    Ok(HttpRan {
        node: header(headers, NODE).unwrap_or(target).to_owned(),
        hops: number(headers, HOPS).unwrap_or(1),
        remote: Duration::from_micros(number(headers, ELAPSED_US).unwrap_or(0)),
        response,
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
        Err(e) => error_reply(&e),
    }
}

/// Runs one forwarded `run` invocation here.
async fn answer_run(node: Arc<Node>, message: async_nats::Message) -> (HeaderMap, Bytes) {
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
    encode(outcome)
}

/// Answers every request on `subject` with `answer`, each in its own task, until the
/// subscription ends (the client closed). async-nats re-subscribes by itself after a reconnect.
async fn answer_all<F, Fut>(
    client: async_nats::Client,
    subject: String,
    node: Arc<Node>,
    answer: F,
) -> Result<(), String>
where
    F: Fn(Arc<Node>, async_nats::Message) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = (HeaderMap, Bytes)> + Send + 'static,
{
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
            let (headers, payload) = answer(node, message).await;
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

/// Serves forwarded `run` invocations for `node`.
pub async fn serve(client: async_nats::Client, node: Arc<Node>) -> Result<(), String> {
    let subject = subject(&node.config().node_id);
    answer_all(client, subject, node, answer_run).await
}

/// Serves forwarded `wasi:http` calls for `node`.
pub async fn serve_http(client: async_nats::Client, node: Arc<Node>) -> Result<(), String> {
    let subject = http_subject(&node.config().node_id);
    answer_all(client, subject, node, answer_http).await
}

/// Runs one forwarded `wasi:http` call here and buffers the answer.
async fn answer_http(node: Arc<Node>, message: async_nats::Message) -> (HeaderMap, Bytes) {
    let started = std::time::Instant::now();
    let empty = HeaderMap::new();
    let headers = message.headers.as_ref().unwrap_or(&empty);
    let (Some(name), Some(head)) = (
        header(headers, FUNCTION),
        header(headers, HEAD).and_then(|h| serde_json::from_str::<Head>(h).ok()),
    ) else {
        return error_reply(&NodeError::BadRequest(
            "a forwarded HTTP call without Limes-Function and Limes-Head".into(),
        ));
    };
    let mut request = http::Request::new(axum::body::Body::from(message.payload.clone()));
    match (
        head.method
            .as_deref()
            .map(|m| http::Method::from_bytes(m.as_bytes())),
        head.uri.as_deref().map(str::parse::<http::Uri>),
    ) {
        (Some(Ok(method)), Some(Ok(uri))) => {
            *request.method_mut() = method;
            *request.uri_mut() = uri;
        }
        _ => {
            return error_reply(&NodeError::BadRequest(
                "a forwarded HTTP call with a bad method or URI".into(),
            ));
        }
    }
    apply_headers(request.headers_mut(), head.headers);
    let hops = number(headers, HOPS).unwrap_or(limes_node::MAX_HOPS);
    let outcome = match node.serve_http(name, request, hops).await {
        Ok(response) => limes_node::buffer_response(response).await,
        Err(e) => Err(e),
    };
    let response = match outcome {
        Ok(response) => response,
        Err(e) => return error_reply(&e),
    };
    let (parts, body) = response.into_parts();
    let ran_on = parts
        .headers
        .get("x-limes-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&node.config().node_id)
        .to_owned();
    let head = Head {
        status: Some(parts.status.as_u16()),
        headers: text_headers(&parts.headers),
        ..Head::default()
    };
    let mut reply = HeaderMap::new();
    reply.insert(STATUS, "200");
    reply.insert(NODE, ran_on.as_str());
    reply.insert(HOPS, hops.to_string().as_str());
    reply.insert(
        ELAPSED_US,
        started.elapsed().as_micros().to_string().as_str(),
    );
    reply.insert(
        HEAD,
        serde_json::to_string(&head).unwrap_or_default().as_str(),
    );
    (reply, body)
}
