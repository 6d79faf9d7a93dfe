//! Invocations that succeed: results, isolation, capture of output, files, foreign guests.

mod common;
#[path = "capabilities/kv.rs"]
mod kv;
#[path = "capabilities/messaging.rs"]
mod messaging;

use common::{load, runtime, wat};
use limes_runtime::{DirMount, Policy};

#[tokio::test]
async fn sort_gives_the_original_limes_result() {
    let sort = load("sort", Policy::default());
    assert_eq!(
        sort.invoke("f,e,d,c,b,a").await.unwrap().result,
        "[a,b,c,d,e,f]"
    );
}

#[tokio::test]
async fn workloads_match_their_native_build() {
    let mandelbrot = load("mandelbrot", Policy::default());
    let args = "size=64 iterations=100";
    assert_eq!(
        mandelbrot.invoke(args).await.unwrap().result,
        workloads::run("mandelbrot", args).unwrap()
    );
    let image = load("image-processing", Policy::default());
    let args = "size=48";
    assert_eq!(
        image.invoke(args).await.unwrap().result,
        workloads::run("image-processing", args).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_are_independent() {
    let echo = load("echo", Policy::default());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let echo = echo.clone();
            tokio::spawn(async move { (i, echo.invoke(&format!("call {i}")).await) })
        })
        .collect();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        assert_eq!(outcome.unwrap().result, format!("call {i}"));
    }
}

#[tokio::test]
async fn instances_do_not_share_state() {
    // The WAT echo bump-allocates from a global: were the instance reused, the second call
    // would see the first call's allocation pointer. Both must behave as a first call.
    let f = runtime().load(&wat("echo"), Policy::default()).unwrap();
    for args in ["first", "second"] {
        assert_eq!(f.invoke(args).await.unwrap().result, args);
    }
}

#[tokio::test]
async fn a_component_not_written_in_rust_runs() {
    let f = runtime().load(&wat("echo"), Policy::default()).unwrap();
    assert_eq!(
        f.invoke("hand-written").await.unwrap().result,
        "hand-written"
    );
}

#[tokio::test]
async fn output_is_captured_and_truncated_at_the_bound() {
    let print = load(
        "print",
        Policy {
            output_limit: 100,
            ..Policy::default()
        },
    );
    let small = print.invoke("2").await.unwrap();
    assert_eq!(small.stdout.text(), "line 0\nline 1\n");
    assert!(!small.stdout.truncated);
    assert_eq!(small.stderr.text(), "to stderr\n");

    let big = print.invoke("10000").await.unwrap();
    assert_eq!(
        big.result, "printed 10000",
        "truncation must not fail the function"
    );
    assert_eq!(big.stdout.bytes.len(), 100);
    assert!(big.stdout.truncated);
}

#[tokio::test]
async fn preopened_dirs_honour_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let rw = DirMount {
        host: dir.path().into(),
        guest: "/data".into(),
        writable: true,
        anchor: None,
    };
    let files = load(
        "files",
        Policy {
            dirs: vec![rw.clone()],
            ..Policy::default()
        },
    );
    assert_eq!(
        files
            .invoke("write /data/note.txt hello")
            .await
            .unwrap()
            .result,
        "wrote 5 bytes"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("note.txt")).unwrap(),
        "hello"
    );

    let ro = DirMount {
        writable: false,
        ..rw
    };
    let files = load(
        "files",
        Policy {
            dirs: vec![ro],
            ..Policy::default()
        },
    );
    assert_eq!(
        files.invoke("read /data/note.txt").await.unwrap().result,
        "hello"
    );
    let denied = files
        .invoke("write /data/note.txt changed")
        .await
        .unwrap()
        .result;
    assert!(denied.starts_with("error:"), "{denied}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("note.txt")).unwrap(),
        "hello"
    );

    let none = load("files", Policy::default());
    assert!(
        none.invoke("read /data/note.txt")
            .await
            .unwrap()
            .result
            .starts_with("error:")
    );
}

#[tokio::test]
async fn io_mode_workloads_use_the_preopened_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = DirMount {
        host: dir.path().into(),
        guest: "/data".into(),
        writable: true,
        anchor: None,
    };
    let policy = Policy {
        dirs: vec![data],
        ..Policy::default()
    };
    let image = load("image-processing", policy.clone());
    image.invoke("mode=prepare size=40").await.unwrap();
    let io = image.invoke("mode=io size=40").await.unwrap().result;
    assert_eq!(io, image.invoke("mode=noio size=40").await.unwrap().result);
    assert!(dir.path().join("output.png").exists());

    let mandelbrot = load("mandelbrot", policy);
    mandelbrot.invoke("mode=io size=32").await.unwrap();
    let pgm = std::fs::read(dir.path().join("mandelbrot.pgm")).unwrap();
    assert!(pgm.starts_with(b"P5\n32 32\n255\n") && pgm.len() == 13 + 32 * 32);
}
