//! How the CLI verifies an https node given `--cacert`, and how it reports a TLS failure.
//!
//! An operator's first certificate is usually self-signed, `openssl req -x509 … -addext
//! subjectAltName=IP:127.0.0.1`, which marks it a CA. `curl --cacert` accepts it as the node's
//! own certificate; webpki refuses a CA certificate as an end entity (`CaUsedAsEndEntity`). So a
//! certificate given with `--cacert` is trusted both ways: as a root that signs the node's
//! certificate, and, byte for byte, as the node's own certificate. Nothing else is relaxed.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A TLS client configuration that trusts the system's roots and the certificates in `pem`.
pub fn client_config(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let given = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if given.is_empty() {
        return Err("no certificate in it".into());
    }
    let mut roots = RootCertStore::empty();
    // A system root that does not parse is skipped, as every TLS client here does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots.add_parsable_certificates(given.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = Arc::new(GivenOrWebPki { webpki, given });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// webpki's verdict, except that the very certificate the user gave is the node's own.
#[derive(Debug)]
struct GivenOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    given: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for GivenOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // Only the CA-as-end-entity refusal is overruled, and only for an exact match whose
            // name fits: webpki checked its validity period before this refusal, but stopped
            // before the name, which is checked here. Any other certificate still fails.
            Err(e)
                if format!("{e:?}").contains("CaUsedAsEndEntity")
                    && self.given.iter().any(|g| g.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What a failed request to `node` says: a TLS failure says it is one, with rustls' reason
/// (kind `tls`), where it read as an unreachable node before.
pub fn send_error(node: &str, e: &reqwest::Error) -> crate::CliError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return crate::CliError::new("tls", format!("{node}: TLS failed: {tls}"));
        }
        // An I/O error's `source` skips the error it wraps: step into that one instead.
        source = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    crate::CliError::new("node-unreachable", format!("{node}: {e}"))
}
