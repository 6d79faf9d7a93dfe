//! `limes workflow`: deploy workflows from a file (TOML or JSON), list, show and remove them,
//! start runs and read their records.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::CliError;
use crate::client::Api;

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Deploy a workflow from a file (.toml or .json); its name is the file's unless --name
    Deploy {
        file: PathBuf,
        /// The workflow's name [default: the file's name without its extension]
        #[arg(long)]
        name: Option<String>,
    },
    /// List the workflows of a node
    Ls {
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow: its steps and latest runs
    Show {
        name: String,
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
    /// Remove a workflow
    Rm { name: String },
    /// Start a run; PAYLOAD is the first step's args. Prints the run's id, or with --wait its
    /// record once it has ended
    Run {
        name: String,
        payload: String,
        /// Wait for the run to end, up to this long (e.g. 30s)
        #[arg(long, value_parser = limes_node::manifest::parse_duration)]
        wait: Option<Duration>,
    },
    /// A run's record: each step's status, node, attempts and error
    Runs {
        name: String,
        run: String,
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
}

fn bad(message: String) -> CliError {
    CliError::new("bad-request", message)
}

/// The workflow in `file`, as JSON.
fn read(file: &PathBuf) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::new("not-found", format!("{}: {e}", file.display())))?;
    if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", file.display())))
    } else {
        toml::from_str::<Value>(&text).map_err(|e| bad(format!("{}: {e}", file.display())))
    }
}

fn parse(text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::new("http", format!("the node's answer: {e}")))
}

/// A run's record as lines: the run, then a line per step.
fn print_run(record: &Value) {
    println!(
        "run {} of {}: {}",
        record["run"].as_str().unwrap_or("?"),
        record["workflow"].as_str().unwrap_or("?"),
        record["status"].as_str().unwrap_or("?")
    );
    // In the order they began.
    let mut steps: Vec<(&String, &Value)> =
        record["steps"].as_object().into_iter().flatten().collect();
    steps.sort_by_key(|(_, s)| s["started_ms"].as_u64());
    for (step, s) in steps {
        let took = match (s["started_ms"].as_u64(), s["ended_ms"].as_u64()) {
            (Some(a), Some(b)) => format!("{} ms", b.saturating_sub(a)),
            _ => "-".into(),
        };
        println!(
            "  {step:<16} {:<14} node {:<10} attempts {:<3} {took}{}",
            s["status"].as_str().unwrap_or("?"),
            s["node"].as_str().unwrap_or("?"),
            s["attempts"],
            s["error"]
                .as_str()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default()
        );
    }
}

pub async fn workflow(api: &Api, command: WorkflowCommand) -> Result<(), CliError> {
    match command {
        WorkflowCommand::Deploy { file, name } => {
            let spec = read(&file)?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .ok_or_else(|| bad(format!("{}: give --name", file.display())))?
                    .to_owned(),
            };
            let request = api
                .request(Method::PUT, &format!("/v1/workflows/{name}"))
                .json(&spec);
            let answer = parse(&api.send(request).await?)?;
            let steps = answer["workflow"]["steps"].as_array().map_or(0, Vec::len);
            println!("deployed workflow {name}: {steps} steps");
            Ok(())
        }
        WorkflowCommand::Ls { json } => {
            let text = api.send(api.request(Method::GET, "/v1/workflows")).await?;
            if json {
                println!("{text}");
                return Ok(());
            }
            let list = parse(&text)?;
            println!("{:<20} {:<9} {:<24} STEPS", "NAME", "PRIORITY", "TRIGGER");
            for w in list["workflows"].as_array().into_iter().flatten() {
                let steps: Vec<&str> = w["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["name"].as_str())
                    .collect();
                println!(
                    "{:<20} {:<9} {:<24} {}",
                    w["name"].as_str().unwrap_or("?"),
                    w["priority"].as_str().unwrap_or("regular"),
                    w["trigger"]["on_message"].as_str().unwrap_or("-"),
                    steps.join(", ")
                );
            }
            Ok(())
        }
        WorkflowCommand::Show { name, json } => {
            let text = api
                .send(api.request(Method::GET, &format!("/v1/workflows/{name}")))
                .await?;
            if json {
                println!("{text}");
                return Ok(());
            }
            let shown = parse(&text)?;
            let w = &shown["workflow"];
            println!(
                "workflow {name} ({}), max_deliver {}, retry_backoff {}",
                w["priority"].as_str().unwrap_or("regular"),
                w["max_deliver"],
                w["retry_backoff"].as_str().unwrap_or("?")
            );
            if let Some(subject) = w["trigger"]["on_message"].as_str() {
                println!("  trigger: messages of {subject}");
            }
            for s in w["steps"].as_array().into_iter().flatten() {
                let mut to: Vec<String> = s["next"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect();
                for (output, targets) in s["outputs"].as_object().into_iter().flatten() {
                    for t in targets.as_array().into_iter().flatten() {
                        to.push(format!("{}({output})", t.as_str().unwrap_or("?")));
                    }
                }
                println!(
                    "  {} [{}] → {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["function"].as_str().unwrap_or("?"),
                    if to.is_empty() {
                        "end".into()
                    } else {
                        to.join(", ")
                    }
                );
            }
            let runs: Vec<&str> = shown["recent_runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            if !runs.is_empty() {
                println!("  latest runs with a step here: {}", runs.join(" "));
            }
            Ok(())
        }
        WorkflowCommand::Rm { name } => api
            .send(api.request(Method::DELETE, &format!("/v1/workflows/{name}")))
            .await
            .map(drop),
        WorkflowCommand::Run {
            name,
            payload,
            wait,
        } => {
            let request = api
                .request(Method::POST, &format!("/v1/workflows/{name}/runs"))
                .body(payload);
            let started = parse(&api.send(request).await?)?;
            let run = started["run"].as_str().unwrap_or_default().to_owned();
            let Some(limit) = wait else {
                println!("{run}");
                return Ok(());
            };
            let since = Instant::now();
            loop {
                let path = format!("/v1/workflows/{name}/runs/{run}");
                if let Ok(text) = api.send(api.request(Method::GET, &path)).await {
                    let record = parse(&text)?;
                    if record["status"] != "running" {
                        print_run(&record);
                        return if record["status"] == "succeeded" {
                            Ok(())
                        } else {
                            Err(CliError::new("failed", format!("run {run} failed")))
                        };
                    }
                }
                if since.elapsed() > limit {
                    return Err(CliError::new(
                        "timeout",
                        format!("run {run} still running after {limit:?}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        WorkflowCommand::Runs { name, run, json } => {
            let path = format!("/v1/workflows/{name}/runs/{run}");
            let text = api.send(api.request(Method::GET, &path)).await?;
            if json {
                println!("{text}");
            } else {
                print_run(&parse(&text)?);
            }
            Ok(())
        }
    }
}
