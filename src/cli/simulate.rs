//! `tailor simulate`: captured traffic replayed through a candidate config, offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::common::{load, OutFormat};
pub fn run(config: &Path, traffic: &Path, format: OutFormat) -> Result<()> {
    let cfg = load(config)?;
    let meta = std::fs::read_to_string(traffic)
        .with_context(|| format!("reading {}", traffic.display()))?;
    // x.meta.jsonl -> x.jsonl: the messages of the same requests, line for line
    let data_path = traffic
        .to_str()
        .and_then(|p| p.strip_suffix(".meta.jsonl"))
        .map(|p| PathBuf::from(format!("{p}.jsonl")));
    let data = data_path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let meta_lines: Vec<&str> = meta.lines().collect();
    let data_lines: Vec<&str> = data.lines().collect();
    let p = tailor::tools::simulate::simulate(&cfg, &meta_lines, &data_lines);
    match format {
        OutFormat::Text => out!("{}", p.render()),
        OutFormat::Json => out!("{}", serde_json::to_string_pretty(&p)?),
    }
    Ok(())
}
