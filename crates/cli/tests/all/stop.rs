//! A node always stops: within its shutdown grace (plus the bounded goodbye to the cluster)
//! even when NATS went away first, and at once on a second signal.

use std::time::Duration;

use crate::common::*;

#[test]
fn clustered_nodes_stop_within_the_grace_when_nats_is_gone_first() {
    if limes_cluster::server::binary().is_none() {
        assert!(
            std::env::var_os("LIMES_REQUIRE_NATS").is_none(),
            "nats-server is required (LIMES_REQUIRE_NATS) but not installed"
        );
        eprintln!("SKIPPED clustered_nodes_stop_…: nats-server not installed");
        return;
    }
    let mut nats = limes_cluster::server::NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let grace = Duration::from_secs(1);
    let mut nodes: Vec<Served> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Served::start(
                &data.path().join(id),
                &log,
                "http",
                &[
                    "--cluster",
                    &nats.url(),
                    "--node-id",
                    id,
                    "--location",
                    &format!("{i},0"),
                    "--shutdown-grace",
                    "1s",
                ],
            )
        })
        .collect();
    // Joined: both heartbeat before NATS goes.
    std::thread::sleep(Duration::from_millis(1500));
    nats.kill();
    std::thread::sleep(Duration::from_millis(500));
    for node in &nodes {
        node.send(libc::SIGTERM);
    }
    for node in &mut nodes {
        let exited = node.exits_within(grace + Duration::from_secs(2));
        let (took, _) = exited.unwrap_or_else(|| {
            panic!(
                "a node did not stop within the grace + 2 s; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        eprintln!("a node stopped {took:?} after SIGTERM with NATS gone");
    }
}

#[test]
fn a_second_signal_exits_at_once_while_the_first_waits_for_calls() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let node_data = data.path().join("node");
    let mut served = Served::start(&node_data, &log, "http", &["--shutdown-grace", "60s"]);
    let sleep = guest("sleep");
    let deployed = client(
        &served,
        &node_data,
        &["deploy", "nap", sleep.to_str().unwrap(), "--timeout", "60s"],
    );
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    // A call that outlives the test keeps the graceful stop waiting.
    let mut call = limes()
        .args([
            "invoke",
            "nap",
            "--args",
            "30000",
            "--node",
            &served.url,
            "--node-data-dir",
        ])
        .arg(&node_data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    served.send(libc::SIGTERM);
    assert!(
        served.exits_within(Duration::from_millis(700)).is_none(),
        "the first signal waits for the call"
    );
    served.send(libc::SIGTERM);
    let (took, code) = served
        .exits_within(Duration::from_secs(1))
        .expect("the second signal exits at once");
    eprintln!("exited {took:?} after the second signal");
    assert_eq!(code, Some(130));
    let _ = call.kill();
    let _ = call.wait();
}
