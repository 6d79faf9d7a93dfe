//! What a deploy may grant a function: the node's operator decides, not the deployer.
//!
//! A manifest may preopen host directories and open the network. On a node, both are bounded
//! by the operator's flags: `--allow-host-dir DIR` (only DIR or below it) and
//! `--allow-egress CIDR` (only addresses inside it, for `allow_bind` and `allow_connect`). Both
//! default to nothing. The one directory every function may have is its own private one,
//! `@data`, kept under the node's data directory and removed with the function.
//! `limes run`, a user on their own machine, is not bounded.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use limes_runtime::{Anchor, DirMount, NetworkPolicy};

use crate::error::NodeError;
use crate::manifest::Manifest;

pub use crate::files::PRIVATE_DIR;

/// The most a manifest may ask for on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Directories that a manifest may preopen, or anything below them, each held open so
    /// that what lies below is resolved beneath it (see [`Anchor`]).
    host_dirs: Vec<Anchor>,
    /// Networks that `allow_bind` and `allow_connect` entries must lie inside.
    egress: Vec<IpNet>,
}

impl Grants {
    /// Grants of `host_dirs` (each must exist; opened now, by their canonical paths, so that
    /// neither a symlink nor a later rename can widen them) and of `egress` networks.
    pub fn new(host_dirs: &[PathBuf], egress: Vec<IpNet>) -> Result<Self, String> {
        let host_dirs = host_dirs
            .iter()
            .map(|d| Anchor::open(d).map_err(|e| format!("--allow-host-dir {}: {e}", d.display())))
            .collect::<Result<_, _>>()?;
        Ok(Self { host_dirs, egress })
    }

    /// Refuses grants that overlap the node's data directory (`data_dir`, canonical): one that
    /// covers it would hand out the admin token, the registry and the compiled code; one inside
    /// it would hand out part of them.
    pub fn check_data_dir(&self, data_dir: &Path) -> Result<(), String> {
        match self
            .host_dirs
            .iter()
            .find(|d| data_dir.starts_with(d.path()) || d.path().starts_with(data_dir))
        {
            Some(d) => Err(format!(
                "--allow-host-dir {} overlaps the node's data directory {}: functions must \
                 never reach the node's tokens, registry or compiled code",
                d.path().display(),
                data_dir.display()
            )),
            None => Ok(()),
        }
    }

    /// Whether `manifest` stays within these grants; [`NodeError::NotPermitted`] names the
    /// first limit it crosses.
    pub fn check(&self, manifest: &Manifest) -> Result<(), NodeError> {
        for dir in &manifest.dirs {
            let mount: DirMount = dir.parse().map_err(NodeError::BadRequest)?;
            // Exactly the private dir's one spelling (a record from the cluster did not come
            // through the manifest parser): anything else must lie below a grant.
            if mount.host.as_os_str() != PRIVATE_DIR {
                self.anchor(&mount)?;
            }
        }
        for (key, list) in [
            ("allow_bind", &manifest.allow_bind),
            ("allow_connect", &manifest.allow_connect),
        ] {
            for entry in list {
                let net = NetworkPolicy::parse_entry(entry).map_err(NodeError::BadRequest)?;
                if !self.egress.iter().any(|allowed| allowed.contains(&net)) {
                    return Err(NodeError::NotPermitted(format!(
                        "{key}={entry} is outside the networks this node allows (--allow-egress: {})",
                        list_or_none(&self.egress)
                    )));
                }
            }
        }
        Ok(())
    }

    /// `mount` (a host path, not [`PRIVATE_DIR`]) tied to the grant it lies below, after
    /// checking that it opens there now: by the words of the path first, so that nothing is
    /// learned of the host's files outside the grants; then by opening it beneath the grant,
    /// where the kernel refuses every symlink and every step out. The runtime opens it the same
    /// way again at each instantiation.
    pub fn anchor(&self, mount: &DirMount) -> Result<DirMount, NodeError> {
        let host = &mount.host;
        let refuse = |why: String| {
            NodeError::NotPermitted(format!(
                "dir {}: {why} (--allow-host-dir: {}); a function's own directory is always \
                 allowed as {PRIVATE_DIR}::GUEST",
                host.display(),
                list_or_none(
                    &self
                        .host_dirs
                        .iter()
                        .map(|d| d.path().display())
                        .collect::<Vec<_>>()
                )
            ))
        };
        // The deepest grant that holds it: grants may nest.
        let (anchor, relative) = self
            .host_dirs
            .iter()
            .filter_map(|a| a.relative(host).map(|r| (a, r)))
            .max_by_key(|(a, _)| a.path().as_os_str().len())
            .ok_or_else(|| refuse("outside the directories this node allows".into()))?;
        match anchor.open_beneath(relative) {
            Ok(_) => Ok(DirMount {
                anchor: Some(anchor.clone()),
                ..mount.clone()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NodeError::BadRequest(
                format!("dir {}: no such directory", host.display()),
            )),
            Err(e) => Err(refuse(e.to_string())),
        }
    }
}

fn list_or_none<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(pairs: &[(&str, &str)]) -> Manifest {
        Manifest::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn nothing_is_granted_by_default_but_the_private_dir() {
        let grants = Grants::default();
        assert!(grants.check(&manifest(&[])).is_ok());
        assert!(grants.check(&manifest(&[("dir", "@data::/data")])).is_ok());
        let err = grants
            .check(&manifest(&[("dir", "/etc::/host:ro")]))
            .unwrap_err();
        assert_eq!(err.kind(), "not-permitted");
        assert!(err.to_string().contains("--allow-host-dir: none"), "{err}");
        let err = grants
            .check(&manifest(&[("allow_connect", "10.0.0.1")]))
            .unwrap_err();
        assert!(err.to_string().contains("allow_connect=10.0.0.1"), "{err}");
    }

    #[test]
    fn dirs_below_a_grant_pass_and_escapes_do_not() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(root.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), allowed.join("link")).unwrap();
        let grants = Grants::new(std::slice::from_ref(&allowed), vec![]).unwrap();
        let dir = |p: &Path| manifest(&[("dir", &format!("{}::/d", p.display()))]);
        let allowed = std::fs::canonicalize(allowed).unwrap();
        assert!(grants.check(&dir(&allowed)).is_ok());
        assert!(grants.check(&dir(&allowed.join("sub"))).is_ok());
        for escape in [
            allowed.join("../secret"),
            allowed.join("link"),
            "/tmp".into(),
        ] {
            assert_eq!(
                grants.check(&dir(&escape)).unwrap_err().kind(),
                "not-permitted",
                "{}",
                escape.display()
            );
        }
    }

    #[test]
    fn grants_overlapping_the_data_dir_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let data = root_path.join("data");
        let beside = root_path.join("beside");
        for d in [&data, &data.join("aot"), &beside] {
            std::fs::create_dir_all(d).unwrap();
        }
        for overlapping in [&root_path, &data, &data.join("aot")] {
            let grants = Grants::new(std::slice::from_ref(overlapping), vec![]).unwrap();
            let err = grants.check_data_dir(&data).unwrap_err();
            assert!(err.contains("data directory"), "{err}");
        }
        let grants = Grants::new(&[beside], vec![]).unwrap();
        assert!(grants.check_data_dir(&data).is_ok());
    }

    #[test]
    fn egress_must_lie_inside_a_granted_network() {
        let grants = Grants::new(&[], vec!["10.1.0.0/16".parse().unwrap()]).unwrap();
        assert!(
            grants
                .check(&manifest(&[("allow_connect", "10.1.2.3")]))
                .is_ok()
        );
        assert!(
            grants
                .check(&manifest(&[("allow_bind", "10.1.2.0/24")]))
                .is_ok()
        );
        assert!(
            grants
                .check(&manifest(&[("allow_connect", "10.0.0.0/8")]))
                .is_err()
        );
        assert!(
            grants
                .check(&manifest(&[("allow_connect", "0.0.0.0/0")]))
                .is_err()
        );
    }
}
