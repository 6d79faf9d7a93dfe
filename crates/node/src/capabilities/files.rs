//! Files: host directories preopened for a guest (`wasi:filesystem`).
//!
//! A manifest names them with `dir=HOST::GUEST[:ro]`. On a node, `HOST` is bounded by the
//! operator: only a directory at or below an `--allow-host-dir` (default none), opened beneath
//! that held-open grant at every instantiation so that no symlink or rename leads elsewhere. The
//! one directory every function may have is its own, [`PRIVATE_DIR`], kept under the node's
//! data directory and removed with the function. `limes run`, a user on their own machine, is
//! not bounded.

use std::path::{Path, PathBuf};

use clap::Args;
use limes_runtime::{Anchor, DirMount, Policy};
use serde::{Deserialize, Serialize};

use super::{Capability, Place, list_or_none};
use crate::error::NodeError;

/// The host side of a `dir` entry that names the function's private directory:
/// `dir=@data::/data` preopens it at `/data`. It is the only spelling: the manifest refuses
/// any other host path that is not absolute.
pub const PRIVATE_DIR: &str = "@data";

/// The manifest's section: preopened directories, as `HOST::GUEST[:ro]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Files {
    #[serde(default)]
    pub dirs: Vec<String>,
}

/// The directories a manifest may preopen, or anything below them, each held open so that
/// what lies below is resolved beneath it (see [`Anchor`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    host_dirs: Vec<Anchor>,
}

impl Files {
    /// Whether a `dir` entry preopens the function's private directory.
    pub fn uses_private_dir(&self) -> bool {
        self.dirs.iter().any(|d| {
            d.parse::<DirMount>()
                .is_ok_and(|m| m.host.as_os_str() == PRIVATE_DIR)
        })
    }
}

impl Capability for Files {
    const KEYS: &'static [(&'static str, &'static str)] = &[(
        "dir",
        "Preopen a host directory: HOST::GUEST, or HOST::GUEST:ro read-only; HOST is @data (the function's own) or lies below an --allow-host-dir; repeatable",
    )];
    type Grant = Grant;

    fn parse(&mut self, _key: &str, value: &str) -> Result<(), String> {
        check_dir_host(&value.parse::<DirMount>()?)?;
        self.dirs.push(value.to_owned());
        Ok(())
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        self.dirs.iter().map(|d| ("dir", d.clone())).collect()
    }

    fn check(&self, grant: &Grant) -> Result<(), NodeError> {
        for dir in &self.dirs {
            let mount: DirMount = dir.parse().map_err(NodeError::BadRequest)?;
            // Exactly the private dir's one spelling (a record from the cluster did not come
            // through the manifest parser): anything else must lie below a grant.
            if mount.host.as_os_str() != PRIVATE_DIR {
                grant.anchor(&mount)?;
            }
        }
        Ok(())
    }

    /// Ties every directory to the held-open directory it is resolved beneath at each
    /// instantiation: the private one (created now, mode 0700, if the manifest preopens it) to
    /// the node's `functions` directory, the others to their grant.
    fn apply(&self, grant: &Grant, place: &Place, policy: &mut Policy) -> Result<(), NodeError> {
        if self.uses_private_dir() {
            crate::files::create_private_dir(place.private_dir).map_err(|e| {
                NodeError::Storage(format!("creating {}: {e}", place.private_dir.display()))
            })?;
        }
        for dir in &self.dirs {
            let mount: DirMount = dir.parse().map_err(NodeError::BadRequest)?;
            policy.dirs.push(if mount.host.as_os_str() == PRIVATE_DIR {
                DirMount {
                    host: place.private_dir.to_owned(),
                    anchor: Some(place.functions_dir.clone()),
                    ..mount
                }
            } else {
                grant.anchor(&mount)?
            });
        }
        Ok(())
    }
}

/// A node's `dir` host is an absolute path or exactly [`PRIVATE_DIR`]: `@data/`, `@data/.` and
/// other spellings would be taken for the private directory by one reader and for a path
/// relative to the node's working directory by another.
fn check_dir_host(mount: &DirMount) -> Result<(), String> {
    let host = mount.host.as_os_str();
    if host == PRIVATE_DIR || mount.host.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "dir {}: the host side must be an absolute path or exactly {PRIVATE_DIR} (the \
             function's own directory)",
            mount.host.display(),
        ))
    }
}

impl Grant {
    /// A grant of `host_dirs` (each must exist; opened now, by their canonical paths, so that
    /// neither a symlink nor a later rename can widen them).
    pub fn new(host_dirs: &[PathBuf]) -> Result<Self, String> {
        let host_dirs = host_dirs
            .iter()
            .map(|d| Anchor::open(d).map_err(|e| format!("--allow-host-dir {}: {e}", d.display())))
            .collect::<Result<_, _>>()?;
        Ok(Self { host_dirs })
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

/// `limes deploy` and `limes run`: `--dir`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    /// Preopen a host directory: HOST::GUEST, or HOST::GUEST:ro for read-only
    #[arg(long = "dir", value_name = "HOST::GUEST[:ro]", value_parser = str::parse::<DirMount>)]
    pub dirs: Vec<DirMount>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        self.dirs
            .iter()
            .map(|d| {
                let ro = if d.writable { "" } else { ":ro" };
                ("dir", format!("{}::{}{ro}", d.host.display(), d.guest))
            })
            .collect()
    }

    /// `limes run` opens them as paths, unbounded.
    pub fn apply_locally(&self, policy: &mut Policy) {
        policy.dirs.extend(self.dirs.iter().cloned());
    }
}

/// `limes serve`: `--allow-host-dir`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct GrantArgs {
    /// A host directory that manifests may preopen (it or below it); repeatable [default: none]
    #[arg(long = "allow-host-dir", value_name = "DIR")]
    pub allow_host_dirs: Vec<PathBuf>,
}

impl GrantArgs {
    /// The grant, with every directory opened now.
    pub fn grant(&self) -> Result<Grant, String> {
        Grant::new(&self.allow_host_dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dirs: &[&str]) -> Files {
        let mut f = Files::default();
        for d in dirs {
            f.parse("dir", d).unwrap();
        }
        f
    }

    #[test]
    fn nothing_is_granted_by_default_but_the_private_dir() {
        let grant = Grant::default();
        assert!(files(&[]).check(&grant).is_ok());
        assert!(files(&["@data::/data"]).check(&grant).is_ok());
        let err = files(&["/etc::/host:ro"]).check(&grant).unwrap_err();
        assert_eq!(err.kind(), "not-permitted");
        assert!(err.to_string().contains("--allow-host-dir: none"), "{err}");
    }

    #[test]
    fn dirs_below_a_grant_pass_and_escapes_do_not() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(root.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), allowed.join("link")).unwrap();
        let grant = Grant::new(std::slice::from_ref(&allowed)).unwrap();
        let dir = |p: &Path| files(&[&format!("{}::/d", p.display())]);
        let allowed = std::fs::canonicalize(allowed).unwrap();
        assert!(dir(&allowed).check(&grant).is_ok());
        assert!(dir(&allowed.join("sub")).check(&grant).is_ok());
        for escape in [
            allowed.join("../secret"),
            allowed.join("link"),
            "/tmp".into(),
        ] {
            assert_eq!(
                dir(&escape).check(&grant).unwrap_err().kind(),
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
            let grant = Grant::new(std::slice::from_ref(overlapping)).unwrap();
            let err = grant.check_data_dir(&data).unwrap_err();
            assert!(err.contains("data directory"), "{err}");
        }
        let grant = Grant::new(&[beside]).unwrap();
        assert!(grant.check_data_dir(&data).is_ok());
    }
}
