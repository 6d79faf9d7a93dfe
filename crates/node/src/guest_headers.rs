//! What of a caller's request a `wasi:http` guest sees: never the caller's credentials.
//!
//! The deployer of a function is not its caller. A guest that saw every request header would
//! collect the `Authorization` of everyone who calls it (admin and invoke tokens included), their
//! cookies, and Limes' own `x-limes-*` headers. So these are removed before a request reaches a
//! guest, here or on the node a request is forwarded to (and before it travels there):
//!
//! - `Authorization`, `Proxy-Authorization` and `Cookie`, unless the manifest names them in
//!   `pass_headers` (a function that does its own authentication, say);
//! - a Limes token, always: an `Authorization: Bearer limes_…` header is removed even from a
//!   function that asked for `authorization`;
//! - every `x-limes-*` header, always: they are the node's to set.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderName, PROXY_AUTHORIZATION};

/// Credentials a function receives only when its manifest names them in `pass_headers`.
pub const CREDENTIAL_HEADERS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// Checks one `pass_headers` entry: a valid header name, and not one of Limes' own.
pub fn check_pass_header(name: &str) -> Result<String, String> {
    let parsed = HeaderName::try_from(name)
        .map_err(|_| format!("pass_headers: {name:?} is not a header name"))?;
    if parsed.as_str().starts_with("x-limes-") {
        return Err(format!(
            "pass_headers: {name:?} is one of Limes' own headers, which a function never sees"
        ));
    }
    Ok(parsed.as_str().to_owned())
}

/// Removes from `headers` what the guest may not see; `pass` are the names the function's
/// manifest opted into (lowercase, checked by [`check_pass_header`]).
pub fn strip(headers: &mut HeaderMap, pass: &[String]) {
    for name in &CREDENTIAL_HEADERS {
        if !pass.iter().any(|p| p == name.as_str()) {
            headers.remove(name);
        }
    }
    // Only what is left can still carry a Limes token.
    let limes_token = |v: &http::HeaderValue| {
        v.to_str().is_ok_and(|v| {
            v.split_once(' ').is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token.trim().starts_with("limes_")
            })
        })
    };
    if headers.get_all(AUTHORIZATION).iter().any(limes_token) {
        headers.remove(AUTHORIZATION);
    }
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-limes-"))
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn credentials_go_unless_asked_for_and_limes_tokens_always_go() {
        let mut h = headers(&[
            ("authorization", "Bearer limes_abc_def"),
            ("cookie", "session=1"),
            ("x-limes-signature", "00"),
            ("accept", "text/plain"),
        ]);
        strip(&mut h, &[]);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);

        let mut h = headers(&[("authorization", "bearer limes_x"), ("cookie", "a=b")]);
        strip(&mut h, &["authorization".into(), "cookie".into()]);
        assert!(
            h.get("authorization").is_none(),
            "a Limes token never passes"
        );
        assert_eq!(h["cookie"], "a=b");

        let mut h = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        strip(&mut h, &["authorization".into()]);
        assert_eq!(h["authorization"], "Basic dXNlcjpwdw==");
    }

    #[test]
    fn pass_headers_are_names_and_not_limes_own() {
        assert_eq!(check_pass_header("Cookie").unwrap(), "cookie");
        assert!(check_pass_header("x-limes-node").is_err());
        assert!(check_pass_header("bad header").is_err());
    }
}
