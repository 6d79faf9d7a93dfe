//! `limes cluster status` and `limes emergency declare|status|end`, talking to any node of a
//! cluster.

use clap::{Args, Subcommand};
use reqwest::Method;

use crate::CliError;
use crate::client::Api;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The cluster as the node sees it: NATS connection, members and their load, emergency.
    Status,
}

#[derive(Subcommand)]
pub enum EmergencyCommand {
    /// Give urgent functions priority everywhere and release nodes for them.
    Declare(DeclareArgs),
    /// Show the plan in force.
    Status,
    /// End the emergency and restore normal placement.
    End,
}

#[derive(Args)]
pub struct DeclareArgs {
    /// Urgent functions, comma-separated
    #[arg(long, value_delimiter = ',', required = true, value_name = "FN,...")]
    urgent: Vec<String>,
    /// Only nodes within RADIUS of (X, Y) may be released [default: anywhere]
    #[arg(long, value_name = "X,Y,R", value_delimiter = ',', num_args = 1)]
    area: Option<Vec<f64>>,
    /// Bound on the round-trip latency that consolidation may add to regular work, in ms
    #[arg(long, value_name = "MS", default_value_t = limes_cluster::plan::DEFAULT_MAX_ADDED_MS)]
    max_added_ms: f64,
}

pub fn print_json(body: &str) {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{body}"),
    }
}

pub async fn cluster(api: &Api, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status => {
            print_json(&api.send(api.request(Method::GET, "/v1/cluster")).await?);
        }
    }
    Ok(())
}

pub async fn emergency(api: &Api, command: EmergencyCommand) -> Result<(), CliError> {
    let endpoint = "/v1/emergency";
    let request = match command {
        EmergencyCommand::Declare(args) => {
            let area = match args.area.as_deref() {
                None => None,
                Some([x, y, r]) => Some([*x, *y, *r]),
                Some(other) => {
                    return Err(CliError::new(
                        "bad-request",
                        format!("--area takes X,Y,R; got {} numbers", other.len()),
                    ));
                }
            };
            let body = serde_json::json!({
                "urgent": args.urgent, "area": area, "max_added_ms": args.max_added_ms,
            });
            api.request(Method::POST, endpoint).json(&body)
        }
        EmergencyCommand::Status => api.request(Method::GET, endpoint),
        EmergencyCommand::End => api.request(Method::DELETE, endpoint),
    };
    print_json(&api.send(request).await?);
    Ok(())
}
