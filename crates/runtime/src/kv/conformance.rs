//! What every [`KvBackend`] must do, as one suite that each backend's tests run (memory here,
//! redb in the node, NATS JetStream KV in the cluster), so that a guest sees the same store
//! whichever backend holds it.

use std::sync::Arc;

use super::{Expect, KvBackend, KvError, Quota, StoreId};

/// Quotas big enough not to matter, for the steps that are not about quotas.
const ROOMY: Quota = Quota {
    max_keys: 1_000_000,
    max_bytes: 1 << 30,
};

/// Runs the suite on `backend`, in stores of namespace `namespace` (which it drops at the end).
/// Returns the first broken promise, named.
pub async fn check(backend: Arc<dyn KvBackend>, namespace: &str) -> Result<(), String> {
    let store = StoreId::new(namespace, "suite");
    let other = StoreId::new(namespace, "other");
    let b = &*backend;
    let fail = |what: &str, e: KvError| format!("{what}: {e}");

    // Plain reads and writes.
    expect_eq(
        "get of a missing key",
        b.get(&store, "a").await.map_err(|e| fail("get", e))?,
        None,
    )?;
    let r1 = b
        .set(&store, "a", b"1".to_vec(), Expect::Any, ROOMY)
        .await
        .map_err(|e| fail("set", e))?;
    let entry = b
        .get(&store, "a")
        .await
        .map_err(|e| fail("get", e))?
        .ok_or("a set key reads as missing")?;
    expect_eq(
        "the value read back",
        entry.value.as_slice(),
        b"1".as_slice(),
    )?;
    let r2 = b
        .set(&store, "a", b"2".to_vec(), Expect::Any, ROOMY)
        .await
        .map_err(|e| fail("set", e))?;
    if r2 <= r1 {
        return Err(format!("revisions must grow at each write: {r1} then {r2}"));
    }
    expect_eq(
        "another store is separate",
        b.get(&other, "a").await.map_err(|e| fail("get", e))?,
        None,
    )?;
    b.delete(&store, "a").await.map_err(|e| fail("delete", e))?;
    b.delete(&store, "a")
        .await
        .map_err(|e| fail("delete of a missing key", e))?;
    expect_eq(
        "get after delete",
        b.get(&store, "a").await.map_err(|e| fail("get", e))?,
        None,
    )?;

    // Conditional writes.
    b.set(&store, "c", b"x".to_vec(), Expect::Absent, ROOMY)
        .await
        .map_err(|e| fail("create", e))?;
    expect_eq(
        "create of an existing key",
        b.set(&store, "c", b"y".to_vec(), Expect::Absent, ROOMY)
            .await
            .err(),
        Some(KvError::Conflict),
    )?;
    let rev = b
        .get(&store, "c")
        .await
        .map_err(|e| fail("get", e))?
        .ok_or("c is missing")?
        .revision;
    b.set(&store, "c", b"y".to_vec(), Expect::Revision(rev), ROOMY)
        .await
        .map_err(|e| fail("swap", e))?;
    expect_eq(
        "a swap with a stale revision",
        b.set(&store, "c", b"z".to_vec(), Expect::Revision(rev), ROOMY)
            .await
            .err(),
        Some(KvError::Conflict),
    )?;

    // Counters.
    expect_eq(
        "increment of a missing key",
        b.increment(&store, "n", 5, ROOMY).await,
        Ok(5),
    )?;
    expect_eq(
        "increment",
        b.increment(&store, "n", -2, ROOMY).await,
        Ok(3),
    )?;
    if !matches!(
        b.increment(&store, "c", 1, ROOMY).await,
        Err(KvError::NotAnInteger(_))
    ) {
        return Err("increment of a non-integer must fail as NotAnInteger".into());
    }
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let backend = backend.clone();
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    backend.increment(&store, "race", 1, ROOMY).await?;
                }
                Ok::<_, KvError>(())
            })
        })
        .collect();
    for writer in writers {
        writer
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| fail("concurrent increment", e))?;
    }
    let race = b
        .get(&store, "race")
        .await
        .map_err(|e| fail("get", e))?
        .ok_or("no race count")?;
    expect_eq(
        "8 writers × 25 increments",
        race.value.as_slice(),
        b"200".as_slice(),
    )?;

    // Listing, in pages.
    let listed = StoreId::new(namespace, "listed");
    for i in 0..5 {
        b.set(&listed, &format!("k{i}"), vec![], Expect::Any, ROOMY)
            .await
            .map_err(|e| fail("set", e))?;
    }
    let (first, more) = b
        .list(&listed, None, 3)
        .await
        .map_err(|e| fail("list", e))?;
    expect_eq(
        "the first page",
        (first.clone(), more),
        (vec!["k0".into(), "k1".into(), "k2".into()], true),
    )?;
    let (rest, more) = b
        .list(&listed, first.last().map(String::as_str), 3)
        .await
        .map_err(|e| fail("list", e))?;
    expect_eq(
        "the last page",
        (rest, more),
        (vec!["k3".to_string(), "k4".to_string()], false),
    )?;

    // What metrics read.
    let usage = b.usage().await.map_err(|e| fail("usage", e))?;
    let of_listed = usage
        .iter()
        .find(|u| u.store == listed)
        .ok_or("usage omits a store")?;
    expect_eq("keys of the listed store", of_listed.keys, 5)?;

    // Quotas.
    let tight = Quota {
        max_keys: 2,
        max_bytes: 1 << 30,
    };
    let small = StoreId::new(namespace, "small");
    b.set(&small, "1", vec![], Expect::Any, tight)
        .await
        .map_err(|e| fail("set", e))?;
    b.set(&small, "2", vec![], Expect::Any, tight)
        .await
        .map_err(|e| fail("set", e))?;
    b.set(&small, "2", b"again".to_vec(), Expect::Any, tight)
        .await
        .map_err(|e| fail("overwrite at the key limit", e))?;
    if !matches!(
        b.set(&small, "3", vec![], Expect::Any, tight).await,
        Err(KvError::Quota(_))
    ) {
        return Err("a third key in a store limited to 2 must fail as Quota".into());
    }
    let bytes = Quota {
        max_keys: 1000,
        max_bytes: 64,
    };
    if !matches!(
        b.set(&small, "big", vec![0; 100], Expect::Any, bytes).await,
        Err(KvError::Quota(_))
    ) {
        return Err("100 bytes in a namespace limited to 64 must fail as Quota".into());
    }

    // Removal of a namespace.
    b.drop_namespace(namespace)
        .await
        .map_err(|e| fail("drop_namespace", e))?;
    for s in [&store, &listed, &small] {
        let (keys, _) = b.list(s, None, 10).await.map_err(|e| fail("list", e))?;
        if !keys.is_empty() {
            return Err(format!(
                "store {s} still holds {keys:?} after its namespace was dropped"
            ));
        }
    }
    Ok(())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}
