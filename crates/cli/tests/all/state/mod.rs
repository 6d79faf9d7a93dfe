//! State and workflows from the command line: `limes kv` round-trips, an acknowledged write survives
//! `kill -9` of the node, `limes rm --keep-state` keeps what `limes rm` removes, and the flood
//! workflow deploys from its file and runs.

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

#[test]
fn the_flood_workflow_deploys_from_its_file_and_runs() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let node_data = data.path().join("node");
    let flood = guest("flood");
    let served = Served::start(&node_data, &log, "http", &[]);
    for (name, store) in [
        ("detect", None),
        ("classify", None),
        ("alert", Some("alerts")),
        ("archive", Some("archive")),
    ] {
        let env = format!("STEP={name}");
        let mut args = vec!["deploy", name, flood.to_str().unwrap(), "--env", &env];
        if let Some(store) = store {
            args.extend(["--kv", store]);
        }
        ok(client(&served, &node_data, &args));
    }
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/flood/flood.toml");
    assert_eq!(
        ok(client(&served, &node_data, &["workflow", "deploy", file])).trim(),
        "deployed workflow flood: 4 steps"
    );
    let listed = ok(client(&served, &node_data, &["workflow", "ls"]));
    assert!(
        listed.contains("flood") && listed.contains("urgent"),
        "{listed}"
    );
    let shown = ok(client(&served, &node_data, &["workflow", "show", "flood"]));
    assert!(
        shown.contains("classify [classify] → alert(alert), archive(record)"),
        "{shown}"
    );
    let ran = ok(client(
        &served,
        &node_data,
        &["workflow", "run", "flood", "ward-3 5.6", "--wait", "30s"],
    ));
    assert!(ran.contains(": succeeded"), "{ran}");
    for step in ["detect", "classify", "alert", "archive"] {
        assert!(
            ran.lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains("succeeded")),
            "{step}: {ran}"
        );
    }
    assert_eq!(
        ok(client(
            &served,
            &node_data,
            &["kv", "get", "archive", "archive", "total"]
        ))
        .trim(),
        "1"
    );
    ok(client(&served, &node_data, &["workflow", "rm", "flood"]));
    let gone = client(&served, &node_data, &["workflow", "show", "flood"]);
    assert!(!gone.status.success());
}
