//! Connecting to NATS: credentials, TLS, and a start that fails fast on a wrong credential.
//!
//! A node starts even while NATS is unreachable (it serves its own functions and connects when
//! NATS comes up), but a NATS server that answers and refuses the node's credentials, or its
//! TLS, is a configuration error: the start fails at once and names it, instead of retrying
//! silently forever.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};
use limes_node::NodeError;

/// How a node proves itself to NATS.
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes it.
    Creds(PathBuf),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
}

/// How long the first attempt to reach NATS may take before the node starts without it.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

async fn options(
    id: &str,
    auth: &NatsAuth,
    ca: Option<&PathBuf>,
) -> Result<ConnectOptions, NodeError> {
    let mut options = match auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::Creds(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NodeError::BadRequest(format!("--nats-creds {}: {e}", path.display())))?,
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => ConnectOptions::with_token(token.clone()),
    };
    if let Some(ca) = ca {
        options = options.tls_client_config(tls_config(ca)?).require_tls(true);
    }
    Ok(options
        .name(format!("limes-node-{id}"))
        .connection_timeout(FIRST_CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::ServerError(e) => {
                    tracing::warn!(error = %e, "NATS server error")
                }
                async_nats::Event::ClientError(e) => {
                    tracing::warn!(error = %e, "NATS client error")
                }
                other => tracing::debug!(event = %other, "NATS"),
            }
        }))
}

/// TLS to NATS trusting the CA in `ca`. Built here with ring (as the node's own TLS is), not
/// left to async-nats, whose default asks rustls for a process-wide provider.
fn tls_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, NodeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| NodeError::BadRequest(format!("--nats-ca {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `url` (one NATS URL or several, comma-separated) as it may be shown in a log line, an error
/// or an answer: a password or token in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| match userinfo(one) {
            Some((start, end)) => {
                let shown = match one[start..end].split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => "***".to_owned(),
                };
                format!("{}{shown}{}", &one[..start], &one[end..])
            }
            None => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the `user:password` or token part of one NATS URL lies, if it has one.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority = url[start..].find('/').map_or(url.len(), |i| start + i);
    Some((start, start + url[start..authority].rfind('@')?))
}

/// Connects to `url`. A refusal of the credentials or a TLS failure is an error; an unreachable
/// server is not: the client then keeps trying in the background.
pub(crate) async fn connect(
    url: &str,
    id: &str,
    auth: &NatsAuth,
    ca: Option<&PathBuf>,
) -> Result<async_nats::Client, NodeError> {
    // A server that asks for TLS when no --nats-ca was given makes async-nats build a TLS
    // config from rustls's process-wide provider, which must then exist (ring, as elsewhere).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let first = options(id, auth, ca).await?.connect(url).await;
    let error = match first {
        Ok(client) => return Ok(client),
        Err(e) => e,
    };
    let shown = redacted(url);
    // The client's own error text may repeat the URL: every message goes through `hide`.
    let hide = |message: String| hide_secrets(url, message);
    // A failed handshake reaches us as an I/O error whose cause is rustls's.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let tls_failure = error.kind() == ConnectErrorKind::Tls
        || text.contains("certificate")
        || text.to_ascii_lowercase().contains("tls");
    match error.kind() {
        _ if tls_failure => Err(NodeError::Cluster(hide(format!(
            "TLS with NATS at {shown} failed ({text}); check --nats-ca and the server's certificate"
        )))),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Err(NodeError::Cluster(hide(format!(
                "NATS at {shown} refused this node: authorization violation ({error}); check \
                 --nats-creds, --nats-user/--nats-password or --nats-token"
            ))))
        }
        ConnectErrorKind::ServerParse => Err(NodeError::BadRequest(hide(format!(
            "--cluster {shown}: not a NATS URL ({error})"
        )))),
        _ => {
            let error = hide(error.to_string());
            tracing::warn!(url = %shown, %error, "NATS is unreachable; serving local functions and connecting in the background");
            options(id, auth, ca)
                .await?
                .retry_on_initial_connect()
                .connect(url)
                .await
                .map_err(|e| NodeError::Cluster(hide(format!("connecting to {shown}: {e}"))))
        }
    }
}

/// `message` with every password or token of `url` replaced by `***`.
fn hide_secrets(url: &str, message: String) -> String {
    url.split(',')
        .filter_map(|one| {
            let (start, end) = userinfo(one)?;
            let info = &one[start..end];
            Some(info.split_once(':').map_or(info, |(_, secret)| secret))
        })
        .filter(|secret| !secret.is_empty())
        .fold(message, |message, secret| message.replace(secret, "***"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_and_tokens_never_show() {
        use super::redacted;
        assert_eq!(redacted("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redacted("nats://s3cr3t@h"), "nats://***@h");
        assert_eq!(redacted("tls://h:4222"), "tls://h:4222");
        assert_eq!(
            redacted("nats://a:p@h1,nats://h2"),
            "nats://a:***@h1,nats://h2"
        );
        assert_eq!(redacted("nats://u:p@h/x@y"), "nats://u:***@h/x@y");
        let said = super::hide_secrets("nats://u:hunter2@h", "dial nats://u:hunter2@h: no".into());
        assert!(!said.contains("hunter2"), "{said}");
    }
}
