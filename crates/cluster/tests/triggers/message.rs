//! Message triggers on a real nats-server: core messages spread over three nodes and none runs
//! twice; a durable message survives the death of the node running it; a failing one is
//! retried with backoff and dead-lettered with its error; bad specs are refused; an MQTT device
//! reaches a trigger through the server's MQTT listener.

use std::time::{Duration, Instant};

use futures::StreamExt;
use limes_cluster::server::NatsServer;
use limes_node::subject::Pattern;

use crate::common::{TestNode, guest, json, metrics, within};

/// A node that lets functions use `sensors.>` and `alerts.>`.
fn node(nats: &NatsServer, id: &str, x: f64) -> TestNode {
    TestNode::start_with(&nats.url(), id, x, 2, |node, _| {
        node.auth = limes_node::AuthMode::None;
        node.grants.messaging.subjects = vec![
            Pattern::parse("sensors.>").unwrap(),
            Pattern::parse("alerts.>").unwrap(),
        ];
    })
    .unwrap()
}

async fn deploy(node: &TestNode, name: &str, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .put(node.url(&format!("/v1/functions/{name}?kv=default&{query}")))
        .body(guest("kv-script"))
        .send()
        .await
        .unwrap()
}

/// Waits until every node subscribes for `function`.
async fn subscribed(nodes: &[&TestNode], function: &str) {
    for node in nodes {
        within(Duration::from_secs(10), "the subscription", || async {
            json(node, "/v1/cluster").await["triggers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|f| f == function))
        })
        .await;
    }
}

/// The value of key `key` of `function`'s store `default`, read through `node`.
async fn value(node: &TestNode, function: &str, key: &str) -> Option<String> {
    let response = reqwest::get(node.url(&format!("/v1/functions/{function}/kv/default/{key}")))
        .await
        .unwrap();
    (response.status() == 200).then_some(response.text().await.unwrap())
}

/// `node`'s count of `outcome` for `function`'s `trigger`.
async fn deliveries(node: &TestNode, function: &str, trigger: &str, outcome: &str) -> u64 {
    let wanted = format!(
        "limes_trigger_deliveries_total{{function=\"{function}\",trigger=\"{trigger}\",outcome=\"{outcome}\"}} "
    );
    metrics(node)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_messages_spread_over_three_nodes_and_none_runs_twice() {
    let Some(nats) = crate::common::nats("core_messages_spread") else {
        return;
    };
    let nodes = [
        node(&nats, "a", 0.0),
        node(&nats, "b", 1.0),
        node(&nats, "c", 5.0),
    ];
    let response = deploy(&nodes[0], "level", "on_message=sensors.*.level").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    subscribed(&[&nodes[0], &nodes[1], &nodes[2]], "level").await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    const N: usize = 60;
    for i in 0..N {
        // Each message counts itself: a message run twice would count 2.
        let script = format!("open default; inc seen-{i} 1; nap 20");
        client
            .publish(format!("sensors.ward{}.level", i % 4), script.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let acked = || async {
        let mut per_node = [0; 3];
        for (i, n) in nodes.iter().enumerate() {
            per_node[i] = deliveries(n, "level", "message", "acked").await;
        }
        per_node
    };
    within(Duration::from_secs(20), "every message run", || async {
        let per_node = acked().await;
        eprintln!("acked per node: {per_node:?}");
        per_node.iter().sum::<u64>() >= N as u64
    })
    .await;
    let per_node = acked().await;
    let mut failed = 0;
    for n in &nodes {
        failed += deliveries(n, "level", "message", "failed").await;
    }
    assert_eq!(failed, 0);
    assert_eq!(per_node.iter().sum::<u64>(), N as u64, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "the queue group spread them over every node: {per_node:?}"
    );
    for i in 0..N {
        assert_eq!(
            value(&nodes[1], "level", &format!("seen-{i}"))
                .await
                .as_deref(),
            Some("1"),
            "message {i}"
        );
    }

    // A request gets the function's answer.
    let reply = client
        .request("sensors.ward1.level", "open default; get seen-0".into())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&reply.payload), "ok;1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_durable_message_is_retried_with_backoff_then_dead_lettered() {
    let Some(nats) = crate::common::nats("a_failing_durable_message") else {
        return;
    };
    let a = node(&nats, "a", 0.0);
    let response = deploy(
        &a,
        "fragile",
        "on_message=sensors.fragile&on_message_delivery=durable&max_deliver=3&retry_backoff=200ms",
    )
    .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut dead = client.subscribe("limes.dead.fragile").await.unwrap();
    client.flush().await.unwrap();

    // Published before any node pulls: the stream made at deploy keeps it.
    let js = async_nats::jetstream::new(client.clone());
    let sent = Instant::now();
    js.publish(
        "sensors.fragile",
        "open default; inc attempts 1; fail".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(20), dead.next())
        .await
        .expect("a dead letter within 20 s")
        .unwrap();
    let took = sent.elapsed();
    let header = |h: &str| {
        letter
            .headers
            .as_ref()
            .and_then(|hs| hs.get(h))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("Limes-Attempts"), "3");
    assert_eq!(header("Limes-Subject"), "sensors.fragile");
    assert!(
        header("Limes-Run-Id").starts_with("fragile-"),
        "{}",
        header("Limes-Run-Id")
    );
    assert!(
        header("Limes-Error").contains("asked to fail"),
        "{}",
        header("Limes-Error")
    );
    assert_eq!(letter.payload, "open default; inc attempts 1; fail");
    // Two waits: 200 ms, then 400 ms.
    assert!(
        took >= Duration::from_millis(600),
        "dead-lettered after {took:?}"
    );
    assert_eq!(value(&a, "fragile", "attempts").await.as_deref(), Some("3"));
    assert_eq!(deliveries(&a, "fragile", "durable", "retried").await, 2);
    assert_eq!(
        deliveries(&a, "fragile", "durable", "dead_lettered").await,
        1
    );
    // Kept for an operator: the dead letters' stream holds it.
    let mut stream = js.get_stream("LIMES_DEAD").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_message_survives_the_death_of_the_node_running_it() {
    let Some(nats) = crate::common::nats("a_durable_message_survives") else {
        return;
    };
    let mut nodes = [
        node(&nats, "a", 0.0),
        node(&nats, "b", 1.0),
        node(&nats, "c", 5.0),
    ];
    let response = deploy(
        &nodes[0],
        "archive",
        "on_message=sensors.archive&on_message_delivery=durable&timeout=20s",
    )
    .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    subscribed(&[&nodes[0], &nodes[1], &nodes[2]], "archive").await;

    // The run counts its attempts, naps, then writes its record: an idempotent sink.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.publish(
        "sensors.archive",
        "open default; inc runs 1; nap 3000; set record-17 stored".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let running = || async {
        for (i, n) in nodes.iter().enumerate() {
            if deliveries(n, "archive", "durable", "delivered").await > 0 {
                return Some(i);
            }
        }
        None
    };
    // Its first attempt has counted itself and naps: kill the node running it.
    within(Duration::from_secs(15), "a node running it", || async {
        value(&nodes[0], "archive", "runs").await.as_deref() == Some("1")
    })
    .await;
    let victim = running().await.unwrap();
    nodes[victim].kill();
    let survivors: Vec<&TestNode> = (0..3).filter(|i| *i != victim).map(|i| &nodes[i]).collect();
    within(
        Duration::from_secs(30),
        "the run completed elsewhere",
        || async { value(survivors[0], "archive", "record-17").await.as_deref() == Some("stored") },
    )
    .await;
    let mut acked = 0;
    for n in &survivors {
        acked += deliveries(n, "archive", "durable", "acked").await;
    }
    assert_eq!(acked, 1, "acked once, by the node that ran it again");
    // At least once: the killed node's attempt and the one that completed.
    assert_eq!(
        value(survivors[0], "archive", "runs").await.as_deref(),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_triggers_are_refused_and_leave_nothing_behind() {
    let Some(nats) = crate::common::nats("bad_message_triggers") else {
        return;
    };
    let a = node(&nats, "a", 0.0);
    for (query, status, says) in [
        ("on_message=water.level", 403, "--allow-subject"),
        ("on_message=sensors..level", 400, "empty token"),
        ("on_message=limes.dead.x", 400, "Limes' own"),
        ("on_message=sensors.a&max_deliver=3", 400, "durable"),
        (
            "on_message=sensors.a&on_message_delivery=durable&dead_letter=water.dead",
            403,
            "water.dead",
        ),
    ] {
        let response = deploy(&a, "bad", query).await;
        assert_eq!(response.status(), status, "{query}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{query}: {body}");
        let gone = reqwest::get(a.url("/v1/functions/bad")).await.unwrap();
        assert_eq!(gone.status(), 404, "{query} left a function behind");
    }
    // Removing a durable function removes its consumer.
    let ok = deploy(
        &a,
        "gone",
        "on_message=sensors.gone&on_message_delivery=durable",
    )
    .await;
    assert_eq!(ok.status(), 201);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("LIMES_EVENTS").await.unwrap();
    assert!(
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("fn-gone")
            .await
            .is_ok()
    );
    let removed = reqwest::Client::new()
        .delete(a.url("/v1/functions/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    within(Duration::from_secs(5), "the consumer removed", || async {
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("fn-gone")
            .await
            .is_err()
    })
    .await;
}

/// An MQTT 3.1.1 packet: its type byte, the remaining length, then `body`.
fn mqtt_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

/// A length-prefixed MQTT string.
fn mqtt_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_devices_reach_message_triggers_through_the_servers_mqtt_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if limes_cluster::server::binary().is_none() {
        assert!(std::env::var_os("LIMES_REQUIRE_NATS").is_none());
        eprintln!("SKIPPED mqtt_devices_reach_message_triggers: nats-server not installed");
        return;
    }
    let mqtt_port = crate::common::free_port();
    let nats = NatsServer::start_with_config(&format!(
        "server_name: limes-mqtt-test\nmqtt {{ listen: \"127.0.0.1:{mqtt_port}\" }}\n"
    ))
    .unwrap();
    let a = node(&nats, "a", 0.0);
    let response = deploy(&a, "level", "on_message=sensors.*.level").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    subscribed(&[&a], "level").await;

    // A device: CONNECT (clean session), then PUBLISH at QoS 0 to sensors/ward-3/level.
    let mut device = tokio::net::TcpStream::connect(("127.0.0.1", mqtt_port))
        .await
        .unwrap();
    let mut connect = mqtt_string("MQTT");
    connect.extend([4, 0x02, 0, 60]);
    connect.extend(mqtt_string("gauge-3"));
    device
        .write_all(&mqtt_packet(0x10, &connect))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    device.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "the server accepted the device");
    let mut publish = mqtt_string("sensors/ward-3/level");
    publish.extend_from_slice(b"open default; inc mqtt 1");
    device
        .write_all(&mqtt_packet(0x30, &publish))
        .await
        .unwrap();
    device.flush().await.unwrap();

    within(
        Duration::from_secs(10),
        "the MQTT reading ran the function",
        || async { value(&a, "level", "mqtt").await.as_deref() == Some("1") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_function_gets_each_message_whole_and_publishes_inside_its_grant() {
    let Some(nats) = crate::common::nats("a_message_function_gets_each_message_whole") else {
        return;
    };
    let a = node(&nats, "a", 0.0);
    let deploy_relay = |query: &'static str| {
        let url = a.url(&format!("/v1/functions/relay?{query}"));
        async move {
            reqwest::Client::new()
                .put(url)
                .body(guest("relay"))
                .send()
                .await
                .unwrap()
        }
    };
    // Publishing outside the operator's grant is refused at deploy.
    let refused = deploy_relay("on_message=sensors.*.level&publish=secrets.>").await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("publish secrets.>"));
    let deployed = deploy_relay(
        "on_message=sensors.*.level&on_message_delivery=durable&publish=alerts.>&retry_backoff=100ms&max_deliver=2",
    )
    .await;
    assert_eq!(deployed.status(), 201, "{}", deployed.text().await.unwrap());
    subscribed(&[&a], "relay").await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut alerts = client.subscribe("alerts.level").await.unwrap();
    let mut dead = client.subscribe("limes.dead.relay").await.unwrap();
    client.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "text/plain");
    headers.insert("sensor", "gauge-3");
    let js = async_nats::jetstream::new(client.clone());
    js.publish_with_headers("sensors.ward-3.level", headers, "high water".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), alerts.next())
        .await
        .expect("the relay published within 10 s")
        .unwrap();
    assert_eq!(out.payload, "HIGH WATER");
    let h = out.headers.unwrap();
    assert_eq!(h.get("Content-Type").unwrap().as_str(), "text/plain");
    assert_eq!(h.get("from").unwrap().as_str(), "sensors.ward-3.level");

    // Publishing outside its own subjects fails the run: retried, then dead-lettered.
    js.publish("sensors.ward-4.level", "leak it".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(10), dead.next())
        .await
        .expect("a dead letter within 10 s")
        .unwrap();
    let error = letter
        .headers
        .unwrap()
        .get("Limes-Error")
        .unwrap()
        .to_string();
    assert!(error.contains("permission denied"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answers_only_an_inbox_never_the_clusters_own_subjects() {
    let Some(nats) = crate::common::nats("a_request_answers_only_an_inbox") else {
        return;
    };
    let a = node(&nats, "a", 0.0);
    let response = deploy(&a, "level", "on_message=sensors.*.level").await;
    assert_eq!(response.status(), 201);
    subscribed(&[&a], "level").await;
    // The attack: a sender on a granted subject names the token bucket as the reply subject,
    // hoping the node (which may write there) stores the function's answer as a token.
    let client = async_nats::connect(nats.url()).await.unwrap();
    client
        .publish_with_reply(
            "sensors.ward-1.level",
            "$KV.limes-tokens.evil",
            "open default; inc x 1".into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    within(Duration::from_secs(10), "the function ran", || async {
        value(&a, "level", "x").await.as_deref() == Some("1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tokens = async_nats::jetstream::new(client.clone())
        .get_key_value("limes-tokens")
        .await
        .unwrap();
    assert!(
        tokens.get("evil").await.unwrap().is_none(),
        "the node wrote the answer into the token bucket"
    );
    // A real request still gets its answer.
    let reply = client
        .request("sensors.ward-1.level", "open default; get x".into())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&reply.payload), "ok;1");
}
