//! Who may do what on a node: roles, what each kind of route needs, tokens, and the first
//! admin token. The check of each request is the API's (`api::guard`), which knows the routes.

pub mod tokens;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, tokens and the audit log included.
    Admin,
    /// Deploy, remove and roll back functions, and all that `invoke` may.
    Deploy,
    /// Invoke functions and read them.
    Invoke,
    /// Declare and end emergencies, and read the cluster.
    Emergency,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deploy, Role::Invoke, Role::Emergency];

    /// The role's name, as the API and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deploy => "deploy",
            Role::Invoke => "invoke",
            Role::Emergency => "emergency",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; roles: admin, deploy, invoke, emergency"))
    }
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone may call it.
    Nothing,
    /// A valid token of any role.
    AnyToken,
    /// `invoke`, `deploy` or `admin`.
    Invoke,
    /// `deploy` or `admin`.
    Deploy,
    /// `emergency` or `admin`.
    Emergency,
    /// `admin`.
    Admin,
    /// Invoking one function: nothing if it was deployed `public=true`, else as [`Need::Invoke`].
    Function,
}

impl Need {
    /// The roles that satisfy this need (every role for [`Need::Nothing`] and
    /// [`Need::AnyToken`]).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Need::Nothing | Need::AnyToken => &Role::ALL,
            Need::Invoke | Need::Function => &[Role::Admin, Role::Deploy, Role::Invoke],
            Need::Deploy => &[Role::Admin, Role::Deploy],
            Need::Emergency => &[Role::Admin, Role::Emergency],
            Need::Admin => &[Role::Admin],
        }
    }

    pub(crate) fn describe(self) -> String {
        let names: Vec<&str> = self.roles().iter().map(|r| r.as_str()).collect();
        match self {
            Need::AnyToken => "a token of any role".into(),
            _ => format!("a token with the role {}", names.join(" or ")),
        }
    }
}

/// How a node checks requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every route but the public ones needs a bearer token with the right role.
    #[default]
    Tokens,
    /// No checks at all: for a node that listens on loopback only (enforced by
    /// [`crate::serve`]).
    None,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tokens" => Ok(AuthMode::Tokens),
            "none" => Ok(AuthMode::None),
            other => Err(format!("unknown auth mode {other:?}; use tokens or none")),
        }
    }
}

/// Who made a request, as the handlers and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `anonymous` on a node without auth, `public` for a call of a public
    /// function without a token.
    pub name: String,
    /// The token's role, if a token was checked.
    pub role: Option<Role>,
}

/// The file, in the data directory, that holds a node's first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// On a node's first start (no token known), makes an admin token named `admin-<node id>` and
/// writes it to `<data_dir>/admin-token`, readable by the node's user only. The file is written
/// before the record, so that a crash in between leaves no token that nobody holds.
pub(crate) fn bootstrap(
    store: &tokens::TokenStore,
    data_dir: &Path,
    node_id: &str,
) -> Result<(), NodeError> {
    if !store.is_empty() {
        return Ok(());
    }
    let new = tokens::mint(&format!("admin-{node_id}"), Role::Admin, "bootstrap", None)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        // A temporary file is created with mode 0600; the rename makes it appear whole.
        let mut file = tempfile::NamedTempFile::new_in(data_dir)?;
        writeln!(file, "{}", new.token)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| NodeError::Storage(format!("writing {}: {e}", path.display())))?;
    store.put(&new.record)?;
    tracing::warn!(
        token = %new.record.name,
        path = %path.display(),
        "first start: an admin token was written to this file (readable by this user only)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_needs_nest() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Need::Deploy.roles().contains(&Role::Deploy));
        assert!(!Need::Deploy.roles().contains(&Role::Invoke));
        assert!(Need::Invoke.roles().contains(&Role::Deploy));
        assert!(!Need::Emergency.roles().contains(&Role::Deploy));
        assert_eq!(Need::Admin.roles(), &[Role::Admin]);
    }
}
