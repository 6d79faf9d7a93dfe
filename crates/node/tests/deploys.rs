//! Deploys that say what they do: the progress stream, and the outcome of a deploy whose client
//! went away.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// Deploys `guest` as `name`, following its progress; returns the deploy's id and its lines.
async fn follow(node: &TestNode, name: &str, guest_name: &str) -> (String, Vec<Value>) {
    let response = Client::new()
        .put(node.at(&format!("/v1/functions/{name}")))
        .header("accept", "application/x-ndjson")
        .body(guest(guest_name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let id = response.headers()["x-limes-deploy"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (id, lines)
}

fn stages(lines: &[Value]) -> Vec<&str> {
    let mut stages: Vec<&str> = Vec::new();
    for line in lines {
        let stage = line["stage"].as_str().unwrap();
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
    }
    stages
}

#[tokio::test]
async fn a_followed_deploy_streams_each_stage_then_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;

    let (id, lines) = follow(&node, "places", "map-index").await;
    assert_eq!(
        stages(&lines),
        ["validate", "pre-initialize", "compile", "store", "done"],
        "{lines:?}"
    );
    let outcome = &lines.last().unwrap()["outcome"]["deployed"];
    assert_eq!(outcome["version"], 1, "{lines:?}");
    assert!(outcome["preinit"].is_string(), "{lines:?}");
    // The same deploy, asked for afterwards.
    let state = node.json(&format!("/v1/deploys/{id}")).await;
    assert_eq!(state["function"], "places");
    assert_eq!(state["outcome"]["deployed"]["digest"], outcome["digest"]);

    // A failing initialization streams a `failed` outcome with the guest's words.
    let (_, lines) = follow(&node, "broken", "init-panics").await;
    assert_eq!(stages(&lines), ["validate", "pre-initialize", "done"]);
    let failed = &lines.last().unwrap()["outcome"]["failed"];
    assert_eq!(failed["status"], 400, "{failed}");
    assert_eq!(failed["kind"], "bad-request", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("the map data is missing"),
        "{failed}"
    );

    // Without Accept: application/x-ndjson, the answer is as it always was, with the id.
    let plain = node.deploy("echo", "echo", &[]).await;
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert!(plain.headers().contains_key("x-limes-deploy"));

    let unknown = reqwest::get(node.at("/v1/deploys/d999")).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_kind(unknown).await, "not-found");
    node.stop().await;
}

#[tokio::test]
async fn a_deploy_goes_on_when_its_client_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let response = Client::new()
        .put(node.at("/v1/functions/places"))
        .header("accept", "application/x-ndjson")
        .body(guest("map-index"))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-limes-deploy"]
        .to_str()
        .unwrap()
        .to_owned();
    // The client goes away before the deploy has ended (pre-initializing takes a while).
    drop(response);

    let deadline = Instant::now() + Duration::from_secs(300);
    let state = loop {
        let state = node.json(&format!("/v1/deploys/{id}")).await;
        if !state["outcome"].is_null() {
            break state;
        }
        assert!(Instant::now() < deadline, "the deploy did not end: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state["outcome"]["deployed"]["version"], 1, "{state}");
    let answer = node.invoke("places", "5000 5000").await;
    assert_eq!(answer.status(), StatusCode::OK);
    node.stop().await;
}
