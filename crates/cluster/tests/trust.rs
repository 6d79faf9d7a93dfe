//! Trust across a cluster: tokens shared and revoked everywhere, NATS users with good and wrong
//! credentials, and a node that never runs a replicated version beyond its own limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use limes_cluster::server::NatsServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn status_with(node: &TestNode, path: &str, token: &str) -> StatusCode {
    get_with(node, path, token).await.status()
}

/// A token of `role` named `name`, made on `node` with its admin token.
async fn make_token(node: &TestNode, role: &str, name: &str) -> String {
    let made: Value = Client::new()
        .post(node.url("/v1/tokens"))
        .bearer_auth(node.admin_token())
        .json(&json!({"role": role, "name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    made["token"].as_str().unwrap().to_owned()
}

fn secured(nats: &NatsServer, id: &str, x: f64) -> TestNode {
    TestNode::start_with(&nats.url(), id, x, 2, |_, _| {}).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_made_on_one_node_works_on_all_and_its_revocation_reaches_all() {
    let Some(nats) = nats("a_token_made_on_one_node_works_on_all") else {
        return;
    };
    let (a, b, c) = (
        secured(&nats, "a", 0.0),
        secured(&nats, "b", 1.0),
        secured(&nats, "c", 5.0),
    );
    let token = make_token(&a, "invoke", "field-team").await;
    for node in [&b, &c] {
        within(
            Duration::from_secs(5),
            "the token reaches every node",
            || async { status_with(node, "/v1/functions", &token).await == StatusCode::OK },
        )
        .await;
    }
    // Each node's first admin token is shared too.
    within(
        Duration::from_secs(5),
        "b's admin token works on c",
        || async { status_with(&c, "/v1/tokens", &b.admin_token()).await == StatusCode::OK },
    )
    .await;
    // A name is unique across the cluster.
    let taken = Client::new()
        .post(c.url("/v1/tokens"))
        .bearer_auth(c.admin_token())
        .json(&json!({"role": "deploy", "name": "field-team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::CONFLICT);

    let revoked = Client::new()
        .delete(c.url("/v1/tokens/field-team"))
        .bearer_auth(c.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let started = Instant::now();
    for node in [&a, &b] {
        within(
            Duration::from_secs(2),
            "the revocation reaches every node within the heartbeat horizon",
            || async {
                status_with(node, "/v1/functions", &token).await == StatusCode::UNAUTHORIZED
            },
        )
        .await;
    }
    eprintln!("revocation reached a and b in {:?}", started.elapsed());
    // Every node that applied the revocation records it, naming who made it on c.
    for node in [&a, &b] {
        let audit: Value = json_with(node, "/v1/audit", &node.admin_token()).await;
        let revoked = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "token.revoke" && e["target"] == "field-team")
            .cloned()
            .unwrap_or_else(|| panic!("no revocation in {audit}"));
        assert_eq!(revoked["actor"], "admin-c", "{revoked}");
        assert_eq!(revoked["detail"]["applied_from"], "cluster", "{revoked}");
    }
    // The node that made it records it as its own (and once: the watch does not add it again).
    let audit: Value = json_with(&c, "/v1/audit", &c.admin_token()).await;
    let revocations: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.revoke")
        .collect();
    assert_eq!(revocations.len(), 1, "{audit}");
    assert!(
        revocations[0]["detail"]["applied_from"].is_null(),
        "{audit}"
    );

    // An emergency records who declared it, in the plan every node sees and in the audit log.
    let officer = make_token(&a, "emergency", "duty-officer").await;
    within(
        Duration::from_secs(5),
        "the officer's token reaches b",
        || async { status_with(&b, "/v1/emergency", &officer).await == StatusCode::OK },
    )
    .await;
    let declared = Client::new()
        .post(b.url("/v1/emergency"))
        .bearer_auth(&officer)
        .json(&json!({"urgent": ["alert"], "max_added_ms": 3.0, "declared_by": "someone-else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::OK);
    let plan: Value = declared.json().await.unwrap();
    assert_eq!(
        plan["plan"]["declaration"]["declared_by"], "duty-officer",
        "{plan}"
    );
    let audit: Value = json_with(&b, "/v1/audit", &b.admin_token()).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["actor"].as_str(), last["action"].as_str()),
        (Some("duty-officer"), Some("emergency.declare")),
        "{last}"
    );
    // And a, which only applied the plan, records it too.
    within(
        Duration::from_secs(5),
        "a records the declaration",
        || async {
            let audit: Value = json_with(&a, "/v1/audit", &a.admin_token()).await;
            audit["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "emergency.declare" && e["actor"] == "duty-officer")
        },
    )
    .await;
    let ended = Client::new()
        .delete(c.url("/v1/emergency"))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_users_admit_good_credentials_and_refuse_wrong_ones_at_once() {
    if limes_cluster::server::binary().is_none() {
        return assert!(nats("nats_users").is_none());
    }
    let nats = NatsServer::start_with_config(
        "authorization { users = [ { user: limes, password: s3cret-pass } ] }\n",
    )
    .unwrap();
    let user = |password: &str| limes_cluster::NatsAuth::UserPassword {
        user: "limes".into(),
        password: password.into(),
    };
    let open = |node: &mut limes_node::NodeConfig| node.auth = limes_node::AuthMode::None;
    let good = TestNode::start_with(&nats.url(), "good", 0.0, 2, |node, cluster| {
        open(node);
        cluster.auth = user("s3cret-pass");
    })
    .unwrap();
    deploy(&good, "echo", "echo").await;
    within(Duration::from_secs(5), "the node is connected", || async {
        json(&good, "/v1/cluster").await["state"] == "connected"
    })
    .await;

    for (what, auth) in [
        ("a wrong password", user("guess")),
        ("no credentials", limes_cluster::NatsAuth::None),
    ] {
        let started = Instant::now();
        let refused = TestNode::start_with(&nats.url(), "bad", 1.0, 2, |node, cluster| {
            open(node);
            cluster.auth = auth;
        });
        let error = refused
            .err()
            .unwrap_or_else(|| panic!("{what}: the node started"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(
            error.to_string().contains("authorization"),
            "{what}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_never_runs_a_replicated_version_beyond_its_own_limits() {
    let Some(nats) = nats("a_node_never_runs_a_replicated_version_beyond_its_own_limits") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = limes_node::signing::keygen(keys.path(), "release").unwrap();
    let shared = tempfile::tempdir().unwrap();
    let shared_dir = shared.path().to_owned();
    // a grants a host directory and signs nothing; c grants nothing and wants signatures.
    let a = TestNode::start_with(&nats.url(), "a", 0.0, 2, |node, _| {
        node.auth = limes_node::AuthMode::None;
        node.grants.files =
            limes_node::capabilities::files::Grant::new(std::slice::from_ref(&shared_dir)).unwrap();
    })
    .unwrap();
    let c = TestNode::start_with(&nats.url(), "c", 5.0, 2, |node, _| {
        node.auth = limes_node::AuthMode::None;
        node.trusted_keys = Some(limes_node::signing::TrustedKeys::load(keys.path()).unwrap());
    })
    .unwrap();
    all_see(&[&a, &c], 2).await;

    deploy(&a, "unsigned", "echo").await;
    let answer = invoke(&c, "unsigned", "x").await;
    assert_eq!(
        (answer.status, answer.body.contains("unsigned")),
        (400, true),
        "{}",
        answer.body
    );

    let dir = format!("{}::/data", shared.path().display());
    let signature = limes_node::signing::sign(&key, &guest("files")).unwrap();
    let granted = Client::new()
        .put(a.url("/v1/functions/files"))
        .query(&[("dir", dir.as_str())])
        .header("x-limes-signature", signature.clone())
        .body(guest("files"))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let answer = invoke(&c, "files", "read /data/x").await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("not-permitted"), "{}", answer.body);

    let signed = Client::new()
        .put(a.url("/v1/functions/signed"))
        .header(
            "x-limes-signature",
            limes_node::signing::sign(&key, &guest("echo")).unwrap(),
        )
        .body(guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201);
    let answer = invoke(&c, "signed", "ok").await;
    assert_eq!(
        (answer.status, answer.body.as_str(), answer.node.as_deref()),
        (200, "ok", Some("c"))
    );
    let metrics = metrics(&c).await;
    assert!(
        metrics.contains("limes_refused_versions_total{reason=\"unsigned\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("limes_refused_versions_total{reason=\"not-permitted\"}"),
        "{metrics}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`: (cert, key, ca).
fn certificates(dir: &std::path::Path) -> (String, String, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file, ca_file) = (
        dir.join("nats.pem"),
        dir.join("nats.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (
        cert_file.display().to_string(),
        key_file.display().to_string(),
        ca_file,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_over_tls_needs_the_servers_ca() {
    if limes_cluster::server::binary().is_none() {
        return assert!(nats("nats_over_tls").is_none());
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificates(dir.path());
    let nats = NatsServer::start_with_config(&format!(
        "tls {{ cert_file: \"{cert}\", key_file: \"{key}\" }}\n"
    ))
    .unwrap();
    let open = |node: &mut limes_node::NodeConfig| node.auth = limes_node::AuthMode::None;
    let node = TestNode::start_with(&nats.url(), "tls", 0.0, 2, |node, cluster| {
        open(node);
        cluster.ca = Some(ca.clone());
    })
    .unwrap();
    within(
        Duration::from_secs(5),
        "the node is connected over TLS",
        || async { json(&node, "/v1/cluster").await["state"] == "connected" },
    )
    .await;
    deploy(&node, "echo", "echo").await;

    let untrusted = TestNode::start_with(&nats.url(), "plain", 1.0, 2, |node, _| open(node));
    let error = untrusted
        .err()
        .expect("a node that cannot verify NATS's certificate must not start");
    assert!(error.to_string().contains("TLS"), "{error}");
}

/// The review's finding: a node with trusted keys checked the signature over a version's
/// deployed component but ran the bytes its record's `preinit` named. A cluster member (anyone
/// with the NATS credentials) publishes a record of a signed function whose `preinit` names an
/// unsigned component already in the store; the node must run what it derives itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_preinit_record_on_nats_runs_nothing_unsigned() {
    let Some(nats) = nats("a_forged_preinit_record_on_nats_runs_nothing_unsigned") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = limes_node::signing::keygen(keys.path(), "release").unwrap();
    let a = TestNode::start(&nats, "a", 0.0, 2);
    let c = TestNode::start_with(&nats.url(), "c", 5.0, 2, |node, _| {
        node.auth = limes_node::AuthMode::None;
        node.trusted_keys = Some(limes_node::signing::TrustedKeys::load(keys.path()).unwrap());
    })
    .unwrap();
    all_see(&[&a, &c], 2).await;
    // Beside it, the review's finding on /healthz: without a token it told the NATS URL, every
    // member's address, load and the emergency plan. Now it says alive, and clustered.
    let health: Value = reqwest::get(c.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "clustered": true}));

    // The unsigned component the attacker wants run, put in the store by an ordinary deploy.
    deploy(&a, "plain", "echo").await;
    let signed = Client::new()
        .put(a.url("/v1/functions/map"))
        .header(
            "x-limes-signature",
            limes_node::signing::sign(&key, &guest("map-index")).unwrap(),
        )
        .body(guest("map-index"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201);
    let expected = invoke(&a, "map", "1234.5 777").await.body;

    // The forgery, written straight into the cluster's function records.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let functions = async_nats::jetstream::new(client)
        .get_key_value(limes_cluster::store::FUNCTIONS)
        .await
        .unwrap();
    let mut record: Value =
        serde_json::from_slice(&functions.get("map").await.unwrap().unwrap()).unwrap();
    let echo = sha256_hex(&guest("echo"));
    record["name"] = json!("forged");
    record["versions"][0]["preinit"] = json!(echo);
    functions
        .put("forged", serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    // c runs the signed component's own initialized form: the map's answer, not an echo.
    let answer = invoke(&c, "forged", "1234.5 777").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body, expected,
        "c ran the forged pre-initialized form"
    );
    assert_ne!(answer.body, "1234.5 777");
}

/// The SHA-256 of `bytes` in hex, as records name artifacts.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The review's finding on a cluster: a call a node had no room for was read whole (up to
/// --max-body) before it went elsewhere. A call to forward is now read only up to what one
/// forwarded message holds; past that it is refused (429) without reading the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_forward_is_read_no_further_than_a_message_holds() {
    let Some(nats) = nats("a_call_to_forward_is_read_no_further_than_a_message_holds") else {
        return;
    };
    let (a, c) = (
        TestNode::start(&nats, "a", 0.0, 2),
        TestNode::start(&nats, "c", 1.0, 2),
    );
    all_see(&[&a, &c], 2).await;
    let deployed = Client::new()
        .put(a.url("/v1/functions/slow?max_concurrency=1"))
        .body(guest("sleep"))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    // Warm c, then hold a's only slot for the function.
    assert_eq!(invoke(&c, "slow", "0").await.status, 200);
    let holder = {
        let url = a.url("/v1/functions/slow/invoke");
        tokio::spawn(async move { Client::new().post(url).body("2000").send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = invoke(&a, "slow", "1").await;
    assert_eq!(
        (small.status, small.node.as_deref()),
        (200, Some("c")),
        "{}",
        small.body
    );
    let large = invoke(&a, "slow", &"x".repeat(2 << 20)).await;
    assert_eq!(large.status, 429, "{}", large.body);
    assert!(large.body.contains("node-full"), "{}", large.body);
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
}
