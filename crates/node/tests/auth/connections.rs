//! The review's findings on connections, as the attacks: clients that hold half-sent headers
//! or idle keep-alive connections forever, and enough of them to starve `/healthz`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// A node with tokens whose connections are bounded by `limits`.
async fn bounded(data: &Path, limits: limes_node::ConnectionLimits) -> TestNode {
    let mut config = NodeConfig::new(data);
    config.connections = limits;
    TestNode::start(config).await
}

fn addr(node: &TestNode) -> String {
    node.url.trim_start_matches("http://").to_owned()
}

/// Waits (blocking, off the runtime) until the server closes `conn`; how long that took.
async fn closed_within(mut conn: TcpStream, limit: Duration) -> Option<Duration> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        conn.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(started.elapsed());
                }
                Err(_) => return None,
            }
        }
    })
    .await
    .unwrap()
}

/// Half-sent headers and idle keep-alive connections are closed after the header-read timeout
/// (300 ms here), where they were kept for as long as the client liked.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let data = tempfile::tempdir().unwrap();
    let limits = limes_node::ConnectionLimits {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let node = bounded(data.path(), limits).await;

    // Silent from the start: no byte, no preface.
    let silent = TcpStream::connect(addr(&node)).unwrap();
    let took = closed_within(silent, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a silent connection was kept");

    let mut slow = TcpStream::connect(addr(&node)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_within(slow, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a half-sent request kept its connection");

    let mut idle = TcpStream::connect(addr(&node)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let took = closed_within(idle, Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle keep-alive connection stayed open");
    node.stop().await;
}

/// A cap on connections, with headroom for `/healthz` and admins: eight at most here, the
/// last two kept. Clients holding six leave the deploy token out, the load balancer and the
/// admin in; a ninth connection is closed at once.
#[tokio::test]
async fn a_connection_flood_leaves_room_for_healthz_and_admin() {
    let data = tempfile::tempdir().unwrap();
    let limits = limes_node::ConnectionLimits {
        max_connections: 8,
        reserved: 2,
        header_read_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let node = bounded(data.path(), limits).await;
    let admin = admin_token(data.path());
    let deployer = token_for(&node, &admin, Role::Deploy).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(TcpStream::connect(addr(&node)).unwrap());
    }
    // Let the node accept them before the next ones arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each request below comes on a connection of its own (a fresh client) in the headroom.
    let fresh = |path: &str, token: Option<&str>| {
        let mut request = Client::new().get(node.at(path));
        if let Some(token) = token {
            request = request.bearer_auth(token.to_owned());
        }
        request.send()
    };
    let refused = fresh("/v1/functions", Some(&deployer)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_kind(refused).await, "too-many-connections");
    assert_eq!(
        fresh("/healthz", None).await.unwrap().status(),
        StatusCode::OK
    );
    let admin_call = fresh("/v1/tokens", Some(&admin)).await.unwrap();
    assert_eq!(admin_call.status(), StatusCode::OK);
    // Nobody keeps a connection in the headroom: it closes after its one request.
    assert_eq!(admin_call.headers()["connection"], "close");
    // The clients above are gone; give their connections a moment to close on both ends.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for _ in 0..2 {
        held.push(TcpStream::connect(addr(&node)).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ninth = TcpStream::connect(addr(&node)).unwrap();
    let took = closed_within(ninth, Duration::from_secs(2)).await;
    assert!(took.is_some(), "a connection past the cap was kept");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = send(&node, Method::GET, "/metrics", Some(&admin), vec![])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("limes_connections_refused_total 1"),
        "{metrics}"
    );
    node.stop().await;
}
