//! `limes cluster status` and `limes emergency declare|status|end`, talking to any node of a
//! cluster.

use clap::{Args, Subcommand};
use reqwest::Method;

use crate::CliError;
use crate::client::{Api, print_json};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The cluster as the node sees it: NATS connection, members and their load, emergency.
    Status {
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
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

pub async fn cluster(api: &Api, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status { json } => {
            let body = api.send(api.request(Method::GET, "/v1/cluster")).await?;
            if json {
                print_json(&body);
            } else {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                print!("{}", status_table(&v));
            }
        }
    }
    Ok(())
}

/// `GET /v1/cluster` for people: a line on the cluster, then a row per member.
fn status_table(v: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    if v["mode"] != "cluster" {
        return "standalone: this node is in no cluster (limes serve --cluster URL)\n".into();
    }
    let plan = &v["emergency"]["plan"];
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(text).collect()
    };
    let released = names(&plan["released"]);
    let emergency = if v["emergency"]["active"] == true {
        format!(
            "urgent {} (decided by {}; {} released)",
            names(&plan["declaration"]["urgent"]).join(","),
            text(&plan["decided_by"]),
            released.len()
        )
    } else {
        "none".into()
    };
    let mut out = format!(
        "cluster at {} ({}); this node: {}; emergency: {emergency}\n",
        text(&v["nats"]),
        text(&v["state"]),
        text(&v["node"])
    );
    if let Some(error) = v["last_error"].as_str() {
        out += &format!("last error: {error}\n");
    }
    out += &format!(
        "{:<20} {:<9} {:>16} {:>10} {:<14} LISTEN\n",
        "MEMBER", "ROLE", "IN FLIGHT/CAP", "FORWARDED", "LOCATION"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let id = text(&m["id"]);
        let role = match (v["emergency"]["active"] == true, released.contains(&id)) {
            (false, _) => "member",
            (true, true) => "released",
            (true, false) => "keeper",
        };
        let forwarded: u64 = m["forwarded"]
            .as_object()
            .map_or(0, |f| f.values().filter_map(|n| n.as_u64()).sum());
        let location = m["location"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let me = if m["id"] == v["node"] { "*" } else { "" };
        out += &format!(
            "{:<20} {:<9} {:>16} {:>10} {:<14} {}\n",
            format!("{id}{me}"),
            role,
            format!(
                "{}/{}",
                m["in_flight"].as_u64().unwrap_or(0),
                m["capacity"].as_u64().unwrap_or(0)
            ),
            forwarded,
            location,
            m["listen"].as_str().unwrap_or("-"),
        );
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_table_has_a_row_per_member_with_its_role() {
        let v = serde_json::json!({
            "mode": "cluster", "nats": "nats://127.0.0.1:4222", "state": "connected", "node": "a",
            "members": [
                {"id": "a", "location": [0.0, 0.0], "capacity": 64, "in_flight": 3, "listen": "http://127.0.0.1:1", "forwarded": {"b": 5, "c": 2}},
                {"id": "b", "location": [1.0, 2.5], "capacity": 8, "in_flight": 0, "listen": null},
            ],
            "emergency": {"active": true, "plan": {"declaration": {"urgent": ["siren"]}, "released": ["b"], "keepers": ["a"], "decided_by": "a"}},
            "last_error": null,
        });
        let table = super::status_table(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("emergency: urgent siren (decided by a; 1 released)"),
            "{table}"
        );
        assert!(lines[1].starts_with("MEMBER"), "{table}");
        let a: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            a,
            ["a*", "keeper", "3/64", "7", "0.0,0.0", "http://127.0.0.1:1"]
        );
        let b: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(b, ["b", "released", "0/8", "0", "1.0,2.5", "-"]);
        assert!(
            super::status_table(&serde_json::json!({"mode": "standalone"}))
                .starts_with("standalone")
        );
    }
}
