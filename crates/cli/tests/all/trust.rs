//! `limes serve` and the client commands as a user runs them: tokens from the data directory,
//! tokens kept out of the logs, `--auth none` refused off loopback, HTTPS with `--cacert`, and
//! the audit log after `kill -9`.

use crate::common::*;

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
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, ca_file) = certificates(dir.path());

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
        text(&untrusted.stderr).contains("error: tls"),
        "{}",
        text(&untrusted.stderr)
    );
    let plain = client_at(&served.url.replace("https", "http"), &node_data, &["ls"]);
    assert!(
        !plain.status.success(),
        "plain HTTP to a TLS node must fail"
    );
}

/// The review's finding: the CLI sent the local admin token to whatever listened at a loopback
/// `--node` URL, even one that was not the data dir's node. A fake listener on another port
/// must see no token; the real node still gets it.
#[test]
fn the_cli_sends_the_local_admin_token_only_to_its_own_node() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let node_data = data.path().join("node");
    let served = Served::start(&node_data, &data.path().join("serve.log"), "http", &[]);
    let admin = std::fs::read_to_string(node_data.join("admin-token")).unwrap();

    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", fake.local_addr().unwrap());
    let collector = std::thread::spawn(move || {
        let (mut conn, _) = fake.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        String::from_utf8_lossy(&seen).into_owned()
    });
    let _ = client_at(&url, &node_data, &["ls"]);
    let request = collector.join().unwrap();
    assert!(request.starts_with("GET "), "{request}");
    assert!(
        !request.contains(admin.trim()),
        "the admin token went to a stranger"
    );
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "{request}"
    );

    let own = client(&served, &node_data, &["ls"]);
    assert!(own.status.success(), "{}", text(&own.stderr));
}

/// The peak resident memory of process `pid`, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// POSTs `len` bytes to `path` at `addr` over a raw connection, writing the body in 1 MiB
/// chunks until done or the node stops reading; the status line of the answer, if any.
fn post_raw(addr: &str, path: &str, len: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if conn.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut status = String::new();
    let _ = BufReader::new(conn).read_line(&mut status);
    status.trim().to_owned()
}

/// The review's finding: a public function's invoke body was read whole (up to --max-body)
/// before admission, so 16 anonymous 31 MiB posts took a node from 0.5 to 1 GiB and were only
/// then refused. Now a call is admitted first: with the function busy, the posts get 429 and
/// the node's peak memory barely moves.
#[test]
fn large_public_bodies_are_refused_before_they_are_read() {
    let data = tempfile::tempdir().unwrap();
    let node_data = data.path().join("node");
    let served = Served::start(&node_data, &data.path().join("serve.log"), "http", &[]);
    let deployed = client(
        &served,
        &node_data,
        &[
            "deploy",
            "slow",
            guest("sleep").to_str().unwrap(),
            "--public",
            "--max-concurrency",
            "1",
        ],
    );
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    let addr = served.url.trim_start_matches("http://").to_owned();
    let path = "/v1/functions/slow/invoke";
    // One small call holds the function's only slot for a while.
    let holder = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let mut conn = std::net::TcpStream::connect(&addr).unwrap();
            let body = "3000";
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            let mut status = String::new();
            BufReader::new(conn).read_line(&mut status).unwrap();
            status
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = peak_rss(served.child.id());
    let posts: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || post_raw(&addr, path, 31 << 20))
        })
        .collect();
    let answers: Vec<String> = posts.into_iter().map(|p| p.join().unwrap()).collect();
    let after = peak_rss(served.child.id());
    assert!(holder.join().unwrap().contains("200"));
    let refused = answers.iter().filter(|a| a.contains(" 429 ")).count();
    assert!(refused >= 12, "most posts are refused at once: {answers:?}");
    let grew = after.saturating_sub(before);
    eprintln!("node peak RSS {} MiB -> {} MiB", before >> 20, after >> 20);
    assert!(
        grew < 64 << 20,
        "16 refused 31 MiB posts grew the node's peak memory by {} MiB",
        grew >> 20
    );
}

/// A self-signed certificate for IP 127.0.0.1 as an operator makes one first, with openssl
/// (which marks it a CA), in `dir`: (certificate, key).
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed by scripts/test");
    assert!(made.status.success(), "{}", text(&made.stderr));
    (cert, key)
}

/// The review's usability hole: the certificate an operator makes first, `openssl req -x509 …
/// -addext subjectAltName=IP:127.0.0.1`, worked with `curl --cacert` while `limes ls --cacert`
/// refused it as `node-unreachable` (webpki's `CaUsedAsEndEntity`, only in a log line). Now it
/// is accepted as the node's own certificate, and a TLS failure says it is one, and why.
#[test]
fn the_cli_accepts_the_nodes_own_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "limes-node");
    let served = Served::start(
        &dir.path().join("node"),
        &dir.path().join("serve.log"),
        "https",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let node_data = dir.path().join("node");
    let listed = client(
        &served,
        &node_data,
        &["ls", "--cacert", cert.to_str().unwrap()],
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    // The same certificate under a name it does not carry (it names IP 127.0.0.1 only).
    let by_name = served.url.replace("127.0.0.1", "localhost");
    let misnamed = client_at(
        &by_name,
        &node_data,
        &["ls", "--cacert", cert.to_str().unwrap()],
    );
    assert!(!misnamed.status.success());
    assert!(
        text(&misnamed.stderr).contains("error: tls"),
        "{}",
        text(&misnamed.stderr)
    );

    // Another certificate is still refused, and the error says TLS.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = self_signed(other.path(), "other");
    let refused = client(
        &served,
        &node_data,
        &["ls", "--cacert", other_cert.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(
        message.contains("error: tls") && message.contains("TLS failed"),
        "{message}"
    );
}
