//! Serving `wasi:http` functions (the `wasi:http/proxy` world, as `wasmtime serve` and Spin
//! run them): one fresh instance per request, under the function's policy.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::function::{Entry, classify, explain};
use crate::output::Capture;
use crate::{Error, Function, FunctionKind, error::chain};

/// The body of a `wasi:http` function's response; it streams while the guest writes it.
pub type HttpBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The outcome of a request to an HTTP function.
pub struct HttpInvocation {
    /// The guest's response; its body may still be streaming.
    pub response: http::Response<HttpBody>,
    /// From the start of the request until the guest's handler could be entered.
    pub cold_start: Duration,
}

impl Function {
    /// Handles one HTTP request with a fresh instance of this `wasi:http` function.
    ///
    /// Returns once the guest has set its response; the guest keeps running (within its
    /// timeout) while it writes the body.
    pub async fn handle_http<B>(&self, request: http::Request<B>) -> Result<HttpInvocation, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let prepared = self.prepared();
        let Entry::Http(proxy) = &prepared.entry else {
            return Err(Error::WrongKind {
                expected: FunctionKind::Http,
                found: self.kind(),
            });
        };
        let started = Instant::now();
        let deadline = started + prepared.policy.timeout;
        let stdout = Capture::new(prepared.policy.output_limit);
        let stderr = Capture::new(prepared.policy.output_limit);
        let mut store =
            prepared.new_store(&CancellationToken::new(), deadline, &stdout, &stderr)?;

        let request = request.map(|body| {
            body.map_err(|e| {
                tracing::debug!(error = %e, "request body ended early");
                wasmtime_wasi_http::Error::ConnectionTerminated
            })
        });
        let bad_request = |e: wasmtime::Error| Error::BadRequest { message: chain(&e) };
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(bad_request)?;
        let (response_tx, response_rx) = tokio::sync::oneshot::channel();
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(response_tx)
            .map_err(bad_request)?;
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();

        // The guest runs in its own task so that it can go on writing the body after the
        // response head has been handed back.
        let proxy = proxy.clone();
        let function = self.clone();
        let task = tokio::spawn(async move {
            let work = async {
                let instance = proxy.instantiate_async(&mut store).await?;
                let _ = entered_tx.send(started.elapsed());
                instance
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            let policy = &function.prepared().policy;
            let outcome = tokio::time::timeout_at(deadline.into(), work).await;
            match outcome {
                Ok(outcome) => {
                    outcome.map_err(|e| classify(explain(e, store.data()), policy, &stderr))
                }
                Err(_) => Err(Error::Timeout {
                    limit: policy.timeout,
                }),
            }
        });

        match response_rx.await {
            Ok(Ok(response)) => Ok(HttpInvocation {
                response,
                cold_start: entered_rx.await.unwrap_or_default(),
            }),
            Ok(Err(code)) => Err(Error::Trap {
                message: format!("the function answered with an error: {code:?}"),
            }),
            // The guest dropped its response outparam: its task says why.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(Error::Trap {
                    message: "the function returned without setting a response".into(),
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Trap {
                    message: format!("the function's task failed: {e}"),
                }),
            },
        }
    }
}
