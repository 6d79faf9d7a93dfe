//! `wasi:keyvalue` as a guest sees it: every call of both drafts, the stores a manifest
//! declares and no other, and the limits as the interface's errors.

use std::sync::Arc;

use limes_runtime::kv::{KvBackend, MemoryKv, SHARED_NAMESPACE, conformance};
use limes_runtime::{KvLimits, KvPolicy, Policy, Runtime, RuntimeConfig};

use crate::common::guest;

/// A runtime on its own in-memory backend, and a policy for function `name` with `stores`.
fn setup(name: &str, stores: &[&str], shared: &[&str], limits: KvLimits) -> (Runtime, Policy) {
    let runtime =
        Runtime::with_kv(RuntimeConfig::default(), Arc::new(MemoryKv::default())).unwrap();
    let own: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
    let shared: Vec<String> = shared.iter().map(|s| s.to_string()).collect();
    let policy = Policy {
        kv: KvPolicy::new(name, &own, &shared, limits),
        ..Policy::default()
    };
    (runtime, policy)
}

async fn script(runtime: &Runtime, policy: &Policy, commands: &str) -> String {
    let f = runtime
        .load_file(guest("kv-script"), policy.clone())
        .unwrap();
    f.invoke(commands).await.unwrap().result
}

#[tokio::test]
async fn the_memory_backend_keeps_every_promise_of_the_suite() {
    conformance::check(Arc::new(MemoryKv::default()), "suite")
        .await
        .unwrap();
}

#[tokio::test]
async fn each_call_of_the_current_draft_does_what_it_says() {
    let (rt, policy) = setup("calls", &["default"], &[], KvLimits::default());
    let answer = script(
        &rt,
        &policy,
        "open default; get a; set a 1; get a; exists a; exists b; inc n 5; inc n -2; \
         setmany x=1,y=2; getmany x,y,z; delmany x,y; getmany x; del a; get a; list",
    )
    .await;
    assert_eq!(
        answer,
        "ok;none;ok;1;true;false;5;3;ok;x=1,y=2,none;ok;none;ok;none;n|"
    );
}

#[tokio::test]
async fn state_outlives_the_instance_that_wrote_it() {
    let (rt, policy) = setup("counter", &["default"], &[], KvLimits::default());
    for want in 1..=3 {
        assert_eq!(
            script(&rt, &policy, "open default; inc visits 1").await,
            format!("ok;{want}")
        );
    }
}

#[tokio::test]
async fn compare_and_swap_fails_when_the_key_changed_and_shows_the_new_value() {
    let (rt, policy) = setup("cas", &["default"], &[], KvLimits::default());
    assert_eq!(
        script(
            &rt,
            &policy,
            "open default; cas k first; get k; race k mine theirs; get k"
        )
        .await,
        "ok;ok;first;conflict:theirs;theirs"
    );
}

#[tokio::test]
async fn only_the_stores_the_manifest_declares_open() {
    let (rt, policy) = setup("private", &["default"], &["alarms"], KvLimits::default());
    assert_eq!(
        script(&rt, &policy, "open other; open default; open alarms").await,
        "err:access-denied;ok;ok"
    );
    let (rt, none) = setup("none", &[], &[], KvLimits::default());
    assert_eq!(
        script(&rt, &none, "open default").await,
        "err:access-denied"
    );
}

#[tokio::test]
async fn functions_see_their_own_stores_and_share_only_shared_ones() {
    let backend: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let rt = Runtime::with_kv(RuntimeConfig::default(), backend.clone()).unwrap();
    let policy = |name: &str| Policy {
        kv: KvPolicy::new(
            name,
            &["default".to_string()],
            &["alarms".to_string()],
            KvLimits::default(),
        ),
        ..Policy::default()
    };
    let (a, b) = (policy("a"), policy("b"));
    script(
        &rt,
        &a,
        "open default; set k from-a; open alarms; set k shared",
    )
    .await;
    assert_eq!(
        script(&rt, &b, "open default; get k; open alarms; get k").await,
        "ok;none;ok;shared"
    );
    let shared = limes_runtime::kv::StoreId::new(SHARED_NAMESPACE, "alarms");
    assert!(backend.get(&shared, "k").await.unwrap().is_some());
}

#[tokio::test]
async fn limits_are_errors_of_the_interface_not_traps() {
    let limits = KvLimits {
        max_key_bytes: 8,
        max_value_bytes: 100,
        max_keys: 2,
        max_bytes: 1 << 20,
    };
    let (rt, policy) = setup("limited", &["default"], &[], limits);
    let answer = script(
        &rt,
        &policy,
        "open default; set waytoolongkey 1; big v 101; big v 100; set k2 x; set k3 x",
    )
    .await;
    assert_eq!(
        answer,
        "ok;err:the key is 13 bytes, over this node's limit of 8;\
         err:the value is 101 bytes, over this node's limit of 100;ok;ok;\
         err:store \"default\" already holds 2 keys, the most this node allows"
    );
}

#[tokio::test]
async fn a_component_built_for_the_earlier_draft_runs() {
    let (rt, policy) = setup("old", &["default"], &[], KvLimits::default());
    let f = rt.load_file(guest("kv-draft"), policy).unwrap();
    assert_eq!(f.invoke("hits").await.unwrap().result, "1 hits");
    assert_eq!(f.invoke("hits").await.unwrap().result, "2 hits");
}
