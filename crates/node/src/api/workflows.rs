//! `/v1/workflows`: deploying workflows, starting runs and reading their records.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{client_request_id, request_id};
use crate::audit::Change;
use crate::auth::Caller;
use crate::error::NodeError;
use crate::node::Node;
use crate::workflows::{Status, Workflow};

/// Runs listed with a workflow.
const RECENT_RUNS: usize = 20;

pub(super) async fn list(State(node): State<Arc<Node>>) -> Result<Json<Value>, NodeError> {
    Ok(Json(json!({ "workflows": node.list_workflows()? })))
}

pub(super) async fn describe(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, NodeError> {
    let workflow = node
        .workflow(&name)?
        .ok_or_else(|| NodeError::NotFound(format!("workflow {name}")))?;
    let runs = node.recent_runs(&name, RECENT_RUNS)?;
    Ok(Json(json!({ "workflow": workflow, "recent_runs": runs })))
}

pub(super) async fn deploy(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), NodeError> {
    let workflow: Workflow = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("the workflow: {e}")))?;
    let existed = node.workflow(&name)?.is_some();
    let workflow = node.put_workflow(&name, workflow).await?;
    node.audit(Change {
        actor: &caller.name,
        action: "workflow.deploy",
        target: &name,
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: json!({"steps": workflow.steps.len()}),
    })
    .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({ "workflow": workflow }))))
}

pub(super) async fn remove(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, NodeError> {
    if !node.remove_workflow(&name).await? {
        return Err(NodeError::NotFound(format!("workflow {name}")));
    }
    node.audit(Change {
        actor: &caller.name,
        action: "workflow.remove",
        target: &name,
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: json!({}),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/workflows/{name}/runs`: the body is the first step's payload (UTF-8).
pub(super) async fn start(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), NodeError> {
    let payload = String::from_utf8(body.to_vec()).map_err(|_| {
        NodeError::BadRequest(
            "a run's payload is text (UTF-8): its first step gets it as args".into(),
        )
    })?;
    let run = node.start_run(&name, payload, None).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "workflow": name, "run": run })),
    ))
}

pub(super) async fn run(
    State(node): State<Arc<Node>>,
    Path((name, run)): Path<(String, String)>,
) -> Result<Json<Value>, NodeError> {
    let steps = node.run_record(&name, &run).await?;
    // A run is done when no step waits (to run, or to run again); failed when a step was
    // given up.
    let status = if steps
        .values()
        .any(|s| matches!(s.status, Status::Waiting | Status::Retrying))
    {
        "running"
    } else if steps.values().any(|s| s.status == Status::DeadLettered) {
        "failed"
    } else {
        "succeeded"
    };
    Ok(Json(
        json!({ "workflow": name, "run": run, "status": status, "steps": steps }),
    ))
}
