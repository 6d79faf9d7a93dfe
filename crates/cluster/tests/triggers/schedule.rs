//! Schedules across a cluster: three nodes follow the same schedule and each tick runs once,
//! and a batch function's ticks pause while an emergency lasts.

use std::time::Duration;

use crate::common::{TestNode, three, within};

async fn ticks(node: &TestNode) -> u64 {
    let response = reqwest::get(node.url("/v1/functions/tick/kv/default/ticks"))
        .await
        .unwrap();
    match response.status().as_u16() {
        404 => 0,
        _ => response.text().await.unwrap().parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_each_tick_once_and_pause_batch_ticks_in_an_emergency() {
    let Some(nats) = crate::common::nats("three_nodes_run_each_tick_once") else {
        return;
    };
    let nodes = three(&nats);
    let query = "kv=default&priority=batch&max_concurrency=16&schedule=every%20300ms\
                 &schedule_args=open%20default%3B%20inc%20ticks%201";
    let response = reqwest::Client::new()
        .put(nodes[0].url(&format!("/v1/functions/tick?{query}")))
        .body(crate::common::guest("kv-script"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    within(Duration::from_secs(10), "the first ticks", || async {
        ticks(&nodes[0]).await >= 2
    })
    .await;

    // Every node runs the schedule; only the node that claims a tick runs it.
    let before = ticks(&nodes[1]).await;
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let ran = ticks(&nodes[2]).await - before;
    assert!(
        (3..=10).contains(&ran),
        "{ran} runs in 2.4 s of a 300 ms schedule on 3 nodes (once per tick: about 8; once per node: about 24)"
    );

    // An emergency for other work pauses a batch function's ticks, and its end resumes them.
    let declared = reqwest::Client::new()
        .post(nodes[1].url("/v1/emergency"))
        .json(&serde_json::json!({"urgent": ["alert"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 200, "{}", declared.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let paused = ticks(&nodes[0]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ticks(&nodes[0]).await <= paused + 1,
        "ticks ran during the emergency"
    );
    let ended = reqwest::Client::new()
        .delete(nodes[2].url("/v1/emergency"))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    within(
        Duration::from_secs(5),
        "ticks after the emergency",
        || async { ticks(&nodes[0]).await > paused + 1 },
    )
    .await;
}
