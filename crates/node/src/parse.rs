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

/// Whether `name` is a valid name of a function, a workflow or a step: 1–63 of `a-z 0-9 - _`,
/// starting with a letter or digit (see `Node`'s `validate_name`).
pub fn is_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}
