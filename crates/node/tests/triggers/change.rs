//! Change triggers on one node: a key's change runs its watcher once, only for the watched
//! prefix, and what is owed survives a restart.

use std::time::Duration;

use reqwest::{Client, StatusCode};

use crate::common::{TestNode, config, count};

/// Writes `value` to key `key` of `name`'s store `default`, as an operator would.
async fn write(node: &TestNode, name: &str, key: &str, value: &str) {
    let response = Client::new()
        .put(node.at(&format!("/v1/functions/{name}/kv/default/{key}")))
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 10 s");
}

const WATCHER: &[(&str, &str)] = &[
    ("kv", "default"),
    ("on_change", "default"),
    ("on_change_prefix", "in-"),
    ("retry_backoff", "1500ms"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_runs_its_watcher_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed = node.deploy("watcher", "kv-script", WATCHER).await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    // The watcher runs the changed value as its script.
    write(&node, "watcher", "in-1", "open default; inc seen 1").await;
    // Outside the prefix: no run.
    write(&node, "watcher", "other", "open default; inc seen 100").await;
    until("the watcher ran", async || {
        count(&node, "watcher", "seen").await >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&node, "watcher", "seen").await, 1);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(
            r#"limes_trigger_deliveries_total{function="watcher",trigger="change",outcome="acked"} 1"#
        ),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_still_owed_runs_after_a_restart_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed = node.deploy("watcher", "kv-script", WATCHER).await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    // Its first attempt fails; the retry waits 1.5 s, by which time the node has stopped.
    write(
        &node,
        "watcher",
        "in-1",
        "open default; inc tries 1; failonce flag; inc done 1",
    )
    .await;
    until("the first attempt", async || {
        count(&node, "watcher", "tries").await == 1
    })
    .await;
    node.stop().await;

    let node = TestNode::restart(config(dir.path())).await;
    until("the retry after the restart", async || {
        count(&node, "watcher", "done").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&node, "watcher", "tries").await, 2);
    assert_eq!(count(&node, "watcher", "done").await, 1);
    node.stop().await;
}

#[tokio::test]
async fn a_watch_of_a_store_the_function_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let refused = node
        .deploy("watcher", "kv-script", &[("on_change", "readings")])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = refused.text().await.unwrap();
    assert!(body.contains("kv=readings"), "{body}");
    node.stop().await;
}
