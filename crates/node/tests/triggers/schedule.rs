//! Triggers on one node: schedules run their function, one at a time unless overlap is allowed,
//! and stop with the schedule; message triggers are refused without a cluster.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{TestNode, config, count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_runs_its_function_and_stops_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let scheduled = [
        ("kv", "default"),
        ("schedule", "every 200ms"),
        ("schedule_args", "open default; inc ticks 1"),
    ];
    assert!(
        node.deploy("tally", "kv-script", &scheduled)
            .await
            .status()
            .is_success()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran = count(&node, "tally", "ticks").await;
    // About 7 ticks; the bounds leave room for a slow machine, not for a missing scheduler.
    assert!(
        (3..=9).contains(&ran),
        "{ran} ticks in 1.5 s of a 200 ms schedule"
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(r#"limes_schedule_ticks_total{function="tally",outcome="ran"}"#),
        "{metrics}"
    );

    // The same function without a schedule: the ticks stop.
    assert!(
        node.deploy("tally", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = count(&node, "tally", "ticks").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count(&node, "tally", "ticks").await, stopped);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_outlasts_its_interval_is_not_overlapped() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let scheduled = [
        ("kv", "default"),
        ("schedule", "every 100ms"),
        ("schedule_args", "open default; inc runs 1; nap 450"),
    ];
    assert!(
        node.deploy("slow", "kv-script", &scheduled)
            .await
            .status()
            .is_success()
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // 13 ticks; each run takes 450 ms, so at most 3 or 4 of them start.
    let runs = count(&node, "slow", "runs").await;
    assert!((1..=4).contains(&runs), "{runs} runs started");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(r#"limes_schedule_ticks_total{function="slow",outcome="overlap"}"#),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_schedules_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    for (schedule, says) in [("every 1ms", "shortest"), ("61 * * * *", "cron")] {
        let refused = node
            .deploy("bad", "kv-script", &[("schedule", schedule)])
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let body = refused.text().await.unwrap();
        assert!(body.contains(says), "{body}");
    }
    let refused = node
        .deploy(
            "bad",
            "kv-script",
            &[("schedule", "0 9 * * *"), ("schedule_tz", "Mars/Olympus")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    node.stop().await;
}

#[tokio::test]
async fn message_triggers_need_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let refused = node
        .deploy("listener", "kv-script", &[("on_message", "sensors.>")])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = refused.text().await.unwrap();
    assert!(body.contains("--nats"), "{body}");
    node.stop().await;
}
