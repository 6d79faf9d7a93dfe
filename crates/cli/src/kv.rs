//! `limes kv`: a function's key-value stores on a node, from outside (role `deploy`).

use std::io::Write as _;

use clap::Subcommand;
use reqwest::Method;

use crate::CliError;
use crate::client::{Api, check};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (its bytes, as stored)
    Get {
        /// The function's name
        name: String,
        /// The store, as the function opens it
        store: String,
        key: String,
    },
    /// Set a key's value
    Set {
        /// The function's name
        name: String,
        /// The store, as the function opens it
        store: String,
        key: String,
        value: String,
    },
    /// Remove a key
    Rm {
        /// The function's name
        name: String,
        /// The store, as the function opens it
        store: String,
        key: String,
    },
    /// List a store's keys, in order, a line each
    Ls {
        /// The function's name
        name: String,
        /// The store, as the function opens it
        store: String,
        /// Print the node's JSON pages as they are
        #[arg(long)]
        json: bool,
    },
}

/// A path segment with every byte but the unreserved ones percent-encoded, so that a key may
/// hold `/`, `?`, spaces or anything else.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/v1/functions/NAME/kv/STORE[/KEY]`.
fn path(name: &str, store: &str, key: Option<&str>) -> String {
    let mut path = format!("/v1/functions/{}/kv/{}", escape(name), escape(store));
    if let Some(key) = key {
        path.push('/');
        path.push_str(&escape(key));
    }
    path
}

pub async fn kv(api: &Api, command: KvCommand) -> Result<(), CliError> {
    match command {
        KvCommand::Get { name, store, key } => {
            let response = api
                .request(Method::GET, &path(&name, &store, Some(&key)))
                .send()
                .await
                .map_err(|e| crate::tls::send_error(api.base(), &e))?;
            if !response.status().is_success() {
                // `check` makes the node's error of it.
                return check(Ok(response), api.base()).await.map(drop);
            }
            let value = response
                .bytes()
                .await
                .map_err(|e| CliError::new("http", e.to_string()))?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| CliError::new("io", e.to_string()))
        }
        KvCommand::Set {
            name,
            store,
            key,
            value,
        } => {
            let request = api
                .request(Method::PUT, &path(&name, &store, Some(&key)))
                .body(value);
            api.send(request).await.map(drop)
        }
        KvCommand::Rm { name, store, key } => {
            let request = api.request(Method::DELETE, &path(&name, &store, Some(&key)));
            api.send(request).await.map(drop)
        }
        KvCommand::Ls { name, store, json } => {
            let mut cursor: Option<String> = None;
            loop {
                let mut request = api.request(Method::GET, &path(&name, &store, None));
                if let Some(c) = &cursor {
                    request = request.query(&[("cursor", c)]);
                }
                let text = api.send(request).await?;
                if json {
                    println!("{text}");
                }
                let page: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| CliError::new("http", format!("the node's listing: {e}")))?;
                if !json {
                    for key in page["keys"].as_array().into_iter().flatten() {
                        println!("{}", key.as_str().unwrap_or_default());
                    }
                }
                match page["cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => return Ok(()),
                }
            }
        }
    }
}
