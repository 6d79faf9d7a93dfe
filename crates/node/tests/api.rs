//! The node against a real server on a loopback port: the API, admission, restarts, metrics.

use std::sync::Arc;

use limes_node::NodeConfig;
use reqwest::{Client, StatusCode};
use serde_json::Value;

#[path = "triggers/change.rs"]
mod change;
mod common;
#[path = "capabilities/kv.rs"]
mod kv;
#[path = "triggers/schedule.rs"]
mod schedule;
#[path = "triggers/workflow.rs"]
mod workflow;

use common::{TestNode, config, error_kind, guest};

// The nodes here run without auth (on loopback): these tests are about everything else;
// `auth.rs` tests tokens and roles.

#[tokio::test]
async fn deploy_invoke_list_version_rollback_delete() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;

    let first = node.deploy("greet", "echo", &[]).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (first["version"].as_u64(), first["kind"].as_str()),
        (Some(1), Some("run"))
    );

    let response = node.invoke("greet", "hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-limes-cold-start-us"));
    assert!(response.headers().contains_key("x-limes-execution-us"));
    assert_eq!(response.text().await.unwrap(), "hello");

    // A redeploy is version 2 and keeps version 1.
    assert_eq!(
        node.deploy("greet", "sort", &[]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        node.invoke("greet", "b,a").await.text().await.unwrap(),
        "[a,b]"
    );
    let described: Value = node.json("/v1/functions/greet").await;
    assert_eq!(described["versions"].as_array().unwrap().len(), 2);
    assert_eq!(described["active"], 2);

    let listed: Value = node.json("/v1/functions").await;
    assert_eq!(listed["functions"][0]["name"], "greet");

    let rolled = Client::new()
        .post(node.at("/v1/functions/greet/rollback?version=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.status(), StatusCode::OK);
    assert_eq!(
        node.invoke("greet", "b,a").await.text().await.unwrap(),
        "b,a",
        "version 1 echoes"
    );
    let missing = Client::new()
        .post(node.at("/v1/functions/greet/rollback?version=7"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let deleted = Client::new()
        .delete(node.at("/v1/functions/greet"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node.invoke("greet", "x").await.status(),
        StatusCode::NOT_FOUND
    );
    node.stop().await;
}

/// What the map-index guest answers for `point`, from its original component run directly.
async fn map_index_answer(point: &str) -> String {
    let runtime = limes_runtime::Runtime::new(limes_runtime::RuntimeConfig::default()).unwrap();
    let original = runtime
        .load(&guest("map-index"), limes_runtime::Policy::default())
        .unwrap();
    original.invoke(point).await.unwrap().result
}

#[tokio::test]
async fn a_function_with_init_is_preinitialized_at_deploy_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed = node.deploy("map", "map-index", &[]).await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let expected = map_index_answer("1234.5 777").await;
    assert_eq!(
        node.invoke("map", "1234.5 777").await.text().await.unwrap(),
        expected
    );
    let listed: Value = node.json("/v1/functions").await;
    assert_eq!(listed["functions"][0]["preinitialized"], true, "{listed}");
    let described: Value = node.json("/v1/functions/map").await;
    let version = &described["versions"][0];
    assert_ne!(version["preinit"], version["digest"], "{described}");
    assert!(version["preinit"].as_str().is_some_and(|d| d.len() == 64));
    // A function without an initialization step is served as deployed.
    node.deploy("echo", "echo", &[]).await;
    let echo: Value = node.json("/v1/functions/echo").await;
    assert!(echo["versions"][0].get("preinit").is_none(), "{echo}");
    node.stop().await;

    // After a restart the initialized component serves again, from the AOT cache.
    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(
        node.invoke("map", "1234.5 777").await.text().await.unwrap(),
        expected
    );
    let metrics = node.metrics().await;
    assert!(metrics.contains("limes_compiles_total 0\n"), "{metrics}");
    node.stop().await;
}

/// A node starts serving without loading its functions; `warm_up` loads them ahead of their
/// first calls, and a call that comes first loads its function itself.
#[tokio::test]
async fn a_restarted_node_serves_at_once_and_loads_its_functions_after() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            node.deploy(name, "echo", &[]).await.status(),
            StatusCode::CREATED
        );
    }
    node.stop().await;

    let opened = limes_node::Node::open(config(dir.path())).unwrap();
    let metrics = opened.metrics.render(opened.runtime().cache_stats(), &[]);
    assert!(metrics.contains("limes_functions_loaded 0\n"), "{metrics}");
    opened.warm_up().await;
    let metrics = opened.metrics.render(opened.runtime().cache_stats(), &[]);
    assert!(metrics.contains("limes_functions_loaded 3\n"), "{metrics}");
    drop(opened);

    // Through the API: deployed counts the registry, loaded what has run or warmed up.
    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(
        node.invoke("b", "first").await.text().await.unwrap(),
        "first"
    );
    let metrics = node.metrics().await;
    assert!(metrics.contains("limes_functions 3\n"), "{metrics}");
    assert!(metrics.contains("limes_functions_loaded 1\n"), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn a_failing_init_fails_the_deploy_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let refused = node.deploy("broken", "init-panics", &[]).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("pre-initializing"), "{message}");
    assert!(message.contains("the map data is missing"), "{message}");
    let missing = reqwest::get(node.at("/v1/functions/broken")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The node serves on.
    node.deploy("echo", "echo", &[]).await;
    assert_eq!(
        node.invoke("echo", "still here")
            .await
            .text()
            .await
            .unwrap(),
        "still here"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_functions_and_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(
        node.deploy("sort", "sort", &[("memory", "32MiB")])
            .await
            .status(),
        StatusCode::CREATED
    );
    node.stop().await;

    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(
        node.invoke("sort", "c,a,b").await.text().await.unwrap(),
        "[a,b,c]"
    );
    let metrics = node.metrics().await;
    assert!(metrics.contains("limes_compiles_total 0\n"), "{metrics}");
    assert!(
        metrics.contains("limes_aot_cache_hits_total{tier=\"disk\"} 1\n"),
        "{metrics}"
    );
    let described: Value = node.json("/v1/functions/sort").await;
    assert_eq!(
        described["versions"][0]["manifest"]["memory_limit"],
        32 << 20
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_429_while_admitted_calls_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(TestNode::start(config(dir.path())).await);
    assert_eq!(
        node.deploy("mb", "mandelbrot", &[("max_concurrency", "2")])
            .await
            .status(),
        StatusCode::CREATED
    );
    let args = "size=700 iterations=600";
    let expected = workloads::run("mandelbrot", args).unwrap();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                let r = node.invoke("mb", args).await;
                let retry_after = r.headers().get("retry-after").is_some();
                (r.status(), retry_after, r.text().await.unwrap())
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        let (status, retry_after, body) = call.await.unwrap();
        match status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(body, expected);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(retry_after, "a 429 carries Retry-After");
                assert!(body.contains("function-busy"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 2 && refused >= 1, "ok {ok}, refused {refused}");
    assert!(
        node.metrics()
            .await
            .contains("limes_rejected_total{reason=\"function_busy\"}")
    );
}

#[tokio::test]
async fn bad_input_gets_413_400_and_404() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig {
        body_limit: 1 << 20,
        ..config(dir.path())
    })
    .await;
    let client = Client::new();

    let huge = client
        .put(node.at("/v1/functions/big"))
        .body(vec![0u8; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let bad_name = node.deploy("Bad.Name", "echo", &[]).await;
    assert_eq!(bad_name.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(bad_name).await, "invalid-name");

    let not_wasm = client
        .put(node.at("/v1/functions/junk"))
        .body("#!/bin/sh")
        .send()
        .await
        .unwrap();
    assert_eq!(not_wasm.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(not_wasm).await, "not-wasm");

    let bad_manifest = node.deploy("echo", "echo", &[("memory", "lots")]).await;
    assert_eq!(bad_manifest.status(), StatusCode::BAD_REQUEST);

    let unknown = node.invoke("nobody", "x").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_kind(unknown).await, "not-found");

    // The node still serves after all of that.
    assert_eq!(
        node.deploy("echo", "echo", &[]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        node.invoke("echo", "alive").await.text().await.unwrap(),
        "alive"
    );
    node.stop().await;
}

#[tokio::test]
async fn function_failures_map_to_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    node.deploy("boom", "panic", &[]).await;
    let trap = node.invoke("boom", "x").await;
    assert_eq!(trap.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = trap.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "trap");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("guest panicked on purpose")
    );

    node.deploy("spin", "infinite-loop", &[("timeout", "100ms")])
        .await;
    let timeout = node.invoke("spin", "").await;
    assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_kind(timeout).await, "timeout");

    node.deploy("hog", "memory-hog", &[("memory", "16MiB")])
        .await;
    assert_eq!(
        error_kind(node.invoke("hog", "64").await).await,
        "memory-limit"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_wasi_http_function_answers_with_headers_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let deployed: Value = node
        .deploy("hello", "http-hello", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deployed["kind"], "http");

    let response = reqwest::get(node.at("/fn/hello/some/path?x=1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-limes-example"], "hello");
    assert_eq!(
        response.text().await.unwrap(),
        "hello from wasi:http: GET /some/path?x=1\n"
    );

    let posted = Client::new()
        .post(node.at("/fn/hello/"))
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.text().await.unwrap(),
        "hello from wasi:http: POST / (5 bytes)\n"
    );

    // An HTTP function is not invoked through /invoke, and a run function not through /fn.
    assert_eq!(
        error_kind(node.invoke("hello", "").await).await,
        "wrong-kind"
    );
    node.stop().await;
}

#[tokio::test]
async fn multipart_deploy_takes_a_json_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let form = reqwest::multipart::Form::new()
        .part("component", reqwest::multipart::Part::bytes(guest("echo")))
        .text(
            "manifest",
            r#"{"memory": "16MiB", "timeout": "2s", "env": {"A": "1"}}"#,
        );
    let response = Client::new()
        .put(node.at("/v1/functions/m"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let described: Value = node.json("/v1/functions/m").await;
    let manifest = &described["versions"][0]["manifest"];
    assert_eq!(
        (
            manifest["memory_limit"].as_u64(),
            manifest["timeout_ms"].as_u64()
        ),
        (Some(16 << 20), Some(2000))
    );
    node.stop().await;
}

#[tokio::test]
async fn metrics_move_with_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    node.deploy("echo", "echo", &[]).await;
    let line = "limes_invocations_total{function=\"echo\",outcome=\"ok\"}";
    assert!(!node.metrics().await.contains(line));
    for _ in 0..3 {
        node.invoke("echo", "x").await;
    }
    let metrics = node.metrics().await;
    assert!(metrics.contains(&format!("{line} 3\n")), "{metrics}");
    assert!(
        metrics.contains("limes_cold_start_seconds_count{function=\"echo\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("limes_compiles_total 1\n"), "{metrics}");
    assert!(metrics.contains("limes_in_flight 0\n"), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn stats_count_invocations_and_the_dashboard_is_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    node.deploy("echo", "echo", &[]).await;
    node.deploy("trap", "panic", &[]).await;
    for _ in 0..3 {
        node.invoke("echo", "x").await;
    }
    node.invoke("trap", "").await;
    let stats = node.json("/v1/stats").await;
    assert_eq!(stats["node"], "local");
    assert_eq!(stats["capacity"], 64);
    let functions = stats["functions"].as_array().unwrap();
    let echo = functions.iter().find(|f| f["name"] == "echo").unwrap();
    assert_eq!(
        (echo["invocations"].as_u64(), echo["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(
        echo["cold_start_us"]["p50"].as_u64().unwrap() >= 1,
        "{echo}"
    );
    assert!(echo["execution_us"]["p99"].as_u64().unwrap() >= 1, "{echo}");
    let trap = functions.iter().find(|f| f["name"] == "trap").unwrap();
    assert_eq!(trap["errors"], 1);
    // A removed function leaves the figures with it.
    Client::new()
        .delete(node.at("/v1/functions/trap"))
        .send()
        .await
        .unwrap();
    let stats = node.json("/v1/stats").await;
    assert!(
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "trap")
    );

    let page = reqwest::get(node.at("/ui")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<script src=\"/ui/dashboard.js\"")
    );
    for (asset, kind) in [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ] {
        let r = reqwest::get(node.at(&format!("/ui/{asset}")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let missing = reqwest::get(node.at("/ui/secrets.txt")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let doc: Value = node.json("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    let client = Client::new();
    for (method, path, need) in limes_node::ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        // Each operation states what it needs: no security, or the bearer scheme and roles.
        if *need == limes_node::Need::Nothing {
            assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
        } else {
            assert_eq!(
                op["security"][0]["bearer"],
                serde_json::json!([]),
                "{method} {path}"
            );
            let roles: Vec<&str> = need.roles().iter().map(|r| r.as_str()).collect();
            assert_eq!(
                op["x-limes-roles"],
                serde_json::json!(roles),
                "{method} {path}"
            );
        }
        let concrete = path
            .replace("{name}", "nobody")
            .replace("{path}", "x")
            .replace("{asset}", "dashboard.js");
        let request = client.request(method.to_uppercase().parse().unwrap(), node.at(&concrete));
        let response = request.send().await.unwrap();
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if response.status() == StatusCode::NOT_FOUND {
            assert_ne!(
                error_kind(response).await,
                "no-route",
                "{method} {path} is not routed"
            );
        }
    }
    let unrouted = reqwest::get(node.at("/v2/nothing")).await.unwrap();
    assert_eq!(error_kind(unrouted).await, "no-route");
    node.stop().await;
}
