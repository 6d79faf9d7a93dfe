//! Snapshots of QEMU guests, as a microVM platform starts functions: boot once until the guest
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

/// How long a VMM may take to open its QMP socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A QMP connection, past the capabilities handshake.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, String> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(e) => return Err(format!("QMP at {}: {e}", path.display())),
            }
        };
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
pub fn restore(
    cmd: &mut Command,
    file: &Path,
    scratch: &Path,
) -> Box<dyn FnOnce() -> Result<(), String> + Send> {
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
