//! `tailor import litellm` on configs written from LiteLLM's documentation
//! (`tests/fixtures/litellm/`, each naming its doc page): the binary converts each one, `tailor
//! check` accepts what it wrote, and stderr lists what was not converted. `tailor check` on a
//! LiteLLM config points to the importer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn tailor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tailor"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    // the importer reads `os.environ/` URLs and versions: start from none of them set
    for k in [
        "OPENAI_API_KEY",
        "AZURE_API_BASE",
        "AZURE_API_VERSION",
        "AZURE_API_KEY",
        "RUST_BACKTRACE",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litellm");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Imports a fixture, writes the routes.yaml to a temporary file, runs `tailor check` on it.
/// Returns (routes.yaml, import stderr, check stdout).
fn import_and_check(fixture: &str, env: &[(&str, &str)]) -> (String, String, String) {
    let path = format!("tests/fixtures/litellm/{fixture}");
    let o = tailor(&["import", "litellm", &path], env);
    assert!(o.status.success(), "{fixture}: {}", stderr(&o));
    let yaml = stdout(&o);
    // tests run in parallel and several import the same fixture: one file each
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!(
        "tailor-import-{}-{n}-{fixture}",
        std::process::id()
    ));
    std::fs::write(&out, &yaml).unwrap();
    let c = tailor(&["check", "--config", out.to_str().unwrap()], env);
    let _ = std::fs::remove_file(&out);
    assert!(
        c.status.success(),
        "{fixture}: tailor check rejected the import:\n{}\n{yaml}",
        stderr(&c)
    );
    (yaml, stderr(&o), stdout(&c))
}

#[test]
fn every_fixture_imports_and_the_result_passes_check() {
    let all = fixtures();
    assert!(all.len() >= 5, "{all:?}");
    for f in all {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        // each fixture says which LiteLLM doc page it was written from
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# LiteLLM proxy config written from LiteLLM's docs/"),
            "{name}"
        );
        let (yaml, notes, _) = import_and_check(&name, &[]);
        assert!(
            yaml.contains("\nroutes:\n") && yaml.contains("\n  - name: "),
            "{name}: {yaml}"
        );
        assert!(notes.contains("route(s) written"), "{name}: {notes}");
    }
}

#[test]
fn quickstart_converts_the_azure_pair_and_reports_the_rest() {
    let (yaml, notes, check) = import_and_check("quickstart.yaml", &[]);
    // the two Azure deployments of `gpt-4o`, weighted by rpm; the vLLM server without a key
    assert!(check.contains("gpt-4o-1 50%, gpt-4o-2 50%"), "{check}");
    assert!(
        check.contains("azure api-version 2025-02-01-preview; key from $AZURE_API_KEY_EU"),
        "{check}"
    );
    assert!(check.contains("http://0.0.0.0:4000/v1"), "{check}");
    assert!(check.contains("no credentials"), "{check}");
    // keys written in the LiteLLM file never reach the routes.yaml
    assert!(
        !yaml.contains("sk-123") && !yaml.contains("sk-1234"),
        "{yaml}"
    );
    for want in [
        "not converted: model_list[1] `bedrock-claude-v1` (bedrock/anthropic.claude-instant-v1): `bedrock` is not an OpenAI-compatible API",
        "not converted: model_list[6] `*` (*): a wildcard",
        "not converted: litellm_settings.success_callback: logging and observability callbacks",
        "not converted: general_settings.master_key: tailor's own API keys are `clients:`",
        "not converted: general_settings.alerting",
        "check: model_list[5].litellm_params.api_key: a key written in the file is not copied",
        "not converted: model_list[5].litellm_params.temperature",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
    assert!(!notes.contains("sk-1234"), "{notes}");
}

#[test]
fn load_balancing_keeps_the_rpm_shares_and_the_alias() {
    let (_, notes, check) = import_and_check("load-balancing.yaml", &[]);
    // rpm 6 / 6 / 1440
    assert!(
        check.contains("gpt-3.5-turbo-1 0%, gpt-3.5-turbo-2 0%, gpt-3.5-turbo-3 99%"),
        "{check}"
    );
    assert!(
        check.contains(r#"match: model in ["gpt-3.5-turbo", "gpt-4"]"#),
        "{check}"
    );
    for want in [
        "check: model_list[0].litellm_params.api_base: `<your-azure-endpoint>` is not an http(s) URL",
        "not converted: router_settings.redis_host",
        "not converted: router_settings.timeout",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
}

#[test]
fn fallbacks_retries_and_cooldowns_carry_over() {
    let (yaml, notes, check) = import_and_check("fallbacks.yaml", &[]);
    assert!(
        check.contains("gpt-3.5-turbo  -> gpt-3.5-turbo 100%  sticky: none  fallback: [gpt-4-1, my-specific-model-id]"),
        "{check}"
    );
    assert!(
        yaml.contains("health:\n  failures: 4\n  cooldown: \"30s\""),
        "{yaml}"
    );
    assert!(yaml.contains("retries: { max: 3 }"), "{yaml}");
    for want in [
        "not converted: model_list[3] `zephyr-beta` (huggingface/HuggingFaceH4/zephyr-7b-beta): `huggingface` is not an OpenAI-compatible API",
        "not converted: litellm_settings.fallbacks[0].zephyr-beta: `zephyr-beta` is not a converted model_name",
        "not converted: router_settings.fallbacks[1].gpt-4: fallback `anthropic-claude` is not a converted",
        "not converted: router_settings.context_window_fallbacks",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
}

#[test]
fn custom_prices_are_exact_and_per_second_prices_are_reported() {
    let (_, notes, check) = import_and_check("custom-pricing.yaml", &[]);
    assert!(
        check.contains("421 / 421 / 520  (price from config)"),
        "{check}"
    );
    assert!(
        check.contains("0.3 / 0.15 / 1.2  (price from config)"),
        "{check}"
    );
    for want in [
        "not converted: model_list[0] `sagemaker-completion-model`",
        "api_version: `os.envrion/AZURE_API_VERSION` looks like a misspelt `os.environ/` reference",
        "api_base: $AZURE_API_BASE is not set while importing",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
}

#[test]
fn azure_urls_from_the_environment_and_weights() {
    let env = [("AZURE_API_BASE", "https://acme-east.openai.azure.com/")];
    let (yaml, notes, check) = import_and_check("azure.yaml", &env);
    assert!(check.contains("gpt-4o-1 90%, gpt-4o-2 10%"), "{check}");
    assert!(
        check.contains("https://acme-east.openai.azure.com"),
        "{check}"
    );
    // gpt-4-1106-preview is not in tailor's price table: priced 0, marked and reported
    assert!(yaml.contains("TODO: price unknown"), "{yaml}");
    assert!(
        check.contains("built-in `text-embedding-3-small`"),
        "{check}"
    );
    for want in [
        "check: model_list[0].litellm_params.api_base: read from $AZURE_API_BASE while importing",
        "not converted: model_list[3].litellm_params.tenant_id, client_id, client_secret: Microsoft Entra ID",
        "check: model_list[2]: no price: `chatgpt-v-2` is not in tailor's price table",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
}

#[test]
fn check_on_a_litellm_config_suggests_the_importer() {
    let o = tailor(
        &["check", "--config", "tests/fixtures/litellm/fallbacks.yaml"],
        &[],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("unknown field `model_list`"), "{e}");
    assert!(
        e.contains("looks like a LiteLLM proxy config (it has `model_list`, `litellm_settings`, `router_settings`)"),
        "{e}"
    );
    assert!(
        e.contains("tailor import litellm tests/fixtures/litellm/fallbacks.yaml > routes.yaml"),
        "{e}"
    );
    // a tailor config with a typo gets no such hint
    let o = tailor(
        &["check", "--config", "tests/fixtures/invalid-typo.yaml"],
        &[],
    );
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("LiteLLM"), "{}", stderr(&o));
}

#[test]
fn nothing_convertible_or_not_litellm_fails() {
    let dir = std::env::temp_dir();
    let only_bedrock = dir.join(format!("tailor-import-bedrock-{}.yaml", std::process::id()));
    std::fs::write(
        &only_bedrock,
        "model_list:\n  - model_name: c\n    litellm_params: { model: bedrock/anthropic.claude-v2 }\n",
    )
    .unwrap();
    let o = tailor(&["import", "litellm", only_bedrock.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&only_bedrock);
    assert!(!o.status.success());
    assert!(stdout(&o).is_empty());
    let e = stderr(&o);
    assert!(
        e.contains("`bedrock` is not an OpenAI-compatible API"),
        "{e}"
    );
    assert!(e.contains("no model_list entry could be converted"), "{e}");

    let o = tailor(&["import", "litellm", "routes.yaml"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no `model_list` list"),
        "{}",
        stderr(&o)
    );
}
