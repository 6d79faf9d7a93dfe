//! Workflows across a cluster: the flood pipeline's steps are taken by whichever node has
//! room, each run's record names the node of each step, and a durable message starts a run.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestNode, guest, three, within};

/// Deploys the flood pipeline's functions and its workflow, with `trigger` (JSON) if given.
async fn deploy_flood(node: &TestNode, trigger: Option<Value>) {
    for (name, store) in [
        ("detect", ""),
        ("classify", ""),
        ("alert", "&kv=alerts"),
        ("archive", "&kv=archive"),
    ] {
        let response = reqwest::Client::new()
            .put(node.url(&format!("/v1/functions/{name}?env=STEP%3D{name}{store}")))
            .body(guest("flood"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    let mut spec = json!({
        "steps": [
            {"name": "detect", "function": "detect", "next": ["classify"]},
            {"name": "classify", "function": "classify",
             "outputs": {"alert": ["alert"], "record": ["archive"]}},
            {"name": "alert", "function": "alert"},
            {"name": "archive", "function": "archive"}
        ]
    });
    if let Some(trigger) = trigger {
        spec["trigger"] = trigger;
    }
    let response = reqwest::Client::new()
        .put(node.url("/v1/workflows/flood"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn record(node: &TestNode, run: &str) -> Option<Value> {
    let response = reqwest::get(node.url(&format!("/v1/workflows/flood/runs/{run}")))
        .await
        .unwrap();
    if response.status() != 200 {
        return None;
    }
    let record: Value = response.json().await.unwrap();
    (record["status"] != "running" && record["steps"].as_object().unwrap().len() == 4)
        .then_some(record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_step_workflow_with_fan_out_runs_across_the_cluster() {
    let Some(nats) = crate::common::nats("a_three_step_workflow_with_fan_out") else {
        return;
    };
    let nodes = three(&nats);
    deploy_flood(&nodes[0], None).await;
    // Every node learns of the workflow.
    for n in &nodes {
        within(
            Duration::from_secs(10),
            "the workflow everywhere",
            || async {
                reqwest::get(n.url("/v1/workflows/flood"))
                    .await
                    .unwrap()
                    .status()
                    == 200
            },
        )
        .await;
    }
    let mut runs = Vec::new();
    for i in 0..9 {
        let started: Value = reqwest::Client::new()
            .post(nodes[i % 3].url("/v1/workflows/flood/runs"))
            .body(format!("ward-{i} 5.{i}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        runs.push(started["run"].as_str().unwrap().to_owned());
    }
    let mut seen = BTreeSet::new();
    for run in &runs {
        within(Duration::from_secs(30), "the run's end", || async {
            record(&nodes[1], run).await.is_some()
        })
        .await;
        let record = record(&nodes[2], run).await.unwrap();
        assert_eq!(record["status"], "succeeded", "{record}");
        for step in ["detect", "classify", "alert", "archive"] {
            let node = record["steps"][step]["node"].as_str().unwrap().to_owned();
            assert!(["a", "b", "c"].contains(&node.as_str()), "{record}");
            seen.insert(node);
        }
    }
    assert!(seen.len() >= 2, "the steps all ran on {seen:?}");
    // Each run archived once: the hand-offs were not duplicated.
    let total = reqwest::get(nodes[0].url("/v1/functions/archive/kv/archive/total"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(total, "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_message_starts_a_run() {
    let Some(nats) = crate::common::nats("a_durable_message_starts_a_run") else {
        return;
    };
    let a = TestNode::start_with(&nats.url(), "a", 0.0, 2, |node, _| {
        node.auth = limes_node::AuthMode::None;
        node.grants.messaging.subjects =
            vec![limes_node::subject::Pattern::parse("sensors.>").unwrap()];
    })
    .unwrap();
    deploy_flood(&a, Some(json!({"on_message": "sensors.*.level"}))).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for reading in ["ward-1 5.5", "ward-2 4.1", "ward-3 1.0"] {
        js.publish("sensors.river.level", reading.to_owned().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    within(Duration::from_secs(20), "two readings archived", || async {
        reqwest::get(a.url("/v1/functions/archive/kv/archive/total"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            == "2"
    })
    .await;
}
