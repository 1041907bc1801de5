//! `tailor dataset check FILE`: a fine-tuning file validated like the upload, priced.

use std::path::Path;

use anyhow::{Context, Result};

use super::common::OutFormat;
pub fn run(file: &Path, model: &str, epochs: u32, format: OutFormat) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // the training rate of `ft:<model>` (or of the model itself) in the built-in table
    let price = tailor::usage::price::lookup(&format!("ft:{model}"))
        .or_else(|| tailor::usage::price::lookup(model))
        .and_then(|(_, e)| e.price.training)
        .map(|t| t as f64 / 1e6);
    let report = tailor::tools::dataset::check(&text, model, epochs, price);
    match format {
        OutFormat::Text => out!("{}", report.render(&file.display().to_string())),
        OutFormat::Json => out!("{}", serde_json::to_string_pretty(&report)?),
    }
    if !report.errors.is_empty() {
        tailor::logs::flush();
        std::process::exit(1);
    }
    Ok(())
}
