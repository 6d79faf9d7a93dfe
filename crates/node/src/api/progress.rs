//! A deploy's progress as a stream of JSON lines (`application/x-ndjson`), sent while the node
//! works, so that a client sees each stage and is never left waiting on a silent connection.
//!
//! Each line is one JSON object with the deploy's `id` and a `stage`:
//!
//! - one line per stage as the deploy enters it: `{"id":"d3","stage":"compile","at_ms":41}`;
//! - while a stage lasts, the same line again every [`HEARTBEAT`], with `"heartbeat":true`,
//!   so that proxies and clients with idle timeouts see a live connection;
//! - last, `{"id":"d3","stage":"done","at_ms":…,"outcome":{"deployed":{…version…}}}` or
//!   `…"outcome":{"failed":{"status":400,"kind":"bad-request","message":"…"}}`.
//!
//! The HTTP status is 200 once the stream starts: the outcome is in the last line.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde_json::json;
use tokio::sync::watch;

use crate::deploys::DeployState;

/// The media type of the stream, which a client asks for with `Accept`.
pub const NDJSON: &str = "application/x-ndjson";

/// How often a stage that lasts is announced again. Well under the 30 to 60 s idle timeouts
/// common in proxies and HTTP clients.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The stream of a deploy's lines, ending after its outcome.
pub fn stream(state: watch::Receiver<DeployState>) -> Response {
    struct Follow {
        state: watch::Receiver<DeployState>,
        sent: usize,
        done: bool,
    }
    let lines = stream::unfold(
        Follow {
            state,
            sent: 0,
            done: false,
        },
        |mut f| async move {
            if f.done {
                return None;
            }
            loop {
                let line = {
                    let s = f.state.borrow_and_update();
                    if f.sent < s.steps.len() {
                        let lines = lines(&s, f.sent);
                        f.sent = s.steps.len();
                        f.done = s.outcome.is_some();
                        Some(lines)
                    } else {
                        None
                    }
                };
                if let Some(line) = line {
                    return Some((Ok::<_, std::convert::Infallible>(line), f));
                }
                match tokio::time::timeout(HEARTBEAT, f.state.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => {
                        // The deploy's handle is gone without an outcome: say so and end.
                        f.done = true;
                        let line = json!({"stage": "done", "outcome": {"failed": {"status": 500, "kind": "storage", "message": "the deploy ended without an outcome"}}});
                        return Some((Ok(format!("{line}\n")), f));
                    }
                    Err(_) => {
                        let s = f.state.borrow();
                        let step = s.steps.last();
                        let line = json!({"id": s.id, "stage": s.stage(), "at_ms": step.map(|s| s.at_ms), "heartbeat": true});
                        drop(s);
                        return Some((Ok(format!("{line}\n")), f));
                    }
                }
            }
        },
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The lines of the steps from `from` on, and the outcome with the last if there is one.
fn lines(state: &DeployState, from: usize) -> String {
    let mut out = String::new();
    let last = state.steps.len() - 1;
    for (i, step) in state.steps.iter().enumerate().skip(from) {
        let mut line = json!({"id": state.id, "stage": step.stage, "at_ms": step.at_ms});
        if i == last
            && let Some(outcome) = &state.outcome
        {
            line["outcome"] = json!(outcome);
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}
