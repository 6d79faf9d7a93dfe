//! Parsing of a workload's `key=value` arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Whether a workload touches the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inputs are generated in memory and only a checksum is returned.
    NoIo,
    /// Inputs are read from, and results written to, the directory `dir`.
    Io,
    /// Writes the deterministic inputs into `dir`, for a later `io` run.
    Prepare,
}

/// A workload's parsed arguments.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
}

impl Args {
    /// Parses space-separated `key=value` pairs. An empty string gives all defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for pair in text.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("argument {pair:?} is not of the form key=value"))?;
            values.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self { values })
    }

    /// A numeric argument, or `default` when it is absent.
    pub fn number(&self, key: &str, default: u32) -> Result<u32, String> {
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("argument {key}={v:?} is not a whole number")),
        }
    }

    /// The `mode` argument; `noio` by default.
    pub fn mode(&self) -> Result<Mode, String> {
        match self.values.get("mode").map(String::as_str) {
            None | Some("noio") => Ok(Mode::NoIo),
            Some("io") => Ok(Mode::Io),
            Some("prepare") => Ok(Mode::Prepare),
            Some(other) => Err(format!("mode={other:?}: expected noio, io or prepare")),
        }
    }

    /// The `dir` argument; `/data` by default, the conventional preopen of a Limes function.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.values.get("dir").map_or("/data", String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_defaults() {
        let a = Args::parse("size=64 mode=io").unwrap();
        assert_eq!(a.number("size", 1).unwrap(), 64);
        assert_eq!(a.number("iterations", 7).unwrap(), 7);
        assert_eq!(a.mode().unwrap(), Mode::Io);
        assert_eq!(a.dir(), PathBuf::from("/data"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(Args::parse("size").is_err());
        assert!(Args::parse("size=x").unwrap().number("size", 1).is_err());
        assert!(Args::parse("mode=fast").unwrap().mode().is_err());
    }
}
