//! NATS subjects and subject patterns, as functions and operators write them: which are valid,
//! which a pattern covers, and which are Limes' own.
//!
//! A subject is tokens separated by dots (`sensors.ward-3.level`). A pattern may use `*` for
//! one whole token and `>` as its last token for one or more. Limes keeps `limes.` for itself
//! (forwarded calls, dead letters) and refuses the server's own (`$JS.`, `$KV.`, `_INBOX.`):
//! a function that could subscribe there could read or forge the cluster's traffic.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of subjects Limes itself uses.
pub const RESERVED_PREFIX: &str = "limes.";

/// The longest subject or pattern a function may name, in bytes: far below the server's
/// control-line limit (4 KiB), which a longer one would break the node's connection on.
pub const MAX_LEN: usize = 256;

/// The most tokens a subject or pattern may have.
pub const MAX_TOKENS: usize = 16;

/// A valid subject pattern (wildcards allowed), as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl Pattern {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("subject {text:?}: {why}"));
        if text.is_empty() {
            return bad("empty");
        }
        if text.len() > MAX_LEN {
            return bad(&format!("longer than {MAX_LEN} bytes"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("only printable ASCII, no spaces");
        }
        if text.starts_with('$') || text.starts_with("_INBOX.") {
            return bad("the server's own subjects ($…, _INBOX.…) are not for functions");
        }
        let tokens: Vec<&str> = text.split('.').collect();
        if tokens.len() > MAX_TOKENS {
            return bad(&format!("more than {MAX_TOKENS} tokens"));
        }
        for (i, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                return bad("an empty token (two dots, or a dot at an end)");
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("white space or a control character");
            }
            if *token == ">" && i + 1 != tokens.len() {
                return bad("`>` may only be the last token");
            }
            if token.len() > 1 && (token.contains('*') || token.contains('>')) {
                return bad("`*` and `>` must be whole tokens");
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it has `*` or `>`.
    pub fn is_wildcard(&self) -> bool {
        self.tokens().any(|t| t == "*" || t == ">")
    }

    /// Whether some subject it matches lies in Limes' own space ([`RESERVED_PREFIX`]).
    pub fn is_reserved(&self) -> bool {
        self.overlaps(&Pattern(format!("{RESERVED_PREFIX}>")))
    }

    fn tokens(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }

    /// Whether every subject `other` matches, this one matches too.
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut mine = self.tokens();
        let mut theirs = other.tokens();
        loop {
            match (mine.next(), theirs.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(t)) if t != ">" => {}
                (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Whether some subject matches both.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let mut a = self.tokens();
        let mut b = other.tokens();
        loop {
            match (a.next(), b.next()) {
                (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
                (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// A narrow pattern that covers both overlapping patterns, keeping their common literal
    /// tokens: `a.*.x` and `a.b.*` give `a.*.*`, `a.b.>` and `a.c.d` give `a.*.>`.
    fn widen(&self, other: &Pattern) -> Pattern {
        let a: Vec<&str> = self.tokens().collect();
        let b: Vec<&str> = other.tokens().collect();
        let mut out = Vec::new();
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if *x == ">" || *y == ">" => {
                    out.push(">");
                    break;
                }
                (Some(x), Some(y)) if x == y => out.push(x),
                (Some(_), Some(_)) => out.push("*"),
                _ => {
                    // Different lengths (only for patterns that do not overlap): from the
                    // shorter one's last token on, anything.
                    out.truncate(i.saturating_sub(1));
                    out.push(">");
                    break;
                }
            }
        }
        Pattern(out.join("."))
    }
}

/// The fewest patterns, none overlapping another, that cover all of `patterns`: what one
/// JetStream stream may capture, since a stream refuses overlapping subjects.
pub fn cover(patterns: impl IntoIterator<Item = Pattern>) -> Vec<Pattern> {
    let mut out: Vec<Pattern> = Vec::new();
    for mut p in patterns {
        // Merge `p` with every pattern it overlaps, until it overlaps none.
        while let Some(i) = out.iter().position(|q| q.overlaps(&p)) {
            let q = out.swap_remove(i);
            p = if q.covers(&p) {
                q
            } else if p.covers(&q) {
                p
            } else {
                q.widen(&p)
            };
        }
        out.push(p);
    }
    out.sort();
    out
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.0
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn bad_subjects_are_named() {
        let long = format!("sensors.{}", "x".repeat(MAX_LEN));
        let deep = vec!["a"; MAX_TOKENS + 1].join(".");
        for bad in [
            "", "a..b", "a.", "$KV.x", "_INBOX.x", "a.>.b", "a.b*", "a b", "a.\u{e9}", "a\tb",
            &long, &deep,
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} was taken");
        }
        assert!(p("limes.dead.f").is_reserved());
        assert!(p(">").is_reserved() && p("*.x").is_reserved());
        assert!(!p("sensors.*.level").is_reserved());
    }

    #[test]
    fn covering_follows_the_wildcards() {
        assert!(p("sensors.>").covers(&p("sensors.*.level")));
        assert!(p("sensors.*.level").covers(&p("sensors.a.level")));
        assert!(!p("sensors.*.level").covers(&p("sensors.>")));
        assert!(!p("sensors.*").covers(&p("sensors.a.level")));
        assert!(!p("sensors.a").covers(&p("sensors.*")));
        assert!(p("a.*.x").overlaps(&p("a.b.*")));
        assert!(!p("a.*.x").overlaps(&p("a.b.y")));
    }

    #[test]
    fn a_cover_has_no_overlaps_and_covers_everything() {
        let input = ["a.*.x", "a.b.*", "q.r", "a.b", "s.>", "s.t.u", "z.1"];
        let patterns: Vec<Pattern> = input.iter().map(|s| p(s)).collect();
        let c = cover(patterns.clone());
        for (i, x) in c.iter().enumerate() {
            for y in &c[i + 1..] {
                assert!(!x.overlaps(y), "{x} overlaps {y}");
            }
        }
        for q in &patterns {
            assert!(c.iter().any(|x| x.covers(q)), "nothing covers {q}");
        }
        assert!(c.contains(&p("q.r")) && c.contains(&p("s.>")) && c.contains(&p("z.1")));
    }
}
