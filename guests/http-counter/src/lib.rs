//! A `wasi:http` counter: every request adds 1 to a counter named by its path, kept in the
//! function's key-value store `default` (deploy it with `--kv default`), and answers the new
//! count. Invocations on any node of a cluster add to the same count.

use limes_guest::kv::{atomics, store};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Counter;

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let counted = store::open("default")
            .and_then(|counts| atomics::increment(&counts, &format!("hits:{path}"), 1));
        let (status, text) = match counted {
            Ok(n) => (200, format!("{n}\n")),
            Err(e) => (500, format!("cannot count: {e:?}\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("a new body has a stream");
        out.blocking_write_and_flush(text.as_bytes())
            .expect("writing the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(Counter);
