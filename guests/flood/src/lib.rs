//! The flood pipeline's steps, one component for all four: the manifest's `env=STEP=…` says
//! which step an instance is.
//!
//! - `detect`: a reading `WARD LEVEL` (metres) passes on when the level is above
//!   `THRESHOLD` (default 3.0); otherwise the run ends here (an empty answer).
//! - `classify`: names the severity and answers two named outputs, `alert` (severe readings
//!   only) and `record` (every reading): `{"alert": "…", "record": "…"}`.
//! - `alert`: counts alerts per ward in its store `alerts` and answers the alert.
//! - `archive`: counts readings per ward and severity in its store `archive`.

use limes_guest::kv::{atomics, store};

struct Flood;

fn reading(args: &str) -> Result<(String, f64), String> {
    let mut words = args.split_whitespace();
    let ward = words.next().ok_or("no ward")?.to_owned();
    let level = words
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("no level")?;
    Ok((ward, level))
}

fn severity(level: f64) -> &'static str {
    match level {
        l if l >= 5.0 => "severe",
        l if l >= 4.0 => "high",
        _ => "elevated",
    }
}

fn count(store_name: &str, key: &str) -> Result<i64, String> {
    let bucket = store::open(store_name).map_err(|e| format!("{e:?}"))?;
    atomics::increment(&bucket, key, 1).map_err(|e| format!("{e:?}"))
}

fn step(args: &str) -> Result<String, String> {
    let which = std::env::var("STEP").unwrap_or_default();
    match which.as_str() {
        "detect" => {
            let threshold = std::env::var("THRESHOLD")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(3.0);
            let (_, level) = reading(args)?;
            Ok(if level > threshold {
                args.trim().to_owned()
            } else {
                String::new()
            })
        }
        "classify" => {
            let (ward, level) = reading(args)?;
            let sev = severity(level);
            let record = format!("{ward} {sev}");
            Ok(if sev == "severe" {
                format!(r#"{{"alert": "{ward} {sev} {level}", "record": "{record}"}}"#)
            } else {
                format!(r#"{{"record": "{record}"}}"#)
            })
        }
        "alert" => {
            let ward = args.split_whitespace().next().ok_or("no ward")?;
            let n = count("alerts", ward)?;
            Ok(format!("alert {n} for {args}"))
        }
        "archive" => {
            let key = args.trim().replace(' ', ".");
            count("archive", &key)?;
            count("archive", "total")?;
            Ok(String::new())
        }
        other => Err(format!(
            "STEP={other:?}: expected detect, classify, alert or archive"
        )),
    }
}

impl limes_guest::Guest for Flood {
    fn run(args: String) -> String {
        // A failure traps, so that the platform retries the step and dead-letters it in the end.
        step(&args).unwrap_or_else(|e| panic!("{e}"))
    }
}

limes_guest::export_run!(Flood with_types_in limes_guest);
