//! Invocations that a limit ends: force stop, timeout, memory, fuel, stack, panic, network.

mod common;

use std::time::{Duration, Instant};

use common::{load, runtime, wat};
use limes_runtime::{CancellationToken, Error, NetworkPolicy, Policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_ends_a_loop_within_100ms_and_the_host_serves_on() {
    let spin = load("infinite-loop", Policy::default());
    let token = CancellationToken::new();
    let task = tokio::spawn({
        let (spin, token) = (spin.clone(), token.clone());
        async move { spin.invoke_with("", &token).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !task.is_finished(),
        "the loop must still be running before the stop"
    );
    let stopped = Instant::now();
    token.cancel();
    let outcome = task.await.unwrap();
    let latency = stopped.elapsed();
    assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
    assert!(
        latency < Duration::from_millis(100),
        "stopped after {latency:?}"
    );

    let echo = load("echo", Policy::default());
    assert_eq!(echo.invoke("next").await.unwrap().result, "next");
}

#[tokio::test]
async fn timeout_ends_a_loop() {
    let limit = Duration::from_millis(200);
    let spin = load(
        "infinite-loop",
        Policy {
            timeout: limit,
            ..Policy::default()
        },
    );
    let started = Instant::now();
    let outcome = spin.invoke("").await;
    assert!(
        matches!(outcome, Err(Error::Timeout { limit: l }) if l == limit),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= limit);
    assert_eq!(outcome.unwrap_err().kind(), "timeout");
}

/// A loop that calls nothing and touches no memory ends at its timeout and at a force stop.
///
/// Only the interruption probe at the loop's header can end it, so this pins the patched
/// compiler (patches/README.md): with upstream's epoch compare the probe would wait for an epoch
/// that never comes. Each call runs on a thread of its own, so that such a guest fails the test
/// instead of hanging it.
#[test]
fn a_bare_loop_stops_at_its_deadline_and_at_a_force_stop() {
    let limit = Duration::from_millis(100);
    let spin = |timeout| {
        runtime()
            .load(
                &wat("spin"),
                Policy {
                    timeout,
                    ..Policy::default()
                },
            )
            .unwrap()
    };
    let on_a_thread = |function: limes_runtime::Function, token: CancellationToken| {
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = done.send(rt.block_on(function.invoke_with("", &token)));
        });
        outcome
    };

    let started = Instant::now();
    let timed_out = on_a_thread(spin(limit), CancellationToken::new())
        .recv_timeout(Duration::from_secs(10))
        .expect("a bare loop was never stopped at its deadline");
    assert!(
        matches!(timed_out, Err(Error::Timeout { limit: l }) if l == limit),
        "{timed_out:?}"
    );
    assert!(started.elapsed() >= limit);

    let token = CancellationToken::new();
    let stopped = on_a_thread(spin(Duration::from_secs(60)), token.clone());
    std::thread::sleep(Duration::from_millis(20));
    token.cancel();
    let cancelled = stopped
        .recv_timeout(Duration::from_secs(10))
        .expect("a bare loop was never force-stopped");
    assert!(matches!(cancelled, Err(Error::Cancelled)), "{cancelled:?}");
}

#[tokio::test]
async fn memory_hog_stops_at_the_limit_and_the_next_call_works() {
    let limit = 32 << 20;
    let hog = load(
        "memory-hog",
        Policy {
            memory_limit: limit,
            ..Policy::default()
        },
    );
    match hog.invoke("256").await {
        Err(Error::MemoryLimit {
            limit: l,
            requested,
        }) => {
            assert_eq!(l, limit);
            assert!(requested > limit);
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    assert_eq!(hog.invoke("4").await.unwrap().result, "allocated 4 MiB");
}

#[tokio::test]
async fn fuel_budget_ends_a_loop() {
    let spin = load(
        "infinite-loop",
        Policy {
            fuel: Some(1_000_000),
            ..Policy::default()
        },
    );
    let outcome = spin.invoke("").await;
    assert!(
        matches!(outcome, Err(Error::FuelExhausted { budget: 1_000_000 })),
        "{outcome:?}"
    );
    // A budget that suffices lets a function finish.
    let sort = load(
        "sort",
        Policy {
            fuel: Some(10_000_000),
            ..Policy::default()
        },
    );
    assert_eq!(sort.invoke("b,a").await.unwrap().result, "[a,b]");
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow_trap() {
    let outcome = load("deep-recursion", Policy::default()).invoke("").await;
    match outcome {
        Err(Error::Trap { message }) => {
            assert!(message.contains("call stack exhausted"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panic_is_a_trap_carrying_its_message() {
    match load("panic", Policy::default()).invoke("now").await {
        Err(Error::Trap { message }) => {
            assert!(
                message.contains("guest panicked on purpose: now"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

fn allow(bind: &[&str], connect: &[&str]) -> Policy {
    let parse = |l: &[&str]| {
        l.iter()
            .map(|s| NetworkPolicy::parse_entry(s).unwrap())
            .collect()
    };
    Policy {
        network: NetworkPolicy {
            bind: parse(bind),
            connect: parse(connect),
        },
        ..Policy::default()
    }
}

#[tokio::test]
async fn bind_follows_the_allowlist() {
    for op in ["tcp-bind", "udp-bind"] {
        let allowed = load("net", allow(&["127.0.0.1"], &[]))
            .invoke(&format!("{op} 127.0.0.1:0"))
            .await;
        assert!(
            allowed.unwrap().result.starts_with("ok "),
            "{op} to an allowed IP"
        );

        let other_ip = load("net", allow(&["127.0.0.1"], &[]))
            .invoke(&format!("{op} 127.0.0.2:0"))
            .await;
        assert!(
            other_ip.unwrap().result.starts_with("denied"),
            "{op} outside the list"
        );

        let no_policy = load("net", Policy::default())
            .invoke(&format!("{op} 127.0.0.1:0"))
            .await;
        assert!(
            no_policy.unwrap().result.starts_with("denied"),
            "{op} with no network"
        );
    }
}

/// The attack: a guest allowed only to connect binds UDP on every interface and so receives
/// datagrams from any host. Every UDP bind needs the bind allowlist.
#[tokio::test]
async fn connect_only_guests_cannot_bind_udp() {
    for addr in ["0.0.0.0:0", "127.0.0.1:0"] {
        let outcome = load("net", allow(&[], &["127.0.0.0/8"]))
            .invoke(&format!("udp-bind {addr}"))
            .await
            .unwrap();
        assert!(
            outcome.result.starts_with("denied"),
            "{addr}: {}",
            outcome.result
        );
    }
    // TCP's implicit ephemeral bind for an outgoing connection stays allowed; listening is not.
    let listen = load("net", allow(&[], &["127.0.0.0/8"]))
        .invoke("tcp-bind 0.0.0.0:0")
        .await
        .unwrap();
    assert!(listen.result.starts_with("denied"), "{}", listen.result);
}

#[tokio::test]
async fn connect_follows_the_allowlist() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp-connect {}", listener.local_addr().unwrap());

    let allowed = load("net", allow(&[], &["127.0.0.0/8"]))
        .invoke(&target)
        .await
        .unwrap();
    assert_eq!(
        allowed.result,
        format!("ok {}", listener.local_addr().unwrap().port())
    );

    let elsewhere = load("net", allow(&[], &["10.0.0.0/8"]))
        .invoke(&target)
        .await
        .unwrap();
    assert!(
        elsewhere.result.starts_with("denied"),
        "{}",
        elsewhere.result
    );

    let none = load("net", Policy::default())
        .invoke(&target)
        .await
        .unwrap();
    assert!(none.result.starts_with("denied"), "{}", none.result);
}
