//! Parsers of the values operators and manifests write: sizes and durations. A leaf:
//! every other module may use it, it uses none.

use std::time::Duration;

/// Parses a size such as `64MiB`, `1GiB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("size {s:?}: {e}"))
}

/// Parses a duration such as `500ms` or `10s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("duration {s:?}: {e}"))
}
