//! Three nodes on one real `nats-server -js` on a loopback port, each node serving HTTP on its
//! own port and running in its own async runtime (so that killing one drops it abruptly).
//!
//! Without `nats-server` these tests print that they are skipped and return; with
//! `LIMES_REQUIRE_NATS` set (as in `scripts/test`) they fail instead.

#[path = "triggers/change.rs"]
mod change;
mod common;
#[path = "capabilities/kv.rs"]
mod kv;
#[path = "triggers/message.rs"]
mod message;
#[path = "triggers/schedule.rs"]
mod schedule;
#[path = "triggers/workflow.rs"]
mod workflow;

use std::time::{Duration, Instant};

use common::*;

/// How many calls `from` sent on to `to`, by the heartbeat that `node` last heard from `from`.
async fn forwarded(node: &TestNode, from: &str, to: &str) -> u64 {
    let status = json(node, "/v1/cluster").await;
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == from)
        .and_then(|m| m["forwarded"][to].as_u64())
        .unwrap_or(0)
}

/// Holds both of `node`'s slots for `ms` with sleeping invocations; returns when they run.
async fn fill(node: &TestNode, ms: u64) -> Vec<tokio::task::JoinHandle<Answer>> {
    let url = node.port;
    let handles = (0..2)
        .map(|_| {
            let node_url = format!("http://127.0.0.1:{url}/v1/functions/sleep/invoke");
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(node_url)
                    .body(ms.to_string())
                    .send()
                    .await
                    .unwrap();
                Answer {
                    status: response.status().as_u16(),
                    node: None,
                    forward_us: None,
                    body: response.text().await.unwrap(),
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    handles
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_on_a_invoke_on_c() {
    let Some(nats) = nats("deploy_on_a_invoke_on_c") else {
        return;
    };
    let [a, _b, c] = three(&nats);
    all_see(&[&a, &c], 3).await;
    deploy(&a, "echo", "echo").await;
    let answer = invoke(&c, "echo", "hello").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello"));
    assert_eq!(answer.node.as_deref(), Some("c"), "it ran where it arrived");
    // c lists it too, with the same version and digest.
    let record = json(&c, "/v1/functions/echo").await;
    assert_eq!(record["active"], 1);
    // A second version deployed on c is version 2 on a.
    deploy(&c, "echo", "sort").await;
    within(Duration::from_secs(5), "version 2 reaches a", || async {
        json(&a, "/v1/functions/echo").await["active"] == 2
    })
    .await;
    assert_eq!(invoke(&a, "echo", "b,a").await.body, "[a,b]");

    // A rollback and a removal on c reach a as well.
    let rolled = reqwest::Client::new()
        .post(c.url("/v1/functions/echo/rollback?version=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.status(), 200);
    within(Duration::from_secs(5), "the rollback reaches a", || async {
        invoke(&a, "echo", "b,a").await.body == "b,a"
    })
    .await;
    let removed = reqwest::Client::new()
        .delete(c.url("/v1/functions/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    within(Duration::from_secs(5), "the removal reaches a", || async {
        invoke(&a, "echo", "x").await.status == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preinitialized_version_reaches_other_nodes_as_its_own_artifact() {
    let Some(nats) = nats("a_preinitialized_version_reaches_other_nodes_as_its_own_artifact")
    else {
        return;
    };
    let [a, _b, c] = three(&nats);
    all_see(&[&a, &c], 3).await;
    deploy(&a, "map", "map-index").await;
    let on_a = invoke(&a, "map", "4321 1234").await;
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    // c never ran the initialization: it fetches the initialized component and serves it.
    let on_c = invoke(&c, "map", "4321 1234").await;
    assert_eq!((on_c.status, on_c.node.as_deref()), (200, Some("c")));
    assert_eq!(on_c.body, on_a.body);
    let record = json(&c, "/v1/functions/map").await;
    let version = &record["versions"][0];
    assert!(version["preinit"].is_string(), "{record}");
    assert_ne!(version["preinit"], version["digest"]);
    let listed = json(&c, "/v1/functions").await;
    assert_eq!(listed["functions"][0]["preinitialized"], true, "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_forwards_to_the_nearest_free_one() {
    let Some(nats) = nats("a_full_node_forwards_to_the_nearest_free_one") else {
        return;
    };
    let [a, b, c] = three(&nats);
    all_see(&[&a, &b, &c], 3).await;
    deploy(&a, "sleep", "sleep").await;
    deploy(&a, "hello", "http-hello").await;
    // Let b and c compile both before the clock matters.
    for node in [&b, &c] {
        assert_eq!(invoke(node, "sleep", "0").await.status, 200);
        let hello = reqwest::get(node.url("/fn/hello/")).await.unwrap();
        assert_eq!(hello.status(), 200);
    }

    let held = fill(&a, 3000).await;
    let answer = invoke(&a, "sleep", "1").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.node.as_deref(), Some("b"), "b is nearest to a");
    assert!(answer.forward_us.is_some(), "a forwarded response says so");
    // A wasi:http request goes the same way, its answer intact.
    let hello = reqwest::Client::new()
        .post(a.url("/fn/hello/greet?x=1"))
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    let ran_on = hello.headers().get("x-limes-node").cloned();
    assert_eq!(ran_on.unwrap(), "b");
    assert!(hello.headers().contains_key("x-limes-forward-us"));
    assert_eq!(
        hello.headers()["x-limes-example"],
        "hello",
        "response headers kept"
    );
    assert_eq!(
        hello.text().await.unwrap(),
        "hello from wasi:http: POST /greet?x=1 (4 bytes)\n",
        "method, path, query and body kept"
    );
    // a counts both in its heartbeats, for the dashboard's map.
    within(
        Duration::from_secs(3),
        "a's heartbeat counts 2 calls to b",
        || async { forwarded(&a, "a", "b").await == 2 },
    )
    .await;

    // With b full as well, the call goes on to c.
    let held_b = fill(&b, 3000).await;
    within(Duration::from_secs(3), "a forwards to c", || async {
        invoke(&a, "sleep", "1").await.node.as_deref() == Some("c")
    })
    .await;
    // c hears of the calls it ran: from a, or from b when a sent one to b before it knew b
    // was full and b passed it on.
    within(
        Duration::from_secs(3),
        "c sees the calls sent to it",
        || async { forwarded(&c, "a", "c").await + forwarded(&c, "b", "c").await >= 1 },
    )
    .await;

    // With every node full, 429.
    let held_c = fill(&c, 3000).await;
    let answer = invoke(&a, "sleep", "1").await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    for h in held.into_iter().chain(held_b).chain(held_c) {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emergency_releases_nodes_for_urgent_work_and_end_restores() {
    let Some(nats) = nats("an_emergency_releases_nodes_for_urgent_work_and_end_restores") else {
        return;
    };
    let [a, b, c] = three(&nats);
    all_see(&[&a, &b, &c], 3).await;
    deploy(&a, "regular", "echo").await;
    deploy(&a, "alert", "echo").await;

    // A bound of 3 ms (a round trip a–b is 2, b–c 8): b's regular work can go to a; c keeps
    // its own. So b is released.
    let response = reqwest::Client::new()
        .post(b.url("/v1/emergency"))
        .json(&serde_json::json!({"urgent": ["alert"], "max_added_ms": 3.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let plan: serde_json::Value = response.json().await.unwrap();
    assert_eq!(plan["plan"]["released"], serde_json::json!(["b"]), "{plan}");
    for node in [&a, &b, &c] {
        within(
            Duration::from_secs(5),
            "the plan reaches every node",
            || async { json(node, "/v1/emergency").await["active"] == true },
        )
        .await;
    }
    for _ in 0..5 {
        let regular = invoke(&b, "regular", "r").await;
        assert_eq!(regular.status, 200, "{}", regular.body);
        assert_eq!(regular.node.as_deref(), Some("a"), "regular work leaves b");
        assert!(regular.forward_us.is_some());
        let urgent = invoke(&b, "alert", "u").await;
        assert_eq!(urgent.node.as_deref(), Some("b"), "urgent work stays on b");
        assert_eq!(invoke(&c, "regular", "r").await.node.as_deref(), Some("c"));
    }
    let metrics = metrics(&b).await;
    assert!(
        metrics.contains("limes_cluster_nodes_released 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("limes_forwarded_total{reason=\"released\"} 5"),
        "{metrics}"
    );
    // `alert` was deployed regular; while the emergency names it, it runs as urgent.
    assert!(
        metrics.contains("limes_admitted_total{class=\"urgent\"} 5"),
        "{metrics}"
    );

    // Another node holding the decision lease: a declaration is refused, naming it.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let lease = js.get_key_value(limes_cluster::store::LEASE).await.unwrap();
    lease
        .create(limes_cluster::store::LEASE_KEY, "z".into())
        .await
        .unwrap();
    let refused = reqwest::Client::new()
        .delete(c.url("/v1/emergency"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("node z"));
    lease.delete(limes_cluster::store::LEASE_KEY).await.unwrap();

    let ended = reqwest::Client::new()
        .delete(c.url("/v1/emergency"))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    within(Duration::from_secs(5), "end restores b", || async {
        invoke(&b, "regular", "r").await.node.as_deref() == Some("b")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_leaves_the_view_within_3_s_and_calls_reroute() {
    let Some(nats) = nats("a_killed_node_leaves_the_view_within_3_s_and_calls_reroute") else {
        return;
    };
    let [a, mut b, c] = three(&nats);
    all_see(&[&a, &b, &c], 3).await;
    deploy(&a, "sleep", "sleep").await;
    for node in [&b, &c] {
        assert_eq!(invoke(node, "sleep", "0").await.status, 200);
    }
    // a is full; its overflow goes to b until b dies, then to c.
    let held = fill(&a, 6000).await;
    let overflow = invoke(&a, "sleep", "300").await;
    assert_eq!(overflow.node.as_deref(), Some("b"));
    let load = {
        let a_url = a.url("/v1/functions/sleep/invoke");
        tokio::spawn(async move {
            let mut landed = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(r) = reqwest::Client::new().post(&a_url).body("200").send().await {
                    let node = r
                        .headers()
                        .get("x-limes-node")
                        .map(|v| v.to_str().unwrap().to_owned());
                    landed.push((r.status().as_u16(), node));
                }
            }
            landed
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill();
    let gone = within(Duration::from_secs(3), "b leaves a's view", || async {
        !members(&a).await.contains(&"b".to_owned())
    })
    .await;
    eprintln!("b left the view {gone:?} after it was killed");
    let landed = load.await.unwrap();
    // Every call succeeded: those in flight on b when it died failed over to c.
    assert!(
        landed.iter().all(|(status, _)| *status == 200),
        "{landed:?}"
    );
    assert!(
        landed.iter().any(|(_, n)| n.as_deref() == Some("b")),
        "{landed:?}"
    );
    let last = landed.last().cloned().unwrap();
    assert_eq!(
        last,
        (200, Some("c".to_owned())),
        "calls reroute to c: {landed:?}"
    );
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_serve_without_nats_and_recover_when_it_returns() {
    let Some(mut nats) = nats("nodes_serve_without_nats_and_recover_when_it_returns") else {
        return;
    };
    let [a, b, c] = three(&nats);
    all_see(&[&a, &b, &c], 3).await;
    deploy(&a, "echo", "echo").await;
    assert_eq!(invoke(&c, "echo", "x").await.status, 200);

    nats.kill();
    within(Duration::from_secs(5), "a reports the outage", || async {
        json(&a, "/v1/cluster").await["state"] != "connected"
    })
    .await;
    // Local functions keep working; cluster writes fail with a clear 503.
    let local = invoke(&c, "echo", "still here").await;
    assert_eq!((local.status, local.body.as_str()), (200, "still here"));
    let refused = reqwest::Client::new()
        .put(a.url("/v1/functions/other"))
        .body(guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);

    nats.run().unwrap();
    all_see(&[&a, &b, &c], 3).await;
    within(Duration::from_secs(10), "deploys work again", || async {
        reqwest::Client::new()
            .put(a.url("/v1/functions/other"))
            .body(guest("echo"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 201)
    })
    .await;
    within(
        Duration::from_secs(5),
        "b runs the new function",
        || async { invoke(&b, "other", "y").await.status == 200 },
    )
    .await;
}
