//! Urgent first, through the API: with the run slot busy, an urgent call starts at once (in a
//! slot of its own) while a regular call that came earlier waits, and a regular call that
//! cannot start within its deadline is shed with 429 while the urgent one is not.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use limes_node::NodeConfig;
use reqwest::StatusCode;
use serde_json::Value;

fn node_with_one_slot(dir: &std::path::Path, regular_deadline: Duration) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.auth = limes_node::AuthMode::None;
    config.admission.run_slots = 1;
    config.admission.deadlines = [
        Duration::from_secs(10),
        regular_deadline,
        Duration::from_secs(10),
    ];
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn an_urgent_call_starts_at_once_while_an_earlier_regular_one_waits() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(node_with_one_slot(dir.path(), Duration::from_secs(10))).await;
    assert_eq!(
        node.deploy("nap", "sleep", &[("timeout", "10s")])
            .await
            .status(),
        201
    );
    assert_eq!(node.deploy("regular", "sleep", &[]).await.status(), 201);
    let urgent = node
        .deploy("alert", "sleep", &[("priority", "urgent")])
        .await;
    assert_eq!(urgent.status(), 201);
    let listed: Value = node.json("/v1/functions").await;
    let alert = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "alert")
        .unwrap()
        .clone();
    assert_eq!(alert["priority"], "urgent");

    let started = Instant::now();
    let call = |name: &'static str, ms: &'static str| {
        let url = node.at(&format!("/v1/functions/{name}/invoke"));
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .body(ms)
                .send()
                .await
                .unwrap();
            (response.status(), started.elapsed())
        })
    };
    let holder = call("nap", "400");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let regular = call("regular", "200");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let urgent = call("alert", "200");
    let (holder, regular, urgent) = (
        holder.await.unwrap(),
        regular.await.unwrap(),
        urgent.await.unwrap(),
    );
    assert_eq!(
        (holder.0, regular.0, urgent.0),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
    // alert ran at once in the urgent slot; regular waited for nap's shared slot.
    assert!(
        urgent.1 < regular.1,
        "urgent done at {:?}, regular at {:?}",
        urgent.1,
        regular.1
    );
    assert!(
        urgent.1 < Duration::from_millis(550),
        "urgent did not wait for nap: {:?}",
        urgent.1
    );
    assert!(
        regular.1 >= Duration::from_millis(550),
        "regular waited for nap: {:?}",
        regular.1
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("limes_admitted_total{class=\"urgent\"} 1"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regular_calls_past_their_deadline_get_429_and_urgent_calls_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(node_with_one_slot(dir.path(), Duration::from_millis(50))).await;
    assert_eq!(
        node.deploy("nap", "sleep", &[("timeout", "10s")])
            .await
            .status(),
        201
    );
    assert_eq!(
        node.deploy("alert", "sleep", &[("priority", "urgent")])
            .await
            .status(),
        201
    );
    let url = node.at("/v1/functions/nap/invoke");
    let holder = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body("500")
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shed = node.invoke("nap", "1").await;
    assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(shed.headers().contains_key("retry-after"));
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "shed", "{body}");
    let urgent = node.invoke("alert", "1").await;
    assert_eq!(urgent.status(), StatusCode::OK, "the urgent call ran");
    assert_eq!(holder.await.unwrap(), StatusCode::OK);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("limes_shed_total{class=\"regular\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("limes_shed_total{class=\"urgent\""),
        "{metrics}"
    );
    node.stop().await;
}
