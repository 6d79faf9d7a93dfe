//! The dashboard (`GET /ui`) in a real browser: headless Chromium driven through chromedriver,
//! against real nodes on a real `nats-server`. Skipped, saying why, where Chromium or
//! chromedriver is missing, unless `LIMES_REQUIRE_BROWSER` is set (as `scripts/test` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, free_port, guest, json_with, nats, workloads_dir};
use fantoccini::{Client, ClientBuilder, Locator};

/// How long the page may take to show what an action should change (it polls every second).
const PATIENCE: Duration = Duration::from_secs(20);

/// The three nodes of the cluster the browser looks at.
const IDS: [&str; 3] = ["north", "harbour", "hill"];

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` after saying why the test is skipped.
fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, _) => {
            let missing = if c.is_none() {
                "chromium"
            } else {
                "chromedriver"
            };
            assert!(
                std::env::var_os("LIMES_REQUIRE_BROWSER").is_none(),
                "{missing} is required (LIMES_REQUIRE_BROWSER) but not installed"
            );
            println!("SKIPPED {test}: no {missing} (apt-get install chromium chromium-driver)");
            None
        }
    }
}

async fn session(chromium: &Path, chromedriver: &Path) -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            // Root in a container needs --no-sandbox; the size is the screenshot's.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }),
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let connected =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
        match connected {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the text of `css` satisfies `ok`; returns it.
async fn text_of(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        if let Ok(e) = client.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        assert!(Instant::now() < deadline, "{css}: still {last:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until `css` matches `n` elements.
async fn count(client: &Client, css: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len());
        if found == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css}: {found} elements, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

fn start(nats: &limes_cluster::server::NatsServer, id: &str, location: [f64; 2]) -> TestNode {
    TestNode::start_with(&nats.url(), id, location[0], 4, |_, cluster| {
        cluster.location = location;
    })
    .unwrap()
}

/// Where the screenshots go: `target/dashboard/`, for the README's to be copied from.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deploys_invokes_watches_the_map_and_runs_an_emergency_in_a_browser() {
    let test = "an_operator_deploys_invokes_watches_the_map_and_runs_an_emergency_in_a_browser";
    let Some((chromium, chromedriver)) = browser(test) else {
        return;
    };
    let Some(nats) = nats(test) else { return };
    let nodes = [
        start(&nats, IDS[0], [0.0, 4.0]),
        start(&nats, IDS[1], [1.0, 0.0]),
        start(&nats, IDS[2], [6.0, 2.0]),
    ];
    let admin = nodes[0].admin_token();
    let (_driver, client) = session(&chromium, &chromedriver).await;
    client.goto(&nodes[0].url("/ui")).await.unwrap();

    // A wrong token is refused with the node's message, not a blank page.
    type_into(&client, "#token", "limes_0000_nottoken").await;
    click(&client, "#login-button").await;
    text_of(&client, "#error", |t| t.contains("401")).await;
    // The right one logs in; it never appears in the address.
    type_into(&client, "#token", &admin).await;
    click(&client, "#login-button").await;
    text_of(&client, "#whoami", |t| t == "node north").await;
    assert!(
        !client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("limes_")
    );

    // Deploy through the form: the component is a file the browser uploads.
    type_into(&client, "#deploy-name", "echo").await;
    let wasm = workloads_dir().join("echo.wasm").canonicalize().unwrap();
    client
        .find(Locator::Css("#deploy-file"))
        .await
        .unwrap()
        .send_keys(&wasm.to_string_lossy())
        .await
        .unwrap();
    click(&client, "#deploy-button").await;
    text_of(&client, "#deploy-status", |t| {
        t.starts_with("deployed echo")
    })
    .await;
    text_of(&client, "tr[data-function=echo] td.invocations", |t| {
        t == "0"
    })
    .await;

    // Invoke it: the result, the timings and the node that ran it.
    click(&client, "#tab-invoke").await;
    count(&client, "#invoke-name option", 1).await;
    type_into(&client, "#invoke-args", "flood warning: north bank").await;
    click(&client, "#invoke-button").await;
    text_of(&client, "#invoke-result", |t| {
        t == "flood warning: north bank"
    })
    .await;
    let timings = text_of(&client, "#invoke-timings", |t| t.contains("ran on node")).await;
    assert!(
        timings.contains("cold start") && timings.contains("execution"),
        "{timings}"
    );

    // A function with state shows what its store holds.
    let http = reqwest::Client::new();
    let deployed = http
        .put(nodes[0].url("/v1/functions/tally?kv=default"))
        .bearer_auth(&admin)
        .body(guest("kv-script"))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    let invoked = http
        .post(nodes[0].url("/v1/functions/tally/invoke"))
        .bearer_auth(&admin)
        .body("open default; set alarms 3")
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.text().await.unwrap(), "ok;ok");

    // The counter moved.
    click(&client, "#tab-functions").await;
    text_of(&client, "tr[data-function=echo] td.invocations", |t| {
        t == "1"
    })
    .await;
    text_of(&client, "tr[data-function=tally] td.state", |t| {
        t.starts_with("default: 1 key")
    })
    .await;
    std::fs::write(
        shots().join("functions.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // A workflow shows as a graph of its steps, each with this node's counters.
    for (name, store) in [
        ("detect", ""),
        ("classify", ""),
        ("alert", "&kv=alerts"),
        ("archive", "&kv=archive"),
    ] {
        let deployed = http
            .put(nodes[0].url(&format!("/v1/functions/{name}?env=STEP%3D{name}{store}")))
            .bearer_auth(&admin)
            .body(guest("flood"))
            .send()
            .await
            .unwrap();
        assert_eq!(deployed.status(), 201);
    }
    let spec = serde_json::json!({"priority": "urgent", "steps": [
        {"name": "detect", "function": "detect", "next": ["classify"]},
        {"name": "classify", "function": "classify", "outputs": {"alert": ["alert"], "record": ["archive"]}},
        {"name": "alert", "function": "alert"},
        {"name": "archive", "function": "archive"}
    ]});
    let put = http
        .put(nodes[0].url("/v1/workflows/flood"))
        .bearer_auth(&admin)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    click(&client, "#tab-workflows").await;
    count(&client, "div[data-workflow=flood] g.step", 4).await;
    text_of(&client, "div[data-workflow=flood] h3", |t| {
        t == "flood · urgent"
    })
    .await;
    text_of(
        &client,
        "div[data-workflow=flood] g[data-step=detect] text.counters",
        |t| t.starts_with("0 acked"),
    )
    .await;
    let started = http
        .post(nodes[0].url("/v1/workflows/flood/runs"))
        .bearer_auth(&admin)
        .body("ward-3 5.6")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    // Some node of three ran each step; the counters add up over the nodes, so the page of
    // the node that ran `detect` says so. Read which one from the run's record.
    let run = started.json::<serde_json::Value>().await.unwrap()["run"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ran_on = None;
    for _ in 0..100 {
        let record: serde_json::Value = http
            .get(nodes[0].url(&format!("/v1/workflows/flood/runs/{run}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if record["status"] == "succeeded"
            && record["steps"].as_object().map(|s| s.len()) == Some(4)
        {
            ran_on = record["steps"]["detect"]["node"]
                .as_str()
                .map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ran_on = ran_on.expect("the run succeeded within 10 s");
    let index = IDS.iter().position(|id| *id == ran_on).unwrap();
    if index == 0 {
        text_of(
            &client,
            "div[data-workflow=flood] g[data-step=detect] text.counters",
            |t| t.starts_with("1 acked"),
        )
        .await;
    } else {
        let stats: serde_json::Value = http
            .get(nodes[index].url("/v1/stats"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let detect = &stats["workflows"][0]["steps"][0];
        assert_eq!(
            (detect["name"].as_str(), detect["acked"].as_u64()),
            (Some("detect"), Some(1)),
            "{stats}"
        );
    }
    // The graph, with each step's counters on this node.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    std::fs::write(
        shots().join("workflows.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // Live load shows the node's capacity.
    click(&client, "#tab-load").await;
    text_of(&client, "#load-inflight", |t| t.ends_with("/ 4")).await;

    // Three nodes on the map, none released yet.
    click(&client, "#tab-cluster").await;
    count(&client, "#cluster-map g.node", 3).await;
    count(&client, "#cluster-map g.node.released", 0).await;

    // A regular function beside it, deployed through the API, for the forwarded calls below.
    let api = |node: &TestNode, method: reqwest::Method, path: &str| {
        reqwest::Client::new()
            .request(method, node.url(path))
            .bearer_auth(node.admin_token())
    };
    let deployed = api(&nodes[0], reqwest::Method::PUT, "/v1/functions/relay")
        .body(std::fs::read(&wasm).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);

    // A bad declaration is shown as the node's message.
    click(&client, "#tab-emergency").await;
    text_of(&client, "#emergency-status", |t| t.contains("No emergency")).await;
    type_into(&client, "#emergency-urgent", "Not A Name").await;
    click(&client, "#emergency-declare").await;
    text_of(&client, "#error", |t| {
        t.contains("not a valid function name")
    })
    .await;
    // A real one: the plan, and who declared it.
    type_into(&client, "#emergency-urgent", "echo").await;
    type_into(&client, "#emergency-bound", "20").await;
    click(&client, "#emergency-declare").await;
    text_of(&client, "#emergency-status", |t| {
        t.contains("Emergency in force")
    })
    .await;
    text_of(&client, "#emergency-declared-by", |t| {
        t.contains("declared by admin-north")
    })
    .await;
    text_of(&client, "#error", |t| t.is_empty()).await;

    // The map marks the released nodes.
    click(&client, "#tab-cluster").await;
    let released = {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let n = client
                .find_all(Locator::Css("#cluster-map g.node.released"))
                .await
                .map_or(0, |v| v.len());
            if n > 0 {
                break n;
            }
            assert!(Instant::now() < deadline, "no node marked released");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    assert!(released < 3, "a keeper must remain");
    text_of(&client, "#cluster-state", |t| t.contains("released")).await;

    // A regular call that reaches a released node runs on a keeper, and the map draws the arrow.
    let plan = json_with(&nodes[0], "/v1/emergency", &admin).await;
    let from = plan["plan"]["released"][0].as_str().unwrap().to_owned();
    let sender = &nodes[IDS.iter().position(|id| *id == from).unwrap()];
    let answer = api(sender, reqwest::Method::POST, "/v1/functions/relay/invoke")
        .body("road closed at the bridge")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ran_on = answer.headers()["x-limes-node"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(ran_on, from, "a released node forwards regular work");
    count(
        &client,
        &format!("#cluster-map line.forward[data-from={from}][data-to={ran_on}]"),
        1,
    )
    .await;
    text_of(
        &client,
        &format!("tr[data-node={from}] td.forwarded"),
        |t| t == format!("{ran_on}: 1"),
    )
    .await;
    std::fs::write(
        shots().join("cluster.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // End it: nothing is released any more.
    click(&client, "#tab-emergency").await;
    click(&client, "#emergency-end").await;
    text_of(&client, "#emergency-status", |t| t.contains("No emergency")).await;
    click(&client, "#tab-cluster").await;
    count(&client, "#cluster-map g.node.released", 0).await;

    client.close().await.unwrap();
}
