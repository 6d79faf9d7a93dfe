//! Key-value stores on a node: the manifest's stores and the operator's grant, the operator
//! API, atomic counters under concurrent callers, restarts, and removal.

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::common::{TestNode, config, error_kind};

async fn run(node: &TestNode, name: &str, script: &str) -> String {
    let response = node.invoke(name, script).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn kv_url(node: &TestNode, name: &str, store: &str, key: &str) -> String {
    node.at(&format!("/v1/functions/{name}/kv/{store}/{key}"))
}

#[tokio::test]
async fn guests_and_the_operator_api_see_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    assert!(
        node.deploy("counts", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    assert_eq!(
        run(&node, "counts", "open default; set alarms 3; open other").await,
        "ok;ok;err:access-denied"
    );

    let http = Client::new();
    let got = http
        .get(kv_url(&node, "counts", "default", "alarms"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.headers().contains_key("x-limes-revision"));
    assert_eq!(got.text().await.unwrap(), "3");

    let put = http
        .put(kv_url(&node, "counts", "default", "sensor%2F7"))
        .body("41")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        run(&node, "counts", "open default; inc sensor/7 1").await,
        "ok;42"
    );

    let listing: Value = node.json("/v1/functions/counts/kv/default").await;
    assert_eq!(listing["keys"], serde_json::json!(["alarms", "sensor/7"]));
    assert_eq!(listing["cursor"], Value::Null);

    let del = http
        .delete(kv_url(&node, "counts", "default", "alarms"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let missing = http
        .get(kv_url(&node, "counts", "default", "alarms"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let undeclared = http
        .get(kv_url(&node, "counts", "other", "k"))
        .send()
        .await
        .unwrap();
    assert_eq!(undeclared.status(), StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn a_shared_store_needs_the_operators_grant() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.grants.kv.shared = vec!["alarms".into()];
    let node = TestNode::start(cfg).await;

    let refused = node
        .deploy("a", "kv-script", &[("kv_shared", "sirens")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_kind(refused).await, "not-permitted");
    let both = node
        .deploy(
            "a",
            "kv-script",
            &[("kv", "alarms"), ("kv_shared", "alarms")],
        )
        .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);

    for name in ["a", "b"] {
        let r = node
            .deploy(
                name,
                "kv-script",
                &[("kv", "default"), ("kv_shared", "alarms")],
            )
            .await;
        assert!(r.status().is_success());
    }
    run(
        &node,
        "a",
        "open default; set k mine; open alarms; set k ours",
    )
    .await;
    assert_eq!(
        run(&node, "b", "open default; get k; open alarms; get k").await,
        "ok;none;ok;ours"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_callers_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    assert!(
        node.deploy("counter", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    let url = node.at("/v1/functions/counter/invoke");
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = Client::new();
                // 25 increments each; a call refused for a run slot (429) is tried again, as
                // a client would.
                let mut done = 0;
                while done < 25 {
                    let r = http
                        .post(&url)
                        .body("open default; inc n 1")
                        .send()
                        .await
                        .unwrap();
                    match r.status() {
                        StatusCode::OK => done += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await
                        }
                        other => panic!("increment failed: {other}"),
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(run(&node, "counter", "open default; get n").await, "ok;200");
    node.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart_and_goes_with_its_function() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    assert!(
        node.deploy("keeper", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    assert!(
        node.deploy("dropper", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    run(&node, "keeper", "open default; set k kept").await;
    run(&node, "dropper", "open default; set k dropped").await;
    node.stop().await;

    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(run(&node, "keeper", "open default; get k").await, "ok;kept");
    let http = Client::new();
    let keep = http
        .delete(node.at("/v1/functions/keeper?keep_state=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), StatusCode::NO_CONTENT);
    let drop = http
        .delete(node.at("/v1/functions/dropper"))
        .send()
        .await
        .unwrap();
    assert_eq!(drop.status(), StatusCode::NO_CONTENT);
    for name in ["keeper", "dropper"] {
        assert!(
            node.deploy(name, "kv-script", &[("kv", "default")])
                .await
                .status()
                .is_success()
        );
    }
    assert_eq!(run(&node, "keeper", "open default; get k").await, "ok;kept");
    assert_eq!(
        run(&node, "dropper", "open default; get k").await,
        "ok;none"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_operators_limits_bind_guests_and_the_api_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.grants.kv.limits.max_value_bytes = 16;
    let node = TestNode::start(cfg).await;
    assert!(
        node.deploy("small", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    assert_eq!(
        run(&node, "small", "open default; big k 17; big k 16").await,
        "ok;err:the value is 17 bytes, over this node's limit of 16;ok"
    );
    let put = Client::new()
        .put(kv_url(&node, "small", "default", "k"))
        .body(vec![b'x'; 17])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    node.stop().await;
}

#[tokio::test]
async fn metrics_count_each_store_its_operations_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    assert!(
        node.deploy("m", "kv-script", &[("kv", "default")])
            .await
            .status()
            .is_success()
    );
    run(
        &node,
        "m",
        "open default; set a 1; set b 22; get a; race a x y",
    )
    .await;
    let metrics = node.metrics().await;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(line(r#"limes_kv_keys{function="m",store="default"}"#), "2");
    assert_eq!(line(r#"limes_kv_bytes{function="m",store="default"}"#), "5");
    assert_eq!(
        line(r#"limes_kv_conflicts_total{function="m",store="default"}"#),
        "1"
    );
    assert_eq!(
        line(r#"limes_kv_operations_total{function="m",store="default",operation="set"}"#),
        "4"
    );
    assert_eq!(metrics.matches("# EOF").count(), 1);
    node.stop().await;
}
