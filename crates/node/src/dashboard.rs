//! The operators' dashboard at `GET /ui`: one page and its script and style, from
//! `crates/node/dashboard/`, compiled into the binary so that a node cut off from the internet
//! still serves it whole. The page holds no data; everything it shows comes from the API with
//! the token the operator types in, kept in the tab's session storage, never in a URL.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::NodeError;

/// `(name, content type, body)` of every asset besides the page.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/dashboard.css"),
    ),
];

const PAGE: &str = include_str!("../dashboard/index.html");

/// Only this node's own assets and API: no CDN, no inline script, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets change with the binary only; a stale tab refetches on reload.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /ui`.
pub async fn page() -> Response {
    respond("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/{asset}`.
pub async fn asset(Path(name): Path<String>) -> Result<Response, NodeError> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, content_type, body)| respond(content_type, body))
        .ok_or_else(|| NodeError::NotFound(format!("ui/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_asset_reaches_outside_the_node() {
        for body in std::iter::once(PAGE).chain(ASSETS.iter().map(|(_, _, b)| *b)) {
            // The SVG namespace is a name, not a place anything is fetched from.
            let body = body.replace("\"http://www.w3.org/2000/svg\"", "");
            for outside in ["http://", "https://", "//cdn", "@import"] {
                assert!(!body.contains(outside), "an asset mentions {outside:?}");
            }
        }
        assert!(PAGE.contains("/ui/dashboard.js") && PAGE.contains("/ui/dashboard.css"));
    }
}
