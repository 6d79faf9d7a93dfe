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

/// Links the draft's three interfaces.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> KvCtxView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, get)?;
    atomics::add_to_linker::<T, HasKv>(linker, get)?;
    batch::add_to_linker::<T, HasKv>(linker, get)
}

impl From<Failure> for store::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::AccessDenied => store::Error::AccessDenied,
            Failure::Other(text) => store::Error::Other(text),
        }
    }
}

type Result<T> = wasmtime::Result<std::result::Result<T, store::Error>>;

fn spell<T>(outcome: wasmtime::Result<std::result::Result<T, Failure>>) -> Result<T> {
    outcome.map(|r| r.map_err(Into::into))
}

impl store::Host for KvCtxView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>> {
        spell(KvCtxView::open(self, &identifier))
    }
}

impl store::HostBucket for KvCtxView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>> {
        spell(
            KvCtxView::get(self, &bucket, &key)
                .await
                .map(|r| r.map(|e| e.map(|e| e.value))),
        )
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<()> {
        spell(KvCtxView::set(self, &bucket, &key, value).await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<()> {
        spell(KvCtxView::delete(self, &bucket, &key).await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool> {
        spell(
            KvCtxView::get(self, &bucket, &key)
                .await
                .map(|r| r.map(|e| e.is_some())),
        )
    }

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

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
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

impl batch::Host for KvCtxView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>> {
        spell(KvCtxView::get_many(self, &bucket, keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        spell(KvCtxView::set_many(self, &bucket, key_values).await)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<()> {
        spell(KvCtxView::delete_many(self, &bucket, keys).await)
    }
}
