//! `limes serve` and the client commands as a user runs them: tokens from the data directory,
//! tokens kept out of the logs, `--auth none` refused off loopback, HTTPS with `--cacert`, and
//! the audit log after `kill -9`.

mod common;

use common::*;

#[test]
fn tokens_work_from_the_cli_stay_out_of_logs_and_the_audit_log_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let mut served = Served::start(
        &data.path().join("node"),
        &log,
        "http",
        &["--node-id", "solo"],
    );
    let node_data = data.path().join("node");
    let admin = std::fs::read_to_string(node_data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();

    // On this machine the CLI finds the admin token in the node's data directory.
    let made = client(
        &served,
        &node_data,
        &["token", "create", "--role", "deploy", "--name", "ci"],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let ci = text(&made.stdout).trim().to_owned();
    assert!(ci.starts_with("limes_"), "{ci}");
    // Elsewhere (no data dir to read) it needs --token.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = client(&served, elsewhere.path(), &["ls"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("error: unauthorized"),
        "{}",
        text(&refused.stderr)
    );

    let echo = guest("echo");
    let deployed = client(
        &served,
        elsewhere.path(),
        &["deploy", "f", echo.to_str().unwrap(), "--token", &ci],
    );
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    let invoked = limes()
        .args(["invoke", "f", "--args", "hi", "--node", &served.url])
        .env("LIMES_TOKEN", &ci)
        .output()
        .unwrap();
    assert_eq!(
        text(&invoked.stdout).trim(),
        "hi",
        "{}",
        text(&invoked.stderr)
    );

    let listed = client(&served, &node_data, &["token", "ls"]);
    let listing = text(&listed.stdout);
    assert!(
        listing.contains("ci") && listing.contains("deploy") && listing.contains("admin-solo"),
        "{listing}"
    );
    assert!(!listing.contains(&ci[20..]), "ls never shows a secret");

    let revoked = client(&served, &node_data, &["token", "revoke", "ci"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let after = client(&served, elsewhere.path(), &["ls", "--token", &ci]);
    assert!(
        text(&after.stderr).contains("revoked"),
        "{}",
        text(&after.stderr)
    );

    // kill -9: whatever was acknowledged is in the audit log after the restart.
    served.signal(libc::SIGKILL);
    let mut served = Served::start(&node_data, &log, "http", &["--node-id", "solo"]);
    let audit = client(&served, &node_data, &["audit"]);
    let audit = text(&audit.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for line in [
        "admin-solo token.create ci",
        "ci deploy f",
        "admin-solo token.revoke ci",
    ] {
        assert!(audit.contains(line), "{line:?} missing from:\n{audit}");
    }
    served.signal(libc::SIGTERM);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("admin-token"),
        "the log says where the admin token is:\n{logged}"
    );
    assert!(
        logged.contains("request"),
        "debug logs were captured:\n{logged}"
    );
    for secret in [&admin, &ci] {
        let (_, tail) = secret.rsplit_once('_').unwrap();
        assert!(!logged.contains(tail), "a token's secret reached the log");
    }
}

#[test]
fn auth_none_is_refused_unless_the_node_listens_on_loopback() {
    let data = tempfile::tempdir().unwrap();
    let out = limes()
        .args([
            "serve",
            "--auth",
            "none",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--auth none is only allowed on a loopback address"),
        "{err}"
    );

    let log = data.path().join("serve.log");
    let served = Served::start(&data.path().join("open"), &log, "http", &["--auth", "none"]);
    let empty = tempfile::tempdir().unwrap();
    let listed = client(&served, empty.path(), &["ls"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
}

#[test]
fn https_round_trip_with_the_nodes_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file, ca_file) = (
        dir.path().join("node.pem"),
        dir.path().join("node.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let log = dir.path().join("serve.log");
    let served = Served::start(
        &dir.path().join("node"),
        &log,
        "https",
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let node_data = dir.path().join("node");
    let trusted = client(
        &served,
        &node_data,
        &["ls", "--cacert", ca_file.to_str().unwrap()],
    );
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert!(text(&trusted.stdout).contains("NAME"));
    // Without the CA the certificate is not trusted, and nothing is sent in the clear.
    let untrusted = client(&served, &node_data, &["ls"]);
    assert!(!untrusted.status.success());
    assert!(
        text(&untrusted.stderr).contains("node-unreachable"),
        "{}",
        text(&untrusted.stderr)
    );
    let plain = client_at(&served.url.replace("https", "http"), &node_data, &["ls"]);
    assert!(
        !plain.status.success(),
        "plain HTTP to a TLS node must fail"
    );
}
