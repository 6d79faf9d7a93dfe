//! Functions written in Python and in C, end to end as a user runs them: `limes run`, then
//! `limes deploy` to a node (which shows its stages) and `limes invoke`.
//!
//! `cargo xtask guests` skips these guests where their toolchain cannot be installed (PyPI or
//! apt out of reach); their tests then say so and pass, unless `LIMES_REQUIRE_PYTHON` or
//! `LIMES_REQUIRE_C` is set, as `scripts/test` does.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The built guest, or `None` (after saying why) when it was skipped and is not required.
fn optional_guest(name: &str, required_by: &str) -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/guests/{name}.wasm"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os(required_by).is_none(),
        "{}: not built, and {required_by} is set; run `cargo xtask guests`",
        path.display()
    );
    eprintln!(
        "skipped: {} is not built (`cargo xtask guests` skips it where its toolchain cannot be installed)",
        path.display()
    );
    None
}

/// `deploy_flags`: `--progress` for a component that deploys within a moment, whose stages the
/// CLI otherwise does not show.
fn runs_locally_and_on_a_node(file: &Path, language: &str, deploy_flags: &[&str]) {
    let local = limes()
        .arg("run")
        .arg(file)
        .args(["--args", "name=Ada"])
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", text(&local.stderr));
    let answer = text(&local.stdout);
    assert!(
        answer.starts_with(&format!("hello, Ada, from {language}")),
        "{answer}"
    );

    let data = tempfile::tempdir().unwrap();
    let node_data = data.path().join("node");
    let served = Served::start(&node_data, &data.path().join("serve.log"), "http", &[]);
    let mut deploy = vec!["deploy", "hello", file.to_str().unwrap()];
    deploy.extend(deploy_flags);
    let deployed = client(&served, &node_data, &deploy);
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    assert!(text(&deployed.stdout).starts_with("deployed hello version 1"));
    // The stages, in order, as the CLI shows them.
    let progress = text(&deployed.stderr);
    let seen: Vec<&str> = progress
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        seen,
        ["upload", "validate", "compile", "store"],
        "{progress}"
    );

    let invoked = client(
        &served,
        &node_data,
        &["invoke", "hello", "--args", "name=edge"],
    );
    assert!(invoked.status.success(), "{}", text(&invoked.stderr));
    assert!(
        text(&invoked.stdout).starts_with(&format!("hello, edge, from {language}")),
        "{}",
        text(&invoked.stdout)
    );
}

#[test]
fn a_python_function_runs_locally_and_on_a_node() {
    if let Some(file) = optional_guest("python-hello", "LIMES_REQUIRE_PYTHON") {
        // Compiling 18 MB takes seconds: the stages show without asking.
        runs_locally_and_on_a_node(&file, "Python 3.", &[]);
    }
}

#[test]
fn a_c_function_runs_locally_and_on_a_node() {
    if let Some(file) = optional_guest("c-hello", "LIMES_REQUIRE_C") {
        runs_locally_and_on_a_node(&file, "C", &["--progress"]);
    }
}

/// Deploys `file` as `name` with `flags` and invokes it twice for district north.
fn tally_twice(
    served: &Served,
    node_data: &Path,
    name: &str,
    file: &Path,
    flags: &[&str],
) -> [String; 2] {
    let mut deploy = vec!["deploy", name, file.to_str().unwrap()];
    deploy.extend(flags);
    let deployed = client(served, node_data, &deploy);
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    [0, 1].map(|_| {
        let invoked = client(
            served,
            node_data,
            &["invoke", name, "--args", "district=north"],
        );
        assert!(invoked.status.success(), "{}", text(&invoked.stderr));
        text(&invoked.stdout).trim().to_owned()
    })
}

#[test]
fn python_and_c_functions_keep_state_in_their_stores() {
    let python = optional_guest("python-tally", "LIMES_REQUIRE_PYTHON");
    let c = optional_guest("c-tally", "LIMES_REQUIRE_C");
    let data = tempfile::tempdir().unwrap();
    let node_data = data.path().join("node");
    let served = Served::start(&node_data, &data.path().join("serve.log"), "http", &[]);
    for (name, file) in [("py", python), ("c", c.clone())] {
        let Some(file) = file else { continue };
        assert_eq!(
            tally_twice(&served, &node_data, name, &file, &["--kv", "default"]),
            ["north: 1 alarms", "north: 2 alarms"],
            "{name}"
        );
    }
    // Without the manifest's store the function is told, not trapped.
    if let Some(file) = c {
        let [first, _] = tally_twice(&served, &node_data, "c-nostate", &file, &[]);
        assert!(first.starts_with("cannot count: access denied"), "{first}");
    }
}
