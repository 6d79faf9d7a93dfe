//! Python guests: each `guests/python-NAME/app.py` becomes `target/guests/python-NAME.wasm`
//! through componentize-py, which bundles CPython (compiled to Wasm) with the app and the
//! bindings of `guests/wit/run.wit` (world `runnable`, or the one named in the guest's `world`
//! file), and pre-initializes the interpreter at build time.
//!
//! componentize-py comes from PyPI, pinned, into a virtualenv under `target/python/`. Where PyPI
//! cannot be reached the Python guests are skipped with the reason, and so are their tests
//! (unless `LIMES_REQUIRE_PYTHON` is set, as `scripts/test` does).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// The componentize-py release the examples and the docs are written for (Python 3.14 inside).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds every Python guest that is older than its sources; returns the names built or kept.
pub fn build(root: &Path, out: &Path) -> Result<Vec<String>> {
    let apps = super::guest_dirs(root, "python-", "app.py")?;
    if apps.is_empty() {
        return Ok(Vec::new());
    }
    let tool = match install(&root.join("target/python")) {
        Ok(tool) => tool,
        Err(e) => {
            eprintln!("skipping the Python guests: {e:#}");
            return Ok(Vec::new());
        }
    };
    let wit = root.join("guests/wit");
    let mut built = Vec::new();
    for (name, dir) in apps {
        let dest = out.join(format!("{name}.wasm"));
        if super::fresh(&dest, &[&dir.join("app.py"), &wit.join("run.wit"), &tool])? {
            built.push(name);
            continue;
        }
        let world = super::guest_world(&dir)?;
        eprintln!("building {name} with componentize-py {COMPONENTIZE_PY}");
        super::run(
            Command::new(&tool)
                // Keeps `__pycache__` out of the source tree.
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .arg("-d")
                .arg(&wit)
                .args(["-w", &world, "componentize", "app", "-p"])
                .arg(&dir)
                .arg("-o")
                .arg(&dest),
        )
        .with_context(|| format!("building {}", dir.display()))?;
        built.push(name);
    }
    Ok(built)
}

/// The `componentize-py` executable of a virtualenv in `venv` holding the pinned version,
/// created or upgraded as needed.
fn install(venv: &Path) -> Result<PathBuf> {
    let tool = venv.join("bin/componentize-py");
    let stamp = venv.join("componentize-py.version");
    if tool.exists() && std::fs::read_to_string(&stamp).is_ok_and(|v| v == COMPONENTIZE_PY) {
        return Ok(tool);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("no python3 on PATH")?;
    super::run(Command::new(python).args(["-m", "venv"]).arg(venv))
        .context("creating a virtualenv (Debian: apt-get install python3-venv)")?;
    super::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("componentize-py=={COMPONENTIZE_PY}"),
    ]))
    .context("installing componentize-py from PyPI")?;
    std::fs::write(&stamp, COMPONENTIZE_PY)?;
    Ok(tool)
}
