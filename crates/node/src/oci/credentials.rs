//! The operator's registry credentials, in the format of Docker's `config.json`.

use std::collections::HashMap;
use std::path::Path;

use oci_client::secrets::RegistryAuth;

/// The credentials of a Docker `config.json`: `{"auths": {"HOST": {"auth": base64("USER:PASSWORD")}}}`
/// (or `"username"` and `"password"`). Credential helpers (`credsStore`) are not run: a node
/// does not run other programs for its secrets.
pub(super) fn read(path: &Path) -> Result<HashMap<String, RegistryAuth>, String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("--registry-auth {name}: {e}"))?;
    let file: File =
        serde_json::from_str(&text).map_err(|e| format!("--registry-auth {name}: {e}"))?;
    let mut auths = HashMap::new();
    for (host, entry) in file.auths {
        let (user, password) = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| format!("--registry-auth {name}: the auth of {host} is not base64 of USER:PASSWORD"))?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    format!("--registry-auth {name}: the auth of {host} is not USER:PASSWORD")
                })?;
                (user.to_owned(), password.to_owned())
            }
            (None, Some(user), Some(password)) => (user, password),
            _ => {
                return Err(format!(
                    "--registry-auth {name}: {host} has neither auth nor username and password"
                ));
            }
        };
        // `docker login` writes Docker Hub as a URL.
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        auths.insert(host, RegistryAuth::Basic(user, password));
    }
    Ok(auths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials_are_read_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths": {"localhost:5000": {"auth": "ZWRnZTpzM2NyZXQ="}, "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#,
        )
        .unwrap();
        let auths = read(&path).unwrap();
        assert!(
            matches!(&auths["localhost:5000"], RegistryAuth::Basic(u, p) if u == "edge" && p == "s3cret")
        );
        assert!(matches!(&auths["index.docker.io"], RegistryAuth::Basic(u, _) if u == "u"));
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap();
        assert!(read(&path).unwrap_err().contains("base64"));
    }
}
