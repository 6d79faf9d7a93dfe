//! Every way loading or invoking a function can fail, as data.

use std::path::PathBuf;
use std::time::Duration;

/// A failure to load, prepare or invoke a function.
///
/// Each variant's message is written for the person who deployed the function; [`Error::kind`]
/// gives a stable, machine-readable name for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The artifact's file does not exist.
    #[error("no such file: {}", path.display())]
    NotFound { path: PathBuf },
    /// Reading the artifact or writing the cache failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not start with the WebAssembly magic number.
    #[error("not a WebAssembly binary: {reason}")]
    NotWasm { reason: String },
    /// A core module where a component was expected.
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it \
         with `wasm-tools component new`"
    )]
    NotAComponent,
    /// The component failed validation or compilation.
    #[error("invalid component: {message}")]
    InvalidComponent { message: String },
    /// The component imports something the host does not provide.
    #[error("the component cannot be linked: {message}")]
    Link { message: String },
    /// The component lacks the export a Limes function needs.
    #[error(
        "the component does not export `{export}`: a Limes function exports component:run/run, \
         an HTTP function wasi:http/incoming-handler"
    )]
    MissingExport { export: String },
    /// The export exists but with another type.
    #[error("`{export}` has the wrong type: expected `{expected}`, found `{found}`")]
    WrongSignature {
        export: String,
        expected: String,
        found: String,
    },
    /// The function's policy cannot be applied (for example a preopened dir that is missing).
    #[error("invalid policy: {message}")]
    InvalidPolicy { message: String },
    /// The function was invoked the wrong way: `invoke` on an HTTP function or the reverse.
    #[error("this is a {} function, not a {} function", found.as_str(), expected.as_str())]
    WrongKind {
        expected: crate::FunctionKind,
        found: crate::FunctionKind,
    },
    /// An HTTP request the function cannot be given (for example one without a host).
    #[error("bad request: {message}")]
    BadRequest { message: String },
    /// The guest trapped: a panic, an out-of-bounds access, a stack overflow, an `exit`.
    #[error("{message}")]
    Trap { message: String },
    /// The invocation ran past its wall-clock timeout.
    #[error("timed out after {}", humanize(*limit))]
    Timeout { limit: Duration },
    /// The guest tried to grow its memory past the policy's limit.
    #[error("memory limit of {limit} bytes reached (the guest asked for {requested} bytes)")]
    MemoryLimit { limit: u64, requested: u64 },
    /// The guest used up its CPU budget.
    #[error("fuel budget of {budget} exhausted")]
    FuelExhausted { budget: u64 },
    /// The invocation was force-stopped through its cancellation token.
    #[error("cancelled")]
    Cancelled,
    /// Every instance slot of the engine is in use.
    #[error("no free instance slot: {message}")]
    Capacity { message: String },
}

impl Error {
    /// A stable, kebab-case name for the kind of failure, for logs, metrics and API bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not-found",
            Error::Io { .. } => "io",
            Error::NotWasm { .. } => "not-wasm",
            Error::NotAComponent => "not-a-component",
            Error::InvalidComponent { .. } => "invalid-component",
            Error::Link { .. } => "link",
            Error::MissingExport { .. } => "missing-export",
            Error::WrongSignature { .. } => "wrong-signature",
            Error::InvalidPolicy { .. } => "invalid-policy",
            Error::WrongKind { .. } => "wrong-kind",
            Error::BadRequest { .. } => "bad-request",
            Error::Trap { .. } => "trap",
            Error::Timeout { .. } => "timeout",
            Error::MemoryLimit { .. } => "memory-limit",
            Error::FuelExhausted { .. } => "fuel-exhausted",
            Error::Cancelled => "cancelled",
            Error::Capacity { .. } => "capacity",
        }
    }

    /// Whether the fault lies in the deployed artifact or its policy rather than in one
    /// invocation: such errors are found at load time.
    pub fn is_load_error(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::NotWasm { .. }
                | Error::NotAComponent
                | Error::InvalidComponent { .. }
                | Error::Link { .. }
                | Error::MissingExport { .. }
                | Error::WrongSignature { .. }
                | Error::InvalidPolicy { .. }
        )
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Formats a wasmtime error with its chain of causes on one line.
pub(crate) fn chain(error: &wasmtime::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    text
}

fn humanize(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
