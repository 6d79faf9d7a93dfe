//! What the CLI tests share: the `limes` binary, guests, and a `limes serve` child process.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn limes() -> Command {
    Command::new(env!("CARGO_BIN_EXE_limes"))
}

pub fn guest(name: &str) -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/guests/{name}.wasm"));
    assert!(
        path.is_file(),
        "{}: build the guests with `cargo xtask guests`",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `limes serve` child process; its stderr goes to `log`.
pub struct Served {
    pub child: Child,
    pub url: String,
}

impl Served {
    pub fn start(data: &Path, log: &Path, scheme: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = limes()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Listening, and the data dir says where (the CLI's own-node check reads it).
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || !data.join("node-url").exists()
        {
            assert!(
                Instant::now() < deadline,
                "limes serve did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// Sends `signal` and returns at once.
    pub fn send(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// How long the process took to exit, if it did within `limit`, and its exit code.
    pub fn exits_within(&mut self, limit: Duration) -> Option<(Duration, Option<i32>)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((started.elapsed(), status.code()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client command against `served` without any token in the environment.
pub fn client(served: &Served, data: &Path, args: &[&str]) -> Output {
    client_at(&served.url, data, args)
}

pub fn client_at(url: &str, data: &Path, args: &[&str]) -> Output {
    limes()
        .args(args)
        .args(["--node", url, "--node-data-dir"])
        .arg(data)
        .env_remove("LIMES_TOKEN")
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A CA and a certificate it signs for localhost and 127.0.0.1, written under `dir`: the
/// certificate, its key and the CA, in PEM.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file, ca_file) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (cert_file, key_file, ca_file)
}
