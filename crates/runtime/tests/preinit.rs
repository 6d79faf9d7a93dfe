//! Pre-initialization: a function's `init` runs once and invocations start from its state.

mod common;

use common::{guest, runtime};
use limes_runtime::{Error, Policy, has_init};

#[tokio::test]
async fn an_initialized_function_answers_as_the_original_and_carries_its_state() {
    let original = std::fs::read(guest("map-index")).unwrap();
    assert!(has_init(&original));
    let policy = Policy::default();
    let snapshot = runtime().preinit(&original, &policy).await.unwrap();
    // The initialized state is carried as data: the index is megabytes.
    assert!(
        snapshot.len() > original.len() + (1 << 20),
        "{} -> {} bytes",
        original.len(),
        snapshot.len()
    );
    let before = runtime().load(&original, policy.clone()).unwrap();
    let after = runtime().load(&snapshot, policy).unwrap();
    for point in ["5000 5000", "0 0", "9999.5 12.25"] {
        let (a, b) = (
            before.invoke(point).await.unwrap(),
            after.invoke(point).await.unwrap(),
        );
        assert_eq!(a.result, b.result, "{point}");
        assert!(!a.result.starts_with("error"), "{}", a.result);
        // Printed, not asserted: timings are the benchmark's business.
        println!(
            "{point}: first call {:?} from the original, {:?} initialized",
            a.cold_start + a.execution,
            b.cold_start + b.execution
        );
    }
}

#[tokio::test]
async fn a_failing_init_is_an_error_with_the_guests_words() {
    let wasm = std::fs::read(guest("init-panics")).unwrap();
    match runtime().preinit(&wasm, &Policy::default()).await {
        Err(Error::Trap { message }) => {
            assert!(message.contains("initialization step failed"), "{message}");
            assert!(message.contains("the map data is missing"), "{message}");
        }
        other => panic!("expected a trap, got {:?}", other.map(|b| b.len())),
    }
}

#[tokio::test]
async fn a_function_without_init_has_nothing_to_preinitialize() {
    let wasm = std::fs::read(guest("echo")).unwrap();
    assert!(!has_init(&wasm));
    assert!(matches!(
        runtime().preinit(&wasm, &Policy::default()).await,
        Err(Error::MissingExport { .. })
    ));
    assert!(!has_init(b"not wasm"));
}
