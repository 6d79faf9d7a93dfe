//! Components through a real OCI registry (Debian's `docker-registry`, the CNCF Distribution
//! registry) on loopback: `limes push`, then a node that deploys by tag and by digest, with and
//! without credentials, over HTTPS with the operator's CA, and that refuses a tampered or a
//! non-Wasm artifact while its current version goes on serving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A `docker-registry serve` child process with its storage in a temporary directory.
struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    host: String,
    dir: tempfile::TempDir,
}

/// How the registry is reached and whom it lets in.
#[derive(Default)]
struct Options {
    /// USER, PASSWORD: Basic auth (htpasswd) for every request.
    user: Option<(&'static str, &'static str)>,
    /// HTTPS with this certificate and key.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Registry {
    /// Starts one; `None` (said on stderr) when `docker-registry` is not installed and the test
    /// run does not require it (`LIMES_REQUIRE_REGISTRY=1`, as `scripts/test` sets).
    fn start(options: Options) -> Option<Self> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("LIMES_REQUIRE_REGISTRY").is_none(),
                "docker-registry is required (apt-get install docker-registry)"
            );
            eprintln!("skipped: docker-registry is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &options.tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, password)) = options.user {
            let line = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) makes the registry's password file");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: limes-test\n    path: {}\n",
                file.display()
            );
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, host, dir })
    }

    fn reference(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.host)
    }

    /// Where the registry keeps the blob of `digest` (hex).
    fn blob(&self, digest: &str) -> PathBuf {
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{digest}/data",
            &digest[..2]
        ))
    }

    /// A Docker config.json with this registry's credentials.
    fn credentials(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let file = dir.join("registry-auth.json");
        std::fs::write(
            &file,
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, self.host),
        )
        .unwrap();
        file
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `limes push FILE REFERENCE EXTRA…`.
fn push(file: &Path, reference: &str, extra: &[&str]) -> std::process::Output {
    limes()
        .arg("push")
        .arg(file)
        .arg(reference)
        .args(extra)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

/// A node whose settings come from a config file with `registry` (TOML lines).
fn node(dir: &Path, registry: &str, extra: &[&str]) -> Served {
    let config = dir.join("limes.toml");
    std::fs::write(&config, format!("[registry]\n{registry}\n")).unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    Served::start(&dir.join("node"), &dir.join("serve.log"), "http", &args)
}

/// Starts a node with `registry` settings and `extra` flags in a directory of its own, and
/// asserts that deploying `reference` there fails with `kind`; returns the error.
fn refused_by_a_node_with(registry: &str, extra: &[&str], reference: &str, kind: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let served = node(dir.path(), registry, extra);
    let data = dir.path().join("node");
    fails_with(
        &client(&served, &data, &["deploy", "echo", reference]),
        kind,
    )
}

fn succeeds(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn fails_with(output: &std::process::Output, kind: &str) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(&format!("error: {kind}:")),
        "expected {kind}: {}{stderr}",
        text(&output.stdout)
    );
    stderr
}

/// The pinned reference `limes push` printed.
fn pinned(pushed: &str) -> String {
    pushed
        .split_whitespace()
        .last()
        .expect("push prints where")
        .to_owned()
}

#[test]
fn a_component_pushed_is_deployed_by_tag_and_digest_and_bad_artifacts_leave_it_serving() {
    let Some(registry) = Registry::start(Options::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let insecure = ["--registry-insecure", registry.host.as_str()];
    let echo = guest("echo");
    let tag = registry.reference("limes/echo:v1");
    let pushed = succeeds(&push(&echo, &tag, &insecure));
    let pinned = pinned(&pushed);
    assert!(
        pinned.starts_with(&registry.reference("limes/echo@sha256:")),
        "{pushed}"
    );
    // HTTPS unless the registry is listed as plain HTTP: nothing goes out in the clear.
    fails_with(&push(&echo, &tag, &[]), "registry-unreachable");

    let served = node(
        dir.path(),
        &format!("registry_insecure = [{:?}]", registry.host),
        &[],
    );
    let data = dir.path().join("node");
    let by_tag = succeeds(&client(&served, &data, &["deploy", "echo", &tag]));
    assert!(
        by_tag.contains(&format!("pulled from {pinned}")),
        "{by_tag}"
    );
    let answer = succeeds(&client(
        &served,
        &data,
        &["invoke", "echo", "--args", "from the registry"],
    ));
    assert!(answer.contains("from the registry"), "{answer}");
    let by_digest = succeeds(&client(&served, &data, &["deploy", "echo", &pinned]));
    assert!(
        by_digest.contains("version 2") && by_digest.contains(&pinned),
        "{by_digest}"
    );
    // The digest pulled is in the audit log.
    let audit = succeeds(&client(&served, &data, &["audit"]));
    assert!(
        audit.contains(&format!("\"source\":\"{pinned}\"")),
        "{audit}"
    );

    // Each failure names its cause; the active version goes on serving.
    fails_with(
        &client(
            &served,
            &data,
            &["deploy", "echo", &registry.reference("limes/echo:v9")],
        ),
        "artifact-not-found",
    );
    let wrong = format!(
        "{}@sha256:{}",
        registry.reference("limes/echo"),
        "0".repeat(64)
    );
    fails_with(
        &client(&served, &data, &["deploy", "echo", &wrong]),
        "artifact-not-found",
    );
    fails_with(
        &client(&served, &data, &["deploy", "echo", "oci://no tag here"]),
        "bad-reference",
    );
    // Only registries the operator listed: a deployer cannot make the node reach other hosts.
    let refused = fails_with(
        &client(
            &served,
            &data,
            &["deploy", "echo", "oci://10.0.0.1:5000/x:v1"],
        ),
        "not-permitted",
    );
    assert!(refused.contains("--registry-allow"), "{refused}");
    // An artifact that is not a Wasm component (an OCI image's media types).
    push_image(&registry, "limes/image:v1");
    let refused = fails_with(
        &client(
            &served,
            &data,
            &["deploy", "echo", &registry.reference("limes/image:v1")],
        ),
        "not-wasm",
    );
    assert!(
        refused.contains("application/vnd.wasm.config.v0+json"),
        "{refused}"
    );
    // The registry's copy of the component altered (same size, one byte changed).
    let component = std::fs::read(&echo).unwrap();
    let blob = registry.blob(&limes_runtime::Digest::of(&component).to_string());
    let mut tampered = component.clone();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(&blob, &tampered).unwrap();
    let refused = fails_with(
        &client(&served, &data, &["deploy", "echo", &tag]),
        "digest-mismatch",
    );
    assert!(refused.contains("refused"), "{refused}");
    let answer = succeeds(&client(
        &served,
        &data,
        &["invoke", "echo", "--args", "still here"],
    ));
    assert!(answer.contains("still here"), "{answer}");
    let listed = succeeds(&client(&served, &data, &["ls"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("echo") && l.contains(" 2 ")),
        "{listed}"
    );
    let audit = succeeds(&client(&served, &data, &["audit"]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("deploy.refused") && l.contains("10.0.0.1")),
        "{audit}"
    );
    drop(served);

    // A component larger than the node takes is refused before it is read whole.
    let refused = refused_by_a_node_with(
        &format!("registry_insecure = [{:?}]", registry.host),
        &["--max-body", "1KiB"],
        &pinned,
        "too-large",
    );
    assert!(refused.contains("1024"), "{refused}");
}

/// Pushes an OCI image (not a Wasm artifact) to `path` on `registry`, as any image tool would.
fn push_image(registry: &Registry, path: &str) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{}/{path}", registry.host).parse().unwrap();
    let layer = ImageLayer::new(
        b"\0asm not really".to_vec(),
        "application/vnd.oci.image.layer.v1.tar".to_owned(),
        None,
    );
    let config = Config::new(
        br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
        "application/vnd.oci.image.config.v1+json".to_owned(),
        None,
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client.push(
            &reference,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        ))
        .unwrap();
}

#[test]
fn credentials_come_from_the_operator_and_https_trusts_the_operators_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificates(dir.path());
    let Some(registry) = Registry::start(Options {
        user: Some(("edge", "s3cret-pass")),
        tls: Some((cert, key)),
    }) else {
        return;
    };
    let ca = ca.to_str().unwrap();
    let echo = guest("echo");
    let tag = registry.reference("brigade/echo:v1");
    let auth = registry.credentials(dir.path(), "edge", "s3cret-pass");
    let auth = auth.to_str().unwrap();
    fails_with(
        &push(&echo, &tag, &["--registry-ca", ca]),
        "registry-unauthorized",
    );
    let pushed = succeeds(&push(
        &echo,
        &tag,
        &["--registry-ca", ca, "--registry-auth", auth],
    ));
    let pinned = pinned(&pushed);

    // A node without the credentials is refused by the registry, and says so.
    let allow = format!("registry_allow = [{:?}]", registry.host);
    refused_by_a_node_with(
        &format!("{allow}\nregistry_ca = [{ca:?}]"),
        &[],
        &tag,
        "registry-unauthorized",
    );
    // Without the CA, the registry's certificate is not trusted.
    refused_by_a_node_with(
        &format!("{allow}\nregistry_auth = {auth:?}"),
        &[],
        &tag,
        "registry-unreachable",
    );

    // The operator's credentials and CA, and a node that requires signatures: the signature
    // is still checked on a component that comes from a registry.
    let keys = dir.path().join("keys");
    succeeds(
        &limes()
            .args(["keygen", "release", "--dir"])
            .arg(&keys)
            .output()
            .unwrap(),
    );
    let signature = dir.path().join("echo.sig");
    succeeds(
        &limes()
            .arg("sign")
            .arg(&echo)
            .arg("--key")
            .arg(keys.join("release.key"))
            .arg("--out")
            .arg(&signature)
            .output()
            .unwrap(),
    );
    let trusted = tempfile::tempdir().unwrap();
    let served = node(
        trusted.path(),
        &format!("{allow}\nregistry_auth = {auth:?}\nregistry_ca = [{ca:?}]"),
        &["--trusted-keys", keys.to_str().unwrap()],
    );
    let data = trusted.path().join("node");
    fails_with(
        &client(&served, &data, &["deploy", "echo", &pinned]),
        "unsigned",
    );
    let deployed = succeeds(&client(
        &served,
        &data,
        &[
            "deploy",
            "echo",
            &pinned,
            "--signature",
            signature.to_str().unwrap(),
        ],
    ));
    assert!(deployed.contains("pulled from"), "{deployed}");
    let answer = succeeds(&client(
        &served,
        &data,
        &["invoke", "echo", "--args", "signed"],
    ));
    assert!(answer.contains("signed"), "{answer}");
}
