//! Trust on a node with tokens (the default): every route × {no token, wrong role, right
//! role}, revocation, expiry, public functions, what a manifest may be granted, signed
//! components and the audit log across a restart.

mod common;
#[path = "auth/connections.rs"]
mod connections;
#[path = "auth/review.rs"]
mod review;

use std::path::Path;

use common::{TestNode, error_kind, guest};
use limes_node::{NodeConfig, Role};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(limes_node::auth::ADMIN_TOKEN_FILE))
        .unwrap()
        .trim()
        .to_owned()
}

async fn send(
    node: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = Client::new().request(method, node.at(path)).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn create_token(node: &TestNode, admin: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(node.at("/v1/tokens"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn token_for(node: &TestNode, admin: &str, role: Role) -> String {
    let made = create_token(
        node,
        admin,
        json!({"role": role.as_str(), "name": format!("t-{}", role.as_str())}),
    )
    .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    made["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_first_start_writes_an_admin_token_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let file = dir.path().join(limes_node::auth::ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let admin = admin_token(dir.path());
    let listed: Value = send(&node, Method::GET, "/v1/tokens", Some(&admin), vec![])
        .await
        .json()
        .await
        .unwrap();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0]["name"].as_str(), tokens[0]["role"].as_str()),
        (Some("admin-local"), Some("admin"))
    );
    // The hash is not shown either.
    assert!(!listed.to_string().contains(&admin[23..]));
    assert!(tokens[0].get("hash").is_none());
    node.stop().await;
    // A restart keeps the token and makes no new one.
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    assert_eq!(admin_token(dir.path()), admin);
    assert_eq!(
        send(&node, Method::GET, "/v1/functions", Some(&admin), vec![])
            .await
            .status(),
        StatusCode::OK
    );
    node.stop().await;
}

#[tokio::test]
async fn every_route_refuses_no_token_and_wrong_roles_and_admits_right_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let admin = admin_token(dir.path());
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let token = if role == Role::Admin {
            admin.clone()
        } else {
            token_for(&node, &admin, role).await
        };
        tokens.push((role, token));
    }
    for (method, path, need) in limes_node::ROUTES {
        let concrete = path
            .replace("{name}", "nobody")
            .replace("{path}", "x")
            .replace("{asset}", "dashboard.js");
        let method: Method = method.to_uppercase().parse().unwrap();
        let what = format!("{method} {path}");
        let anonymous = send(&node, method.clone(), &concrete, None, vec![]).await;
        if *need == limes_node::Need::Nothing {
            assert!(
                anonymous.status().is_success(),
                "{what}: {}",
                anonymous.status()
            );
        } else {
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{what}");
            assert!(
                anonymous.headers().contains_key("www-authenticate"),
                "{what}"
            );
            assert_eq!(error_kind(anonymous).await, "unauthorized", "{what}");
        }
        for (role, token) in &tokens {
            let answer = send(&node, method.clone(), &concrete, Some(token), vec![]).await;
            let status = answer.status();
            if need.roles().contains(role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {role:?}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role:?}");
                let body: Value = answer.json().await.unwrap();
                assert_eq!(body["error"]["kind"], "forbidden", "{what}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains(role.as_str()) && message.contains("needs"),
                    "{what}: {message}"
                );
            }
        }
    }
    // A token that is not one, and a scheme that is not Bearer.
    let bogus = send(
        &node,
        Method::GET,
        "/v1/functions",
        Some("limes_00_11"),
        vec![],
    )
    .await;
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);
    let basic = Client::new()
        .get(node.at("/v1/functions"))
        .basic_auth("admin", Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test]
async fn a_revoked_token_fails_on_the_next_request_and_an_expired_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let admin = admin_token(dir.path());
    let invoke = token_for(&node, &admin, Role::Invoke).await;
    assert_eq!(
        send(&node, Method::GET, "/v1/functions", Some(&invoke), vec![])
            .await
            .status(),
        StatusCode::OK
    );
    // Reading a function's state is the deploy role's, not every caller's.
    assert_eq!(
        send(
            &node,
            Method::GET,
            "/v1/functions/f/kv/default/k",
            Some(&invoke),
            vec![]
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
    let revoked = send(
        &node,
        Method::DELETE,
        "/v1/tokens/t-invoke",
        Some(&admin),
        vec![],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = send(&node, Method::GET, "/v1/functions", Some(&invoke), vec![]).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let body: Value = after.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    // Names are unique, revoked or not.
    let again = create_token(&node, &admin, json!({"role": "invoke", "name": "t-invoke"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        send(
            &node,
            Method::DELETE,
            "/v1/tokens/nobody",
            Some(&admin),
            vec![]
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let bad = create_token(&node, &admin, json!({"role": "root"})).await;
    assert_eq!(error_kind(bad).await, "bad-request");

    // Expiry counts whole seconds: "2s" leaves at least one for the first call.
    let short: Value = create_token(&node, &admin, json!({"role": "invoke", "expires": "2s"}))
        .await
        .json()
        .await
        .unwrap();
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&node, Method::GET, "/v1/functions", Some(&short), vec![])
            .await
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let expired = send(&node, Method::GET, "/v1/functions", Some(&short), vec![]).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    let body: Value = expired.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    node.stop().await;
}

#[tokio::test]
async fn public_functions_need_no_token_and_others_do() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let deploy = token_for(&node, &admin_token(dir.path()), Role::Deploy).await;
    let open = send(
        &node,
        Method::PUT,
        "/v1/functions/open?public=true",
        Some(&deploy),
        guest("echo"),
    )
    .await;
    assert_eq!(open.status(), StatusCode::CREATED);
    let closed = send(
        &node,
        Method::PUT,
        "/v1/functions/closed",
        Some(&deploy),
        guest("echo"),
    )
    .await;
    assert_eq!(closed.status(), StatusCode::CREATED);
    let hello = send(
        &node,
        Method::PUT,
        "/v1/functions/hello?public=true",
        Some(&deploy),
        guest("http-hello"),
    )
    .await;
    assert_eq!(hello.status(), StatusCode::CREATED);

    let answer = send(
        &node,
        Method::POST,
        "/v1/functions/open/invoke",
        None,
        b"hi".to_vec(),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "hi");
    assert_eq!(
        send(&node, Method::GET, "/fn/hello/", None, vec![])
            .await
            .status(),
        StatusCode::OK
    );
    let refused = send(
        &node,
        Method::POST,
        "/v1/functions/closed/invoke",
        None,
        b"hi".to_vec(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // Public is about invoking only: reading and removing still need a token.
    for (method, path, expected) in [
        (Method::GET, "/v1/functions/open", StatusCode::UNAUTHORIZED),
        (
            Method::DELETE,
            "/v1/functions/open",
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/healthz", StatusCode::OK),
        (Method::GET, "/v1/openapi.json", StatusCode::OK),
        (Method::GET, "/metrics", StatusCode::UNAUTHORIZED),
        // A public function's state is not public.
        (
            Method::GET,
            "/v1/functions/open/kv/default",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            "/v1/functions/open/kv/default/k",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let status = send(&node, method.clone(), path, None, vec![])
            .await
            .status();
        assert_eq!(status, expected, "{method} {path}");
    }
    let metrics = send(&node, Method::GET, "/metrics", Some(&deploy), vec![])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("limes_requests_denied_total{reason=\"unauthorized\"}"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn manifests_get_host_dirs_and_egress_only_inside_the_nodes_grants() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.auth = limes_node::AuthMode::None;
    config.grants.files =
        limes_node::capabilities::files::Grant::new(&[allowed.path().to_owned()]).unwrap();
    config.grants.network.egress = vec!["10.1.0.0/16".parse().unwrap()];
    let node = TestNode::start(config).await;
    let refused = [
        ("dir", "/etc::/host:ro".to_owned()),
        ("dir", "/tmp::/t".to_owned()),
        ("dir", format!("{}/../::/up", allowed.path().display())),
        ("allow_connect", "10.2.0.1".to_owned()),
        ("allow_bind", "0.0.0.0/0".to_owned()),
    ];
    for (key, value) in &refused {
        let answer = node.deploy("files", "files", &[(key, value)]).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{key}={value}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "not-permitted", "{key}={value}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--allow-host-dir") || message.contains("--allow-egress"),
            "{message}"
        );
    }
    // Nothing was deployed by the refusals.
    let listed: Value = node.json("/v1/functions").await;
    assert_eq!(listed["functions"].as_array().unwrap().len(), 0);

    let inside = format!("{}::/data", allowed.path().display());
    assert_eq!(
        node.deploy("files", "files", &[("dir", &inside)])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        node.deploy("net", "net", &[("allow_connect", "10.1.2.3")])
            .await
            .status(),
        StatusCode::CREATED
    );

    // The function's own directory needs no grant, is private to it, and goes with it.
    let own = node
        .deploy("mine", "files", &[("dir", "@data::/data")])
        .await;
    assert_eq!(own.status(), StatusCode::CREATED);
    let private = dir.path().join("functions/mine");
    assert!(private.is_dir());
    let wrote = node.invoke("mine", "write /data/note hello").await;
    let status = wrote.status();
    let text = wrote.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(private.join("note").is_file(), "{text}");
    let removed = Client::new()
        .delete(node.at("/v1/functions/mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert!(!private.exists());
    node.stop().await;
}

#[tokio::test]
async fn a_node_with_trusted_keys_runs_signed_components_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = limes_node::signing::keygen(keys.path(), "release").unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let (stranger_key, _) = limes_node::signing::keygen(stranger.path(), "stranger").unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.auth = limes_node::AuthMode::None;
    config.trusted_keys = Some(limes_node::signing::TrustedKeys::load(keys.path()).unwrap());
    let node = TestNode::start(config).await;
    let echo = guest("echo");
    let deploy = |signature: Option<String>, component: Vec<u8>| {
        let mut request = Client::new()
            .put(node.at("/v1/functions/signed"))
            .body(component);
        if let Some(s) = signature {
            request = request.header("x-limes-signature", s);
        }
        request.send()
    };
    let unsigned = deploy(None, echo.clone()).await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(unsigned).await, "unsigned");
    let foreign = limes_node::signing::sign(&stranger_key, &echo).unwrap();
    assert_eq!(
        error_kind(deploy(Some(foreign), echo.clone()).await.unwrap()).await,
        "bad-signature"
    );
    // A signature of another component does not cover this one.
    let of_sort = limes_node::signing::sign(&key, &guest("sort")).unwrap();
    assert_eq!(
        error_kind(deploy(Some(of_sort), echo.clone()).await.unwrap()).await,
        "bad-signature"
    );
    assert_eq!(
        error_kind(deploy(Some("zz".into()), echo.clone()).await.unwrap()).await,
        "bad-signature"
    );

    let good = limes_node::signing::sign(&key, &echo).unwrap();
    let signed = deploy(Some(good), echo).await.unwrap();
    assert_eq!(signed.status(), StatusCode::CREATED);
    let body: Value = signed.json().await.unwrap();
    assert_eq!(body["signed_by"], "release");
    assert_eq!(
        node.invoke("signed", "ok").await.text().await.unwrap(),
        "ok"
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("limes_refused_versions_total{reason=\"bad-signature\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("limes_refused_versions_total{reason=\"unsigned\"} 1"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_audit_log_names_who_changed_what_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let admin = admin_token(dir.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    assert_eq!(
        send(
            &node,
            Method::PUT,
            "/v1/functions/f",
            Some(&deployer),
            guest("echo")
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send(
            &node,
            Method::PUT,
            "/v1/functions/f",
            Some(&deployer),
            guest("sort")
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send(
            &node,
            Method::POST,
            "/v1/functions/f/rollback?version=1",
            Some(&deployer),
            vec![]
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(
            &node,
            Method::DELETE,
            "/v1/functions/f",
            Some(&admin),
            vec![]
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(
            &node,
            Method::DELETE,
            "/v1/tokens/t-deploy",
            Some(&admin),
            vec![]
        )
        .await
        .status(),
        StatusCode::OK
    );
    // Refused and read-only requests are not changes.
    assert_eq!(
        send(&node, Method::PUT, "/v1/functions/g", None, guest("echo"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    node.stop().await;

    let node = TestNode::start(NodeConfig::new(dir.path())).await;
    let log: Value = send(&node, Method::GET, "/v1/audit", Some(&admin), vec![])
        .await
        .json()
        .await
        .unwrap();
    let entries: Vec<(String, String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["target"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        entries,
        [
            expect("admin-local", "token.create", "t-deploy"),
            expect("t-deploy", "deploy", "f"),
            expect("t-deploy", "deploy", "f"),
            expect("t-deploy", "rollback", "f"),
            expect("admin-local", "remove", "f"),
            expect("admin-local", "token.revoke", "t-deploy"),
        ]
    );
    let first = &log["entries"][1];
    assert_eq!(first["detail"]["version"], 1);
    assert!(first["request_id"].as_str().unwrap().len() >= 32, "{first}");
    node.stop().await;
}
