//! Host directories resolved so that nothing a guest does can redirect them.
//!
//! A preopen named by a path is opened again at every instantiation. If any component of that
//! path can change between two instantiations (a guest with a writable preopen can create
//! directories and relative symlinks inside it), opening it by path lets one function point
//! another's preopen anywhere the node's user can read. An [`Anchor`] closes that: it holds a
//! trusted directory open for its whole life (an operator's grant, the node's directory of
//! private function dirs), and each mount below it is opened relative to that handle with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`. The kernel then refuses any symlink and any
//! `..` that would climb out, whoever made them and whenever. The anchor itself is opened once
//! by path, so renaming or replacing its path later changes nothing either.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// A directory held open, under which [`DirMount`](crate::DirMount)s are resolved.
#[derive(Clone)]
pub struct Anchor {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Anchor").field(&self.path).finish()
    }
}

/// Two anchors are the same when they were opened at the same path.
impl PartialEq for Anchor {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Anchor {}

impl Anchor {
    /// Opens the directory at `path` (canonicalized first: the operator's own symlinks are
    /// trusted, once, here) and keeps it open.
    pub fn open(path: &Path) -> io::Result<Self> {
        let path = std::fs::canonicalize(path)?;
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            path,
            fd: Arc::new(fd),
        })
    }

    /// The canonical path the anchor was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` relative to this anchor, when it lies at or below it by its words alone (no `..`,
    /// no `.` tricks: the components must be plain names).
    pub fn relative<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        let rest = path.strip_prefix(&self.path).ok()?;
        rest.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then_some(rest)
    }

    /// Opens the directory `relative` below the anchor, refusing every symlink on the way and
    /// any step outside: `ELOOP` or `EXDEV` from the kernel, reported as an error naming it.
    pub fn open_beneath(&self, relative: &Path) -> io::Result<OwnedFd> {
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        rustix::fs::openat2(
            &*self.fd,
            relative,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| {
            let why = match e {
                rustix::io::Errno::LOOP => "it passes through a symlink".to_owned(),
                rustix::io::Errno::XDEV => "it leads outside its granted directory".to_owned(),
                other => io::Error::from(other).to_string(),
            };
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {why}", self.path.join(relative).display()),
            )
        })
    }
}

/// The path through which Wasmtime opens a directory the runtime already holds open: the fd's
/// own entry in `/proc/self/fd`, a link to that very directory, not to a path that could have
/// changed since.
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_climbs_below_an_anchor_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("granted");
        std::fs::create_dir_all(granted.join("sub/deeper")).unwrap();
        std::os::unix::fs::symlink("../..", granted.join("up")).unwrap();
        std::os::unix::fs::symlink("sub", granted.join("inside")).unwrap();
        let anchor = Anchor::open(&granted).unwrap();
        assert!(anchor.open_beneath(Path::new("")).is_ok());
        assert!(anchor.open_beneath(Path::new("sub/deeper")).is_ok());
        for refused in ["up", "inside", "inside/deeper", "../granted", "sub/../.."] {
            let err = anchor.open_beneath(Path::new(refused)).unwrap_err();
            assert!(err.to_string().contains("granted"), "{refused}: {err}");
        }
        assert_eq!(
            anchor.relative(&anchor.path().join("sub")),
            Some(Path::new("sub"))
        );
        assert_eq!(anchor.relative(&anchor.path().join("sub/../..")), None);
        assert_eq!(anchor.relative(Path::new("/etc")), None);
    }

    #[test]
    fn renaming_the_anchor_path_does_not_move_it() {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("granted");
        std::fs::create_dir_all(granted.join("mine")).unwrap();
        let anchor = Anchor::open(&granted).unwrap();
        std::fs::rename(&granted, root.path().join("moved")).unwrap();
        std::fs::create_dir_all(&granted).unwrap();
        // Still the directory opened first, which has `mine`; the new one at the path does not.
        assert!(anchor.open_beneath(Path::new("mine")).is_ok());
    }
}
