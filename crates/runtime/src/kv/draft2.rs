//! `wasi:keyvalue@0.2.0-draft2`: the current draft, with compare-and-swap.

use wasmtime::component::Resource;

use super::{Bucket, Cas, Failure, HasKv, KvCtxView, Swap};

wasmtime::component::bindgen!({
    path: "wit/keyvalue-0.2.0-draft2",
    world: "wasi:keyvalue/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": super::Bucket,
        "wasi:keyvalue/atomics.cas": super::Cas,
    },
});

use wasi::keyvalue::{atomics, batch, store};

draft_host! {
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse> {
        spell(
            self.list(&bucket, cursor.as_deref())
                .await
                .map(|r| r.map(|(keys, cursor)| store::KeyResponse { keys, cursor })),
        )
    }
}

impl atomics::Host for KvCtxView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64> {
        spell(KvCtxView::increment(self, &bucket, &key, delta).await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<std::result::Result<(), atomics::CasError>> {
        Ok(match KvCtxView::swap(self, cas, value).await? {
            Swap::Done => Ok(()),
            Swap::Conflict(fresh) => Err(atomics::CasError::CasFailed(fresh)),
            Swap::Failed(f) => Err(atomics::CasError::StoreError(f.into())),
        })
    }
}

impl atomics::HostCas for KvCtxView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Resource<Cas>> {
        spell(self.cas_new(&bucket, key).await)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>> {
        let cas = self.table.get(&cas)?;
        Ok(Ok(cas.current.as_ref().map(|e| e.value.clone())))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
