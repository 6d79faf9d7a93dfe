//! Operating a node: its config file as the binary reads it, the systemd unit, readiness sent
//! to systemd, and logs for machines.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

#[test]
fn the_config_file_is_applied_and_print_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limes.toml");
    // The file opens the node without tokens; a flag on the command line (--listen, from
    // Served) wins over the file's address.
    std::fs::write(
        &config,
        "[listen]\nlisten = \"127.0.0.1:1\"\n\n[auth]\nauth = \"none\"\n",
    )
    .unwrap();
    let served = Served::start(
        &dir.path().join("node"),
        &dir.path().join("serve.log"),
        "http",
        &["--config", config.to_str().unwrap()],
    );
    // No token anywhere: an empty data dir for the client.
    let empty = tempfile::tempdir().unwrap();
    let listed = client(&served, empty.path(), &["ls"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));

    let printed = limes()
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--print-config",
        ])
        .args(["--nats-user", "edge", "--capacity", "7"])
        .env("LIMES_NATS_PASSWORD", "hunter2-from-env")
        .output()
        .unwrap();
    let out = text(&printed.stdout);
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    for line in [
        "listen = \"127.0.0.1:1\"",
        "auth = \"none\"",
        "capacity = 7",
        "nats_password = \"<redacted>\"",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("hunter2"), "{out}");

    std::fs::write(
        &config,
        "[listen]\nlisten = \"127.0.0.1:1\"\nmax_conections = 3\n",
    )
    .unwrap();
    let refused = limes()
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("limes.toml:3") && stderr.contains("listen.max_conections"),
        "{stderr}"
    );
}

/// The unit with `ExecStart` pointing at this build (systemd checks that the binary exists).
fn unit(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/limes.service"),
    )
    .unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/limes serve --config /etc/limes/limes.toml"));
    let path = dir.join("limes.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/limes", env!("CARGO_BIN_EXE_limes")),
    )
    .unwrap();
    path
}

#[test]
fn systemd_accepts_the_service_unit_and_rates_its_sandbox() {
    let Ok(_) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var_os("LIMES_REQUIRE_SYSTEMD").is_none(),
            "systemd-analyze is required (apt-get install systemd)"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit(dir.path());
    let verified = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let complaints = text(&verified.stderr);
    assert!(verified.status.success(), "{complaints}");
    // Warnings about the unit itself (not about the host's other units) fail the test too.
    assert!(!complaints.contains("limes.service"), "{complaints}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = text(&security.stdout) + &text(&security.stderr);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for limes.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    // systemd rates below 2.0 "OK" (10 is an unsandboxed service).
    assert!(exposure < 2.0, "exposure {exposure}:\n{report}");
}

#[test]
fn readiness_is_sent_to_systemd_once_the_node_accepts_requests() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = free_port();
    let child = limes()
        .args([
            "serve",
            "--auth",
            "none",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    };
    assert_eq!(next(), "READY=1");
    // Ready means accepting: a request right now is answered.
    let answer = http_get(port, "/healthz").0;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The watchdog is pinged at half its period while the node runs.
    assert_eq!(next(), "WATCHDOG=1");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    while next() != "STOPPING=1" {}
    child.0.wait().unwrap();
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET over a plain TCP connection: the whole response, and its `x-request-id`.
fn http_get(port: u16, path: &str) -> (String, Option<String>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::to_owned);
    (response, id)
}

#[test]
fn json_logs_are_one_object_a_line_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port;
    {
        let served = Served::start(
            &dir.path().join("node"),
            &log,
            "http",
            &["--log-format", "json", "--auth", "none"],
        );
        port = served
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let (_, id) = http_get(port, "/v1/functions");
        let id = id.expect("the node returns x-request-id");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if text.contains(&id) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {id}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let mut with_id = 0;
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
            if v["span"]["id"] == id.as_str() {
                with_id += 1;
            }
        }
        assert!(with_id > 0, "no event carries the request id {id}:\n{text}");
        assert!(text.contains("limes node listening on"), "{text}");
    }
}

#[test]
fn version_tells_the_git_revision_and_the_wasmtime_linked() {
    let out = limes().arg("--version").output().unwrap();
    let version = text(&out.stdout);
    assert!(out.status.success());
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"))
            .unwrap();
    let wasmtime = lock
        .split("name = \"wasmtime\"\nversion = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert!(
        version.contains(&format!("wasmtime {wasmtime})")),
        "{version}"
    );
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    // In a git checkout (as CI's), the revision built; outside one, `unknown`.
    let rev = if rev.status.success() {
        text(&rev.stdout).trim().to_owned()
    } else {
        "unknown".into()
    };
    assert!(version.contains(&format!("(git {rev}, ")), "{version}");
}
