//! State from the command line: `limes kv` round-trips, an acknowledged write survives
//! `kill -9` of the node, and `limes rm --keep-state` keeps what `limes rm` removes.

use crate::common::*;

fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn kv_round_trips_and_acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let node_data = data.path().join("node");
    let script = guest("kv-script");
    let mut served = Served::start(&node_data, &log, "http", &[]);
    let deploy = [
        "deploy",
        "counts",
        script.to_str().unwrap(),
        "--kv",
        "default",
    ];
    ok(client(&served, &node_data, &deploy));
    let invoke = |served: &Served, args: &str| {
        ok(client(
            served,
            &node_data,
            &["invoke", "counts", "--args", args],
        ))
    };
    assert_eq!(
        invoke(&served, "open default; inc floods 1; inc floods 1").trim(),
        "ok;1;2"
    );
    ok(client(
        &served,
        &node_data,
        &["kv", "set", "counts", "default", "sensor 7", "dry"],
    ));
    assert_eq!(
        ok(client(
            &served,
            &node_data,
            &["kv", "get", "counts", "default", "sensor 7"]
        ))
        .trim(),
        "dry"
    );
    assert_eq!(
        ok(client(
            &served,
            &node_data,
            &["kv", "ls", "counts", "default"]
        )),
        "floods\nsensor 7\n"
    );
    ok(client(
        &served,
        &node_data,
        &["kv", "rm", "counts", "default", "sensor 7"],
    ));
    let gone = client(
        &served,
        &node_data,
        &["kv", "get", "counts", "default", "sensor 7"],
    );
    assert!(!gone.status.success() && text(&gone.stderr).contains("not-found"));

    // The guest's increment was acknowledged: it is on disk before the node dies.
    served.signal(libc::SIGKILL);
    let served = Served::start(&node_data, &log, "http", &[]);
    assert_eq!(invoke(&served, "open default; get floods").trim(), "ok;2");

    ok(client(
        &served,
        &node_data,
        &["rm", "counts", "--keep-state"],
    ));
    ok(client(&served, &node_data, &deploy));
    assert_eq!(invoke(&served, "open default; get floods").trim(), "ok;2");
    ok(client(&served, &node_data, &["rm", "counts"]));
    ok(client(&served, &node_data, &deploy));
    assert_eq!(
        invoke(&served, "open default; get floods").trim(),
        "ok;none"
    );
}
