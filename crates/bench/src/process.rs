//! Servers under test, run as child processes that are killed when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process serving HTTP on `port`.
pub struct Server {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// The `Authorization` header its requests need, if any.
    pub authorization: Option<String>,
}

/// `Bearer <token>` with the admin token that a `limes serve` node wrote into `data_dir` on its
/// first start.
pub fn admin_bearer(data_dir: &std::path::Path) -> Result<String, String> {
    let file = data_dir.join(limes_node::auth::ADMIN_TOKEN_FILE);
    let token = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(format!("Bearer {}", token.trim()))
}

impl Server {
    /// Starts `command` (which must listen on `port`) and waits until `ready_path` answers.
    pub async fn start(mut command: Command, port: u16, ready_path: &str) -> Result<Self, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        let mut server = Self {
            child,
            port,
            authorization: None,
        };
        let url = server.url(ready_path);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{program} exited early ({status})"));
            }
            if reqwest::get(&url).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop();
        Err(format!(
            "{program} did not answer on port {port} within 30 s"
        ))
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    /// Its loopback address.
    pub fn addr(&self) -> std::net::SocketAddr {
        (std::net::Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The first `name` on PATH that can be executed.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
