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
    let legacy = legacy_lines(&text);
    if legacy > 0 {
        let note = format!(
            "note: {legacy} line(s) are in the legacy {{\"prompt\", \"completion\"}} format (babbage-002 / \
             davinci-002, retired). Chat models are fine-tuned on the chat format, one example per line:\n  \
             {{\"messages\": [{{\"role\": \"system\", \"content\": \"You are ...\"}}, \
             {{\"role\": \"user\", \"content\": \"<prompt>\"}}, {{\"role\": \"assistant\", \"content\": \"<completion>\"}}]}}"
        );
        match format {
            OutFormat::Text => out!("{note}"),
            // stdout stays one JSON document
            OutFormat::Json => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "{note}");
            }
        }
    }
    if !report.errors.is_empty() {
        tailor::logs::flush();
        std::process::exit(1);
    }
    Ok(())
}

/// Lines written as `{"prompt": ..., "completion": ...}` without `messages`: the legacy format.
fn legacy_lines(text: &str) -> usize {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v.get("prompt").is_some()
                && v.get("completion").is_some()
                && v.get("messages").is_none()
        })
        .count()
}
