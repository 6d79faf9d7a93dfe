//! `wasi:keyvalue@0.2.0-draft`: the earlier draft that wasmCloud and `wasmtime-wasi-keyvalue`
//! implement. It differs from draft2 in its cursor (an offset) and an unsigned `increment`, and
//! has no compare-and-swap.

use wasmtime::component::Resource;

use super::{Bucket, Failure, HasKv, KvCtxView};

wasmtime::component::bindgen!({
    path: "wit/keyvalue-0.2.0-draft",
    world: "wasi:keyvalue/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": super::Bucket,
    },
});

use wasi::keyvalue::{atomics, batch, store};

draft_host! {
    /// This draft's cursor counts the keys already returned; the pages before it are walked
    /// again, which draft2's key cursor avoids.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse> {
        let mut skip = cursor.unwrap_or(0);
        let mut after: Option<String> = None;
        loop {
            let (mut keys, next) = match self.list(&bucket, after.as_deref()).await? {
                Ok(page) => page,
                Err(e) => return Ok(Err(e.into())),
            };
            if skip >= keys.len() as u64 && next.is_some() {
                skip -= keys.len() as u64;
                after = next;
                continue;
            }
            let taken = keys.split_off(usize::try_from(skip).unwrap_or(usize::MAX).min(keys.len()));
            let offset = cursor.unwrap_or(0) + taken.len() as u64;
            return Ok(Ok(store::KeyResponse {
                cursor: next.map(|_| offset),
                keys: taken,
            }));
        }
    }
}

impl atomics::Host for KvCtxView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64> {
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(store::Error::Other(format!(
                "{delta} is larger than a 64-bit signed counter holds"
            ))));
        };
        Ok(
            match KvCtxView::increment(self, &bucket, &key, delta).await? {
                Ok(sum) => u64::try_from(sum).map_err(|_| {
                    store::Error::Other(format!(
                        "the counter is {sum}, below zero, which this draft cannot return"
                    ))
                }),
                Err(e) => Err(e.into()),
            },
        )
    }
}
