//! The modes of the node's own files: nobody but the node's user reads its state.
//!
//! The data directory holds the admin token, the registry (token hashes, manifests with their
//! `env` values, the audit log), the components and their compiled code, and each function's
//! private directory. All of it is the node user's alone: directories 0700, files 0600.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its missing parents) with mode 0700, and narrows it to 0700 if it
/// existed with a wider mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Narrows the file at `path` to mode 0600.
pub fn restrict_file(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
