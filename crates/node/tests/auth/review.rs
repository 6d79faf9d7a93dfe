//! The findings of the second trust review, each written as the attack: what a deploy token
//! or a caller could reach through preopens, headers and the API, and what the record keeps.

use limes_node::capabilities::files::Grant;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// A node with tokens whose operator grants `granted`.
async fn granting(data: &Path, granted: &Path) -> TestNode {
    let mut config = NodeConfig::new(data);
    config.grants.files = Grant::new(&[granted.to_owned()]).unwrap();
    TestNode::start(config).await
}

/// Deploys the `files` fixture as `name` with `dir`, with `token`; the status.
async fn deploy_files(node: &TestNode, token: &str, name: &str, dir: &str) -> StatusCode {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("dir", dir)
        .finish();
    let path = format!("/v1/functions/{name}?{query}");
    send(node, Method::PUT, &path, Some(token), guest("files"))
        .await
        .status()
}

/// Invokes `name` with `args`; the status and the body.
async fn call(node: &TestNode, token: &str, name: &str, args: &str) -> (StatusCode, String) {
    let path = format!("/v1/functions/{name}/invoke");
    let answer = send(node, Method::POST, &path, Some(token), args.into()).await;
    (answer.status(), answer.text().await.unwrap())
}

/// The review's critical finding: with a deploy token only, a function with a writable granted
/// dir makes `d`; a second function preopens `granted/d`; the first swaps `d` for a relative
/// symlink climbing to `/`, and the second would read the node's admin token. Then the same
/// swap made by other means (an absolute symlink put there from outside).
#[tokio::test]
async fn a_granted_dir_swapped_for_a_symlink_leads_nowhere() {
    let data = tempfile::tempdir().unwrap();
    let granted = tempfile::tempdir().unwrap();
    let granted_path = std::fs::canonicalize(granted.path()).unwrap();
    let node = granting(data.path(), &granted_path).await;
    let admin = admin_token(data.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    let writable = format!("{}::/g", granted_path.display());
    assert_eq!(
        deploy_files(&node, &deployer, "writer", &writable).await,
        StatusCode::CREATED
    );
    let (_, made) = call(&node, &deployer, "writer", "mkdir /g/d").await;
    assert_eq!(made, "ok");
    let below = format!("{}/d::/d:ro", granted_path.display());
    assert_eq!(
        deploy_files(&node, &deployer, "reader", &below).await,
        StatusCode::CREATED
    );

    let climb = "../".repeat(32);
    for step in ["rmdir /g/d".to_owned(), format!("symlink {climb} /g/d")] {
        let (status, text) = call(&node, &deployer, "writer", &step).await;
        assert_eq!(status, StatusCode::OK, "{step}: {text}");
        assert_eq!(text, "ok", "{step}");
    }
    assert!(
        std::fs::symlink_metadata(granted_path.join("d"))
            .unwrap()
            .is_symlink()
    );
    let token_file = std::fs::canonicalize(data.path())
        .unwrap()
        .join(limes_node::auth::ADMIN_TOKEN_FILE);
    let steal = format!("read /d{}", token_file.display());
    let (status, text) = call(&node, &deployer, "reader", &steal).await;
    assert!(!text.contains(&admin), "the admin token leaked: {text}");
    assert_ne!(status, StatusCode::OK, "{text}");
    assert!(text.contains("symlink"), "the refusal says why: {text}");

    // The same swap made from outside, with an absolute link: still refused at every call.
    std::fs::remove_file(granted_path.join("d")).unwrap();
    std::os::unix::fs::symlink("/", granted_path.join("d")).unwrap();
    let (status, text) = call(&node, &deployer, "reader", &steal).await;
    assert!(!text.contains(&admin) && status != StatusCode::OK, "{text}");
    // And a deploy naming a path through a symlink is refused up front.
    let through = format!("{}/d/etc::/etc:ro", granted_path.display());
    assert_eq!(
        deploy_files(&node, &deployer, "etc", &through).await,
        StatusCode::FORBIDDEN
    );
    node.stop().await;
}

/// A grant that covers the node's data directory (or lies inside it) would hand out its tokens,
/// registry and compiled code: the node refuses to start with one.
#[tokio::test]
async fn a_grant_over_the_data_dir_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("artifacts")).unwrap();
    for grant in [root.path().to_owned(), data.clone(), data.join("artifacts")] {
        let mut config = NodeConfig::new(&data);
        config.grants.files = Grant::new(std::slice::from_ref(&grant)).unwrap();
        let refused = limes_node::Node::open(config)
            .err()
            .unwrap_or_else(|| panic!("a node granting {} started", grant.display()));
        assert!(refused.to_string().contains("data directory"), "{refused}");
    }
}

/// `@data/`, `@data/.` and `@data//` passed the grant check as the private dir but were
/// preopened relative to the node's working directory. The private dir has one spelling.
#[tokio::test]
async fn the_private_dir_has_one_spelling() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(data.path())).await;
    let admin = admin_token(data.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    for spelling in ["@data/", "@data/.", "@data//", "@data/..", "."] {
        let dir = format!("{spelling}::/data");
        let status = deploy_files(&node, &deployer, "sneaky", &dir).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{dir}");
    }
    assert_eq!(
        deploy_files(&node, &deployer, "mine", "@data::/data").await,
        StatusCode::CREATED
    );
    node.stop().await;
}

/// A data dir given through a symlink (or relatively) still serves `@data`: the private dir is
/// named below the same canonical path it is resolved beneath.
#[tokio::test]
async fn the_private_dir_works_under_a_symlinked_data_dir() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("real")).unwrap();
    std::os::unix::fs::symlink(root.path().join("real"), root.path().join("link")).unwrap();
    let data = root.path().join("link");
    let node = TestNode::start(NodeConfig::new(&data)).await;
    let admin = admin_token(&data);
    assert_eq!(
        deploy_files(&node, &admin, "mine", "@data::/data").await,
        StatusCode::CREATED
    );
    let (status, text) = call(&node, &admin, "mine", "write /data/note hi").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "wrote 2 bytes"));
    assert!(root.path().join("real/functions/mine/note").is_file());
    node.stop().await;
}

/// The node's state is its user's alone: the data dir and each private function dir 0700,
/// the registry (tokens' hashes, manifests, the audit log) and the admin token 0600.
#[tokio::test]
async fn the_nodes_files_are_private_to_its_user() {
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = TestNode::start(NodeConfig::new(data.path())).await;
    let admin = admin_token(data.path());
    assert_eq!(
        deploy_files(&node, &admin, "mine", "@data::/data").await,
        StatusCode::CREATED
    );
    node.stop().await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let d = data.path();
    for (path, expected) in [
        (d.to_owned(), 0o700),
        (d.join("functions"), 0o700),
        (d.join("functions/mine"), 0o700),
        (d.join("registry.redb"), 0o600),
        (d.join(limes_node::auth::ADMIN_TOKEN_FILE), 0o600),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}

/// `GET /fn/{name}/headers` with `token` and the headers `extra`; the status, the guest's
/// answer (which lists the headers it saw) and the response's CSP.
async fn headers_seen(
    node: &TestNode,
    name: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut request = Client::new()
        .get(node.at(&format!("/fn/{name}/headers")))
        .bearer_auth(token);
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let answer = request.send().await.unwrap();
    let csp = answer
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (answer.status(), answer.text().await.unwrap(), csp)
}

/// The review's finding: every request header reached a `wasi:http` guest, so the deployer of
/// a non-public function collected the tokens of whoever called it. Now `Authorization`,
/// `Cookie` and Limes' own headers are removed; a manifest may opt into named ones, never a
/// Limes token. And the answer is sandboxed away from the dashboard's origin.
#[tokio::test]
async fn a_wasi_http_guest_never_sees_its_callers_credentials() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(data.path())).await;
    let admin = admin_token(data.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    let deployed = send(
        &node,
        Method::PUT,
        "/v1/functions/spy",
        Some(&deployer),
        guest("http-hello"),
    )
    .await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let extra = [
        ("cookie", "session=secret-cookie"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("x-limes-signature", "abcd"),
        ("x-custom", "kept"),
    ];
    let (status, seen, csp) = headers_seen(&node, "spy", &admin, &extra).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(
        seen.contains("x-custom: kept"),
        "the guest lists headers: {seen}"
    );
    for secret in [
        admin.as_str(),
        "secret-cookie",
        "c2VjcmV0",
        "x-limes-signature",
    ] {
        assert!(!seen.contains(secret), "the guest saw {secret}: {seen}");
    }
    assert!(csp.starts_with("sandbox"), "{csp:?}");

    // Opted in: the cookie passes, a Limes token still does not.
    let opted = send(
        &node,
        Method::PUT,
        "/v1/functions/spy?pass_headers=cookie,authorization",
        Some(&deployer),
        guest("http-hello"),
    )
    .await;
    assert_eq!(opted.status(), StatusCode::CREATED);
    let (_, seen, _) = headers_seen(&node, "spy", &admin, &extra).await;
    assert!(seen.contains("cookie: session=secret-cookie"), "{seen}");
    assert!(!seen.contains(&admin), "a Limes token never passes: {seen}");
    // Limes' own headers cannot be asked for.
    let refused = send(
        &node,
        Method::PUT,
        "/v1/functions/spy?pass_headers=x-limes-node",
        Some(&deployer),
        guest("http-hello"),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    node.stop().await;
}

/// The review's finding: an invoke token read a function's `env` values, often secrets, from
/// `GET /v1/functions/{name}`. Values are write-only now: the names show, the values never.
#[tokio::test]
async fn env_values_are_write_only() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(data.path())).await;
    let admin = admin_token(data.path());
    let path = "/v1/functions/keeper?env=API_KEY%3Dhunter2-secret";
    let deployed = send(&node, Method::PUT, path, Some(&admin), guest("echo")).await;
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let invoker = token_for(&node, &admin, Role::Invoke).await;
    for token in [&invoker, &admin] {
        let described = send(
            &node,
            Method::GET,
            "/v1/functions/keeper",
            Some(token),
            vec![],
        )
        .await
        .text()
        .await
        .unwrap();
        assert!(described.contains("API_KEY"), "{described}");
        assert!(!described.contains("hunter2"), "{described}");
    }
    node.stop().await;
}

/// The review's findings on the record: the audit log stored a client-chosen `x-request-id`
/// verbatim, omitted what a deploy granted, and kept no refused attempt.
#[tokio::test]
async fn the_audit_log_keeps_the_nodes_request_id_the_grant_and_refusals() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(NodeConfig::new(data.path())).await;
    let admin = admin_token(data.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    let deploy = |path: &str, client_id: &str| {
        Client::new()
            .put(node.at(path))
            .bearer_auth(&deployer)
            .header("x-request-id", client_id)
            .body(guest("echo"))
            .send()
    };
    let refused = deploy("/v1/functions/wide?dir=/etc::/etc:ro", "forged-id-1")
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let answered_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        answered_id, "forged-id-1",
        "the node answers with its own id"
    );
    let ok = deploy(
        "/v1/functions/ok?env=TOKEN%3Ds3cret&public=true",
        "forged-id-2",
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);

    let audit: Value = send(&node, Method::GET, "/v1/audit", Some(&admin), vec![])
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let refusal = entries
        .iter()
        .find(|e| e["action"] == "deploy.refused")
        .unwrap();
    assert_eq!(refusal["request_id"], answered_id.as_str(), "{refusal}");
    assert_eq!(refusal["client_request_id"], "forged-id-1", "{refusal}");
    assert_eq!(refusal["detail"]["error"], "not-permitted", "{refusal}");
    assert_eq!(
        refusal["detail"]["manifest"]["dirs"][0], "/etc::/etc:ro",
        "{refusal}"
    );
    let deployed = entries.iter().find(|e| e["action"] == "deploy").unwrap();
    assert_ne!(deployed["request_id"], "forged-id-2");
    assert_eq!(deployed["detail"]["manifest"]["public"], true, "{deployed}");
    assert_eq!(
        deployed["detail"]["manifest"]["env"],
        json!(["TOKEN"]),
        "{deployed}"
    );
    assert!(
        !audit.to_string().contains("s3cret"),
        "no env value in the log"
    );
    node.stop().await;
}

/// A node requiring signatures runs only the pre-initialized forms it derived itself. One
/// whose record it has but whose derivation it lacks (an upgrade from before the `derived`
/// table, simulated by emptying it) derives it on first use, alone as in a cluster.
#[tokio::test]
async fn a_node_requiring_signatures_derives_what_it_has_not_yet() {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = limes_node::signing::keygen(keys.path(), "release").unwrap();
    let trusting = || {
        let mut config = NodeConfig::new(data.path());
        config.trusted_keys = Some(limes_node::signing::TrustedKeys::load(keys.path()).unwrap());
        config
    };
    let node = TestNode::start(trusting()).await;
    let admin = admin_token(data.path());
    let deployed = Client::new()
        .put(node.at("/v1/functions/map"))
        .bearer_auth(&admin)
        .header(
            "x-limes-signature",
            limes_node::signing::sign(&key, &guest("map-index")).unwrap(),
        )
        .body(guest("map-index"))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let (status, expected) = call(&node, &admin, "map", "1234.5 777").await;
    assert_eq!(status, StatusCode::OK, "{expected}");
    node.stop().await;

    {
        let db = redb::Database::create(data.path().join("registry.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(redb::TableDefinition::<&str, &str>::new("derived"))
            .unwrap();
        tx.commit().unwrap();
    }
    let node = TestNode::start(trusting()).await;
    let (status, answer) = call(&node, &admin, "map", "1234.5 777").await;
    assert_eq!((status, answer), (StatusCode::OK, expected));
    node.stop().await;
}
