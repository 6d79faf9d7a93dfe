//! What the node tests share: the guests, a node on a loopback port, error bodies.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use limes_node::{Node, NodeConfig};
use reqwest::Client;
use serde_json::Value;

pub fn guest(name: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "guest {name} ({}): {e}; run `cargo xtask guests` first",
            path.display()
        )
    })
}

/// A node's configuration with its data in `dir` and no tokens (the auth tests set their own).
pub fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.auth = limes_node::AuthMode::None;
    config
}

pub struct TestNode {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestNode {
    pub async fn start(config: NodeConfig) -> Self {
        Self::serve(Node::open(config).unwrap()).await
    }

    /// Starts again on the data of a node just stopped, once its last tasks let go of it
    /// (a delivery that was ending, say), as a restarted process would.
    pub async fn restart(config: NodeConfig) -> Self {
        for _ in 0..50 {
            match Node::open(config.clone()) {
                Ok(node) => return Self::serve(node).await,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("the stopped node's data stayed in use for 5 s");
    }

    async fn serve(node: std::sync::Arc<Node>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(limes_node::serve(
            node,
            listener,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Self {
            url,
            stop: Some(stop),
            server,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap().unwrap();
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn deploy(
        &self,
        name: &str,
        guest_name: &str,
        query: &[(&str, &str)],
    ) -> reqwest::Response {
        Client::new()
            .put(self.at(&format!("/v1/functions/{name}")))
            .query(query)
            .body(guest(guest_name))
            .send()
            .await
            .unwrap()
    }

    pub async fn invoke(&self, name: &str, args: &str) -> reqwest::Response {
        Client::new()
            .post(self.at(&format!("/v1/functions/{name}/invoke")))
            .body(args.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// `GET path`, without a token, as JSON.
    pub async fn json(&self, path: &str) -> Value {
        reqwest::get(self.at(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.at("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub async fn error_kind(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The counter `key` of function `name`'s store `default`, as the operator API reads it (0 if
/// absent).
pub async fn count(node: &TestNode, name: &str, key: &str) -> u64 {
    let response = Client::new()
        .get(node.at(&format!("/v1/functions/{name}/kv/default/{key}")))
        .send()
        .await
        .unwrap();
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => 0,
        _ => response.text().await.unwrap().parse().unwrap(),
    }
}
