//! A local `nats-server -js` as a child process, for tests and experiments on one machine.
//! (A real cluster runs its NATS server as a service; see the README.)

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server` on PATH or where Debian installs it.
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
}

/// A `nats-server -js` on a loopback port with its JetStream store in a temporary directory;
/// killed when dropped. It can be killed and run again on the same port and store.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// A configuration file (users, TLS), if any.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    pub fn start() -> Result<Self, String> {
        Self::start_with_config("")
    }

    /// [`NatsServer::start`] with `config` (NATS configuration text, such as an
    /// `authorization { users = [...] }` block) added to the command line's settings.
    pub fn start_with_config(config: &str) -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let store = tempfile::tempdir().map_err(|e| format!("a store directory: {e}"))?;
        let config = if config.is_empty() {
            None
        } else {
            let file = store.path().join("nats.conf");
            std::fs::write(&file, config)
                .map_err(|e| format!("writing {}: {e}", file.display()))?;
            Some(file)
        };
        let mut server = Self {
            child: None,
            port,
            store,
            config,
        };
        server.run()?;
        Ok(server)
    }

    /// Runs the server (again), on the same port and store.
    pub fn run(&mut self) -> Result<(), String> {
        let binary = binary().ok_or("nats-server not found (apt-get install nats-server)")?;
        let mut command = Command::new(binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting nats-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server did not listen on port {} in 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the server at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
