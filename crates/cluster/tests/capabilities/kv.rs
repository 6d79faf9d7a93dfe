//! Key-value stores across the cluster: the backend suite on a real nats-server, a counter
//! that adds up whichever node runs each increment, and removal everywhere.

use std::sync::Arc;
use std::time::Duration;

use limes_cluster::kv::NatsKv;

use crate::common::{TestNode, invoke, nats, within};

#[tokio::test]
async fn nats_kv_keeps_every_promise_of_the_suite() {
    let Some(nats) = nats("nats_kv_keeps_every_promise_of_the_suite") else {
        return;
    };
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = Arc::new(NatsKv::new(async_nats::jetstream::new(client)));
    limes_runtime::kv::conformance::check(kv, "suite")
        .await
        .unwrap();
}

async fn deploy_counter(node: &TestNode) {
    let response = reqwest::Client::new()
        .put(node.url("/v1/functions/counter?kv=default&max_concurrency=16"))
        .body(crate::common::guest("kv-script"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_on_three_nodes_add_up_and_removal_clears_them_everywhere() {
    let Some(nats) = nats("increments_on_three_nodes_add_up") else {
        return;
    };
    let nodes = Arc::new(crate::common::three(&nats));
    deploy_counter(&nodes[0]).await;
    for node in nodes.iter() {
        within(
            Duration::from_secs(10),
            "the counter reaches every node",
            || async { invoke(node, "counter", "open default").await.status == 200 },
        )
        .await;
    }
    // 8 writers, 10 increments each, sent round-robin to the three nodes; a 429 is retried.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let mut turn = w;
                while done < 10 {
                    let answer = invoke(&nodes[turn % 3], "counter", "open default; inc n 1").await;
                    turn += 1;
                    match answer.status {
                        200 => {
                            assert!(answer.body.starts_with("ok;"), "{}", answer.body);
                            assert!(!answer.body.contains("err"), "{}", answer.body);
                            done += 1;
                        }
                        429 => tokio::time::sleep(Duration::from_millis(10)).await,
                        other => panic!("increment: {other} {}", answer.body),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for node in nodes.iter() {
        assert_eq!(
            invoke(node, "counter", "open default; get n").await.body,
            "ok;80"
        );
    }

    let removed = reqwest::Client::new()
        .delete(nodes[1].url("/v1/functions/counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    deploy_counter(&nodes[1]).await;
    within(
        Duration::from_secs(10),
        "the new counter starts from nothing on c",
        || async {
            invoke(&nodes[2], "counter", "open default; get n")
                .await
                .body
                == "ok;none"
        },
    )
    .await;
}
