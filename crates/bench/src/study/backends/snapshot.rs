//! Snapshots of VMs, as a microVM platform starts functions. QEMU: boot once until the guest
//! says `limes-waiting` (`workload-native @wait`), save the whole VM to a file (QMP `stop`, then
//! `migrate` to `exec:cat > FILE`), and per invocation restore it with `-incoming`, continue it
//! over QMP once loaded, and write the request to its console.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::process::Ready;

/// How long a VMM may take to open its QMP socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to a VMM's Unix socket, waiting up to [`CONNECT_TIMEOUT`] for it to appear.
fn connect(path: &Path, what: &str) -> Result<UnixStream, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => return Err(format!("{what} at {}: {e}", path.display())),
        }
    }
}

/// A QMP connection, past the capabilities handshake.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, String> {
        let stream = connect(path, "QMP")?;
        stream
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.line()?; // the greeting
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP closed".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}")),
            Err(e) => Err(format!("QMP: {e}")),
        }
    }

    /// Runs `command`, skipping events, and returns its `return` value.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP: {e}"))?;
        loop {
            let reply = self.line()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
        }
    }
}

/// A fresh QMP socket path in `dir`.
pub fn socket(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!("qmp-{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn with_qmp(cmd: &mut Command, path: &Path) {
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", path.display()));
}

/// Boots `cmd` (a QEMU guest started with `@wait`) and saves it to `file` once it waits.
pub fn save(mut cmd: Command, scratch: &Path, file: &Path) -> Result<(), String> {
    let qmp_path = socket(scratch);
    with_qmp(&mut cmd, &qmp_path);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the VM to snapshot: {e}"))?;
    let outcome = (|| {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut seen = Vec::new();
        let waiting = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| {
                let found = l.contains("limes-waiting");
                if seen.len() < 20 {
                    seen.push(l);
                }
                found
            });
        if !waiting {
            return Err(format!(
                "the guest ended before it waited for a request: {}",
                seen.join(" | ")
            ));
        }
        let mut qmp = Qmp::connect(&qmp_path)?;
        qmp.execute("stop", None)?;
        qmp.execute(
            "migrate",
            Some(json!({ "uri": format!("exec:cat > {}", file.display()) })),
        )?;
        loop {
            let status = qmp.execute("query-migrate", None)?;
            match status["status"].as_str() {
                Some("completed") => break,
                Some("failed" | "cancelled") => {
                    return Err(format!("saving the snapshot failed: {status}"));
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = qmp.execute("quit", None);
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&qmp_path);
    outcome
}

/// Turns a boot command into a restore of `file`; returns what to wait on before the guest can
/// take its request: the incoming state loaded, and the VM (saved stopped) continued.
pub fn restore(cmd: &mut Command, file: &Path, scratch: &Path) -> Ready {
    let qmp_path = socket(scratch);
    let _ = std::fs::remove_file(&qmp_path);
    with_qmp(cmd, &qmp_path);
    cmd.arg("-incoming")
        .arg(format!("exec:cat {}", file.display()));
    Box::new(move || {
        let outcome = (|| {
            let mut qmp = Qmp::connect(&qmp_path)?;
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            loop {
                let status = qmp.execute("query-status", None)?;
                match status["status"].as_str() {
                    Some("running") => return Ok(()),
                    // The VM was stopped to be saved, and comes back stopped.
                    Some("paused") => {
                        qmp.execute("cont", None)?;
                        return Ok(());
                    }
                    _ => {}
                }
                if Instant::now() > deadline {
                    return Err(format!("the restored VM does not run: {status}"));
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })();
        let _ = std::fs::remove_file(&qmp_path);
        outcome
    })
}

/// Firecracker's snapshots, through its API socket: boot from a configuration file with the
/// API open, pause at `limes-waiting`, `PUT /snapshot/create`; per invocation, start an empty
/// Firecracker and `PUT /snapshot/load` with `resume_vm`. Firecracker joins the guest's serial
/// port to its own stdin and stdout, so the request goes in as for QEMU. Not run here (no
/// Firecracker, no hardware KVM); its requests are checked by the unit tests.
pub mod firecracker {
    use super::*;

    /// The files of one Firecracker snapshot.
    #[derive(Debug, Clone)]
    pub struct Files {
        pub state: PathBuf,
        pub memory: PathBuf,
    }

    /// One API request as Firecracker's HTTP/1.1 server takes it.
    pub fn request(method: &str, path: &str, body: &Value) -> String {
        let body = body.to_string();
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn call(socket: &Path, method: &str, path: &str, body: Value) -> Result<(), String> {
        let mut stream = super::connect(socket, "Firecracker API")?;
        stream
            .write_all(request(method, path, &body).as_bytes())
            .map_err(|e| format!("Firecracker API: {e}"))?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply)
            .map_err(|e| format!("Firecracker API: {e}"))?;
        let status = reply.split_whitespace().nth(1).unwrap_or_default();
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(format!("Firecracker {method} {path}: {reply}"))
        }
    }

    /// Boots `firecracker` with `config` (a guest started with `@wait`) and snapshots it.
    pub fn save(binary: &Path, config: &Path, scratch: &Path, files: &Files) -> Result<(), String> {
        let api = socket(scratch);
        let mut child = Command::new(binary)
            .arg("--api-sock")
            .arg(&api)
            .arg("--config-file")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting Firecracker to snapshot: {e}"))?;
        let outcome = (|| {
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let waiting = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("limes-waiting"));
            if !waiting {
                return Err("the guest ended before it waited for a request".to_owned());
            }
            call(&api, "PATCH", "/vm", json!({ "state": "Paused" }))?;
            call(
                &api,
                "PUT",
                "/snapshot/create",
                json!({
                    "snapshot_type": "Full",
                    "snapshot_path": files.state,
                    "mem_file_path": files.memory,
                }),
            )
        })();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&api);
        outcome
    }

    /// An empty Firecracker with its API at a fresh socket, and what loads and resumes the
    /// snapshot in it: the wait before the guest can take its request.
    pub fn restore(binary: &Path, files: &Files, scratch: &Path) -> (Command, Ready) {
        let api = socket(scratch);
        let _ = std::fs::remove_file(&api);
        let mut cmd = Command::new(binary);
        cmd.arg("--api-sock").arg(&api);
        let files = files.clone();
        let ready = Box::new(move || {
            let outcome = call(
                &api,
                "PUT",
                "/snapshot/load",
                json!({
                    "snapshot_path": files.state,
                    "mem_backend": { "backend_type": "File", "backend_path": files.memory },
                    "resume_vm": true,
                }),
            );
            let _ = std::fs::remove_file(&api);
            outcome
        });
        (cmd, ready)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn requests_carry_their_json_and_its_length() {
            let r = request("PATCH", "/vm", &json!({ "state": "Paused" }));
            assert!(r.starts_with("PATCH /vm HTTP/1.1\r\n"));
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert_eq!(body, r#"{"state":"Paused"}"#);
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
        }
    }
}
