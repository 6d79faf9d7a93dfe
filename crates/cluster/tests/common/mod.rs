//! What the cluster tests share: a `nats-server` per test, nodes each in their own runtime,
//! and calls to them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use limes_cluster::ClusterConfig;
use limes_cluster::server::NatsServer;
use limes_node::{Node, NodeConfig};

pub fn guest(name: &str) -> Vec<u8> {
    let path = workloads_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

pub fn workloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` for one test, or `None` (the test is skipped, and says so) when there
/// is none and `LIMES_REQUIRE_NATS` is not set.
pub fn nats(test: &str) -> Option<NatsServer> {
    if limes_cluster::server::binary().is_none() {
        if std::env::var_os("LIMES_REQUIRE_NATS").is_some() {
            panic!("nats-server is required (LIMES_REQUIRE_NATS) but not installed");
        }
        eprintln!("SKIPPED {test}: nats-server not installed (apt-get install nats-server)");
        return None;
    }
    Some(NatsServer::start().unwrap())
}

/// One node: its own runtime thread, HTTP port and data directory.
pub struct TestNode {
    pub runtime: Option<tokio::runtime::Runtime>,
    pub port: u16,
    pub data: tempfile::TempDir,
}

impl TestNode {
    pub fn start(nats: &NatsServer, id: &str, x: f64, capacity: u32) -> Self {
        Self::start_with(&nats.url(), id, x, capacity, |node, _| {
            node.auth = limes_node::AuthMode::None;
        })
        .unwrap()
    }

    /// A node whose settings `configure` may change first; the error of joining, if any.
    pub fn start_with(
        url: &str,
        id: &str,
        x: f64,
        capacity: u32,
        configure: impl FnOnce(&mut NodeConfig, &mut ClusterConfig),
    ) -> Result<Self, limes_node::NodeError> {
        let data = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let mut config = NodeConfig::new(data.path());
        config.node_id = id.into();
        config.capacity = capacity;
        config.pool.max_instances = 16;
        let mut cluster = ClusterConfig::new(url, [x, 0.0]);
        cluster.listen = Some(format!("http://127.0.0.1:{port}"));
        configure(&mut config, &mut cluster);
        // The test's own runtime is running on this thread; start the node's from another.
        let started = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        let node: Arc<Node> = Node::open(config).unwrap();
                        limes_cluster::join(&node, cluster).await?;
                        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                            .await
                            .unwrap();
                        tokio::spawn(limes_node::serve(
                            node,
                            listener,
                            std::future::pending(),
                            Duration::ZERO,
                        ));
                        Ok::<(), limes_node::NodeError>(())
                    })
                })
                .join()
                .unwrap()
        });
        if let Err(e) = started {
            // Dropping a runtime inside the test's async context would panic.
            runtime.shutdown_background();
            return Err(e);
        }
        Ok(Self {
            runtime: Some(runtime),
            port,
            data,
        })
    }

    /// The admin token the node wrote to its data dir on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops the node at once, as a crash would: no goodbye to the cluster.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes a, b, c at x = 0, 1 and 5 (b is nearest to a), two slots each.
pub fn three(nats: &NatsServer) -> [TestNode; 3] {
    [
        TestNode::start(nats, "a", 0.0, 2),
        TestNode::start(nats, "b", 1.0, 2),
        TestNode::start(nats, "c", 5.0, 2),
    ]
}

pub struct Answer {
    pub status: u16,
    pub node: Option<String>,
    pub forward_us: Option<u64>,
    pub body: String,
}

pub async fn invoke(node: &TestNode, name: &str, args: &str) -> Answer {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/v1/functions/{name}/invoke")))
        .body(args.to_owned())
        .send()
        .await
        .unwrap();
    let header = |h: &str| {
        response
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: response.status().as_u16(),
        node: header("x-limes-node"),
        forward_us: header("x-limes-forward-us").and_then(|v| v.parse().ok()),
        body: response.text().await.unwrap(),
    }
}

pub async fn deploy(node: &TestNode, name: &str, guest_name: &str) {
    let response = reqwest::Client::new()
        .put(node.url(&format!("/v1/functions/{name}?max_concurrency=16")))
        .body(guest(guest_name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

pub async fn json(node: &TestNode, path: &str) -> serde_json::Value {
    reqwest::get(node.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn members(node: &TestNode) -> Vec<String> {
    let status = json(node, "/v1/cluster").await;
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

/// `GET path` on `node` with `token`.
pub async fn get_with(node: &TestNode, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The same, as JSON.
pub async fn json_with(node: &TestNode, path: &str, token: &str) -> serde_json::Value {
    get_with(node, path, token).await.json().await.unwrap()
}

/// Polls `check` every 100 ms until it holds, for up to `limit`; returns how long it took.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn all_see(nodes: &[&TestNode], expected: usize) {
    for node in nodes {
        within(Duration::from_secs(10), "membership", || async {
            members(node).await.len() == expected
        })
        .await;
    }
}

/// `node`'s metrics, as text.
pub async fn metrics(node: &TestNode) -> String {
    reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
