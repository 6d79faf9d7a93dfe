//! Signed components: a node started with trusted keys runs only what one of them signed.
//!
//! Keys are Ed25519 (`limes keygen NAME` writes `NAME.key`, the PKCS#8 private key in hex with
//! mode 0600, and `NAME.pub`, the 32-byte public key in hex). A signature is detached: `limes
//! sign FILE` writes `FILE.sig`, 64 bytes in hex, over the text
//! `limes-component-v1:<sha256 of the component, hex>`. The prefix keeps a Limes signature from
//! meaning anything else. A deploy carries it in the `x-limes-signature` header (or a
//! `signature` part of a multipart deploy); the registry keeps it with the version, so it
//! travels through a cluster with the record and every node checks it again before it runs the
//! version.

use std::path::{Path, PathBuf};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::NodeError;

/// What is signed for the component whose SHA-256 is `digest` (hex).
pub fn message(digest: &str) -> Vec<u8> {
    format!("limes-component-v1:{digest}").into_bytes()
}

/// The public keys a node trusts, each with its name (the file's stem).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl TrustedKeys {
    /// Every `*.pub` file in `dir`. A directory with none is an error: a node that trusts no
    /// key could run nothing.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("--trusted-keys {}: {e}", dir.display()))?;
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_none_or(|e| e != "pub") {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let key = hex::decode(text.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    format!(
                        "{}: not an Ed25519 public key (64 hex digits)",
                        path.display()
                    )
                })?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.push((name, key));
        }
        if keys.is_empty() {
            return Err(format!(
                "--trusted-keys {}: no *.pub key in it",
                dir.display()
            ));
        }
        keys.sort();
        Ok(Self { keys })
    }

    /// The name of the trusted key that made `signature` (hex) over the component whose
    /// SHA-256 is `digest`.
    pub fn verify(&self, digest: &str, signature: Option<&str>) -> Result<String, NodeError> {
        let signature = signature.ok_or_else(|| {
            NodeError::Unsigned(
                "this node runs only signed components: sign it with `limes sign` and send the \
                 signature in x-limes-signature"
                    .into(),
            )
        })?;
        let bytes = hex::decode(signature.trim())
            .map_err(|_| NodeError::BadSignature("the signature is not hex".into()))?;
        let message = message(digest);
        self.keys
            .iter()
            .find(|(_, key)| {
                UnparsedPublicKey::new(&ED25519, key)
                    .verify(&message, &bytes)
                    .is_ok()
            })
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                NodeError::BadSignature(format!(
                    "the signature does not verify against any trusted key ({}) for component {digest}",
                    self.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Writes a new key pair as `dir/NAME.key` (mode 0600) and `dir/NAME.pub`; refuses to
/// overwrite a key. Returns both paths.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no randomness for a key")?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| io(&private, e))?;
    writeln!(file, "{}", hex::encode(pkcs8.as_ref())).map_err(|e| io(&private, e))?;
    std::fs::write(
        &public,
        format!("{}\n", hex::encode(pair.public_key().as_ref())),
    )
    .map_err(|e| io(&public, e))?;
    Ok((private, public))
}

/// The signature (hex) of `component` with the private key in `key_file`.
pub fn sign(key_file: &Path, component: &[u8]) -> Result<String, String> {
    let text = std::fs::read_to_string(key_file).map_err(|e| io(key_file, e))?;
    let pkcs8 = hex::decode(text.trim()).map_err(|_| io(key_file, "not a limes keygen key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| io(key_file, e))?;
    let digest = limes_runtime::Digest::of(component).to_string();
    Ok(hex::encode(pair.sign(&message(&digest)).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_verifies_unsigned_and_tampered_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = keygen(dir.path(), "release").unwrap();
        assert!(keygen(dir.path(), "release").is_err(), "no overwrite");
        let other = tempfile::tempdir().unwrap();
        let (other_key, _) = keygen(other.path(), "stranger").unwrap();
        let trusted = TrustedKeys::load(dir.path()).unwrap();

        let component = b"\0asm component bytes";
        let digest = limes_runtime::Digest::of(component).to_string();
        let signature = sign(&key, component).unwrap();
        assert_eq!(
            trusted.verify(&digest, Some(&signature)).unwrap(),
            "release"
        );
        assert_eq!(
            trusted.verify(&digest, None).unwrap_err().kind(),
            "unsigned"
        );
        let tampered = limes_runtime::Digest::of(b"\0asm other bytes").to_string();
        assert_eq!(
            trusted
                .verify(&tampered, Some(&signature))
                .unwrap_err()
                .kind(),
            "bad-signature"
        );
        let foreign = sign(&other_key, component).unwrap();
        assert_eq!(
            trusted.verify(&digest, Some(&foreign)).unwrap_err().kind(),
            "bad-signature"
        );
        assert!(TrustedKeys::load(tempfile::tempdir().unwrap().path()).is_err());
    }
}
