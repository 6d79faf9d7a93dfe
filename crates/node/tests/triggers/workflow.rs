//! Workflows on one node: the flood pipeline runs its steps in order with fan-out by named
//! outputs, a failing step is retried and dead-lettered, bad workflows are refused and leave
//! nothing behind, and a run still owed survives a restart.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestNode, config};

/// Deploys the flood pipeline's four functions and its workflow.
async fn flood(node: &TestNode) {
    for (name, store) in [
        ("detect", None),
        ("classify", None),
        ("alert", Some("alerts")),
        ("archive", Some("archive")),
    ] {
        let step = format!("STEP={name}");
        let mut query = vec![("env", step.as_str())];
        if let Some(store) = store {
            query.push(("kv", store));
        }
        let deployed = node.deploy(name, "flood", &query).await;
        assert_eq!(deployed.status(), StatusCode::CREATED);
    }
    let put = put_workflow(node, "flood", &flood_spec()).await;
    assert_eq!(
        put.status(),
        StatusCode::CREATED,
        "{}",
        put.text().await.unwrap()
    );
}

fn flood_spec() -> Value {
    json!({
        "priority": "urgent",
        "retry_backoff": "100ms",
        "max_deliver": 2,
        "steps": [
            {"name": "detect", "function": "detect", "next": ["classify"]},
            {"name": "classify", "function": "classify",
             "outputs": {"alert": ["alert"], "record": ["archive"]}},
            {"name": "alert", "function": "alert"},
            {"name": "archive", "function": "archive"}
        ]
    })
}

async fn put_workflow(node: &TestNode, name: &str, spec: &Value) -> reqwest::Response {
    Client::new()
        .put(node.at(&format!("/v1/workflows/{name}")))
        .json(spec)
        .send()
        .await
        .unwrap()
}

async fn start(node: &TestNode, name: &str, payload: &str) -> String {
    let started = Client::new()
        .post(node.at(&format!("/v1/workflows/{name}/runs")))
        .body(payload.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    started.json::<Value>().await.unwrap()["run"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The run's record once it has ended (succeeded or failed).
async fn ended(node: &TestNode, name: &str, run: &str) -> Value {
    for _ in 0..150 {
        let response = reqwest::get(node.at(&format!("/v1/workflows/{name}/runs/{run}")))
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let record: Value = response.json().await.unwrap();
            if record["status"] != "running" {
                return record;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} of {name} did not end within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_pipeline_fans_out_by_named_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    flood(&node).await;

    let run = start(&node, "flood", "ward-3 5.6").await;
    let record = ended(&node, "flood", &run).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    for step in ["detect", "classify", "alert", "archive"] {
        assert_eq!(
            record["steps"][step]["status"], "succeeded",
            "{step}: {record}"
        );
        assert_eq!(record["steps"][step]["node"], "local");
    }
    // Below the threshold, detect ends the run.
    let calm = start(&node, "flood", "ward-1 2.0").await;
    let record = ended(&node, "flood", &calm).await;
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["steps"].as_object().unwrap().len(), 1, "{record}");
    // High but not severe: archived, no alert.
    let high = start(&node, "flood", "ward-2 4.5").await;
    let record = ended(&node, "flood", &high).await;
    assert!(record["steps"].get("alert").is_none(), "{record}");
    let total = reqwest::get(node.at("/v1/functions/archive/kv/archive/total"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(total, "2");
    let alerts = reqwest::get(node.at("/v1/functions/alert/kv/alerts/ward-3"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(alerts, "1");
    let listed = node.json("/v1/workflows/flood").await;
    assert_eq!(
        listed["recent_runs"].as_array().unwrap().len(),
        3,
        "{listed}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    flood(&node).await;
    // `detect` traps on a reading it cannot read.
    let run = start(&node, "flood", "not-a-reading").await;
    let record = ended(&node, "flood", &run).await;
    assert_eq!(record["status"], "failed", "{record}");
    let detect = &record["steps"]["detect"];
    assert_eq!(detect["status"], "dead_lettered");
    assert_eq!(detect["attempts"], 2);
    assert!(
        detect["error"].as_str().unwrap().contains("no level"),
        "{detect}"
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_workflows_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed = node
        .deploy("detect", "flood", &[("env", "STEP=detect")])
        .await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let one = |next: &str| {
        json!({"steps": [
            {"name": "a", "function": "detect", "next": [next]},
            {"name": "b", "function": "detect", "next": ["a"]}
        ]})
    };
    for (spec, says) in [
        (one("b"), "cycle"),
        (one("c"), "no step c"),
        (
            json!({"steps": [{"name": "a", "function": "missing"}]}),
            "no function missing",
        ),
        (json!({"steps": []}), "1 to 64 steps"),
        (json!({"stepz": []}), "stepz"),
        (
            json!({"trigger": {"on_message": "sensors.>"}, "steps": [{"name": "a", "function": "detect"}]}),
            "--nats",
        ),
    ] {
        let refused = put_workflow(&node, "bad", &spec).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{spec}");
        let body = refused.text().await.unwrap();
        assert!(body.contains(says), "{spec}: {body}");
    }
    let gone = reqwest::get(node.at("/v1/workflows/bad")).await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(node.json("/v1/workflows").await["workflows"], json!([]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_owed_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed = node.deploy("step", "kv-script", &[("kv", "default")]).await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let spec = json!({"retry_backoff": "1500ms", "steps": [{"name": "only", "function": "step"}]});
    assert_eq!(
        put_workflow(&node, "resume", &spec).await.status(),
        StatusCode::CREATED
    );
    // The step fails once; its retry comes after the node restarted.
    let run = start(
        &node,
        "resume",
        "open default; inc tries 1; failonce flag; inc done 1",
    )
    .await;
    let tries = async |node: &TestNode, key: &str| {
        reqwest::get(node.at(&format!("/v1/functions/step/kv/default/{key}")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if tries(&node, "tries").await == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
    let node = TestNode::restart(config(dir.path())).await;
    let record = ended(&node, "resume", &run).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["steps"]["only"]["attempts"], 2);
    assert_eq!(tries(&node, "done").await, "1");
    node.stop().await;
}
