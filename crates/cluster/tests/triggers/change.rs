//! Change triggers across a cluster: a write on any node runs the watcher once.

use std::time::Duration;

use crate::common::{TestNode, three, within};

async fn count(node: &TestNode, key: &str) -> u64 {
    let response = reqwest::get(node.url(&format!("/v1/functions/watcher/kv/default/{key}")))
        .await
        .unwrap();
    match response.status().as_u16() {
        404 => 0,
        _ => response.text().await.unwrap().parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_any_node_runs_the_watcher_once() {
    let Some(nats) = crate::common::nats("a_write_on_any_node_runs_the_watcher_once") else {
        return;
    };
    let nodes = three(&nats);
    let response = reqwest::Client::new()
        .put(
            nodes[0].url("/v1/functions/watcher?kv=default&on_change=default&on_change_prefix=in-"),
        )
        .body(crate::common::guest("kv-script"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    // Every node learns of the watch with the function.
    within(
        Duration::from_secs(10),
        "the function everywhere",
        || async {
            let mut all = true;
            for n in &nodes {
                all &= reqwest::get(n.url("/v1/functions/watcher"))
                    .await
                    .unwrap()
                    .status()
                    == 200;
            }
            all
        },
    )
    .await;
    for (i, n) in nodes.iter().enumerate() {
        let written = reqwest::Client::new()
            .put(n.url(&format!("/v1/functions/watcher/kv/default/in-{i}")))
            .body("open default; inc seen 1")
            .send()
            .await
            .unwrap();
        assert!(written.status().is_success());
    }
    within(Duration::from_secs(10), "three runs", || async {
        count(&nodes[2], "seen").await >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&nodes[1], "seen").await, 3, "one run per write");
}
