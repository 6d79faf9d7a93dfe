//! Logs on stderr: lines for people, or one JSON object a line for machines
//! (`limes serve --log-format json`). `RUST_LOG` picks what is logged [default: warn].

use std::sync::OnceLock;

static JSON: OnceLock<bool> = OnceLock::new();

/// Starts logging; the first call decides the format.
pub fn init(json: bool) {
    if JSON.set(json).is_err() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // Each event carries its spans' fields: a request's log lines carry its `id`, the
        // x-request-id the node returns to the client.
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.init();
    }
}

/// A message for the operator (the node listens, joins a cluster…), whatever `RUST_LOG` says:
/// a line for people, or a JSON object like the log's events.
pub fn notice(message: &str) {
    if JSON.get().copied().unwrap_or(false) {
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "INFO",
            "fields": {"message": message},
            "target": "limes",
        });
        eprintln!("{line}");
    } else {
        eprintln!("{message}");
    }
}
