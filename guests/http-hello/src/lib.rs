//! A `wasi:http/proxy` function, as `wasmtime serve` and Spin run them. It answers every request
//! with `hello from wasi:http: METHOD PATH` (and the request body's size, when it has one) and a
//! header `x-limes-example: hello`. Under `/headers` it also lists the request headers it was
//! given, one `name: value` a line: the trust tests read what a guest sees of its callers.

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Patch => "PATCH".into(),
        Method::Options => "OPTIONS".into(),
        Method::Connect => "CONNECT".into(),
        Method::Trace => "TRACE".into(),
        Method::Other(m) => m.clone(),
    }
}

/// Reads the whole request body, returning its size.
fn body_size(request: &IncomingRequest) -> usize {
    let Ok(body) = request.consume() else {
        return 0;
    };
    let Ok(stream) = body.stream() else { return 0 };
    let mut size = 0;
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        size += chunk.len();
    }
    size
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let mut text = format!(
            "hello from wasi:http: {} {path}",
            method_name(&request.method())
        );
        let size = body_size(&request);
        if size > 0 {
            text.push_str(&format!(" ({size} bytes)"));
        }
        text.push('\n');
        if path.starts_with("/headers") {
            for (name, value) in request.headers().entries() {
                text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
            }
        }

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let _ = headers.set("x-limes-example", &[b"hello".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("a new body has a stream");
        out.blocking_write_and_flush(text.as_bytes())
            .expect("writing the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(Hello);
