//! `tailor import litellm FILE`: a LiteLLM proxy config converted to a routes.yaml on stdout; what
//! could not be converted, and what needs a look, on stderr. Exits 0 when a routes.yaml was
//! written, notes or not.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use tailor::import::litellm;

pub fn run_litellm(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let env = |k: &str| std::env::var(k).ok();
    let imported = litellm::convert(&text, &path.display().to_string(), &env)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut err = std::io::stderr().lock();
    for n in &imported.notes {
        let _ = writeln!(err, "tailor import: {n}");
    }
    if imported.routes == 0 {
        bail!(
            "{}: no model_list entry could be converted, so there is no routes.yaml to write",
            path.display()
        );
    }
    let _ = writeln!(
        err,
        "tailor import: {} route(s) written; {} note(s). Next: tailor check --config routes.yaml",
        imported.routes,
        imported.notes.len()
    );
    std::io::stdout()
        .lock()
        .write_all(imported.yaml.as_bytes())?;
    Ok(())
}
