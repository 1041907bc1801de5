//! `routes[]` → runtime [`Route`]s: arms and their prompts, sticky keys, fallbacks, match
//! conditions (regexes compiled here), shadow and capture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::HeaderName;
use regex::Regex;

use super::error::{check_name, invalid, ConfigError, Problems};
use super::raw::{RawArm, RawCapture, RawExperiment, RawMatch, RawRoute, RawShadow};
use super::types::{
    Arm, ArmPrompt, CaptureConfig, Experiment, Judge, Matcher, Route, Shadow, Sticky,
};

/// What a shadow's judge is asked when routes.yaml gives no prompt file. The request and both
/// answers follow it; the judge answers with one word.
pub const DEFAULT_JUDGE_PROMPT: &str = "You compare two answers to the same request. Answer A is the one the user received; answer B is a candidate. Judge helpfulness, correctness and following the request's instructions, not length or style. Reply with exactly one word: BETTER if B is better than A, SAME if they are about equally good, WORSE if B is worse than A.";

/// Builds route `r`. Each part (arms, sticky, fallbacks, match, shadow, capture, experiment,
/// limits) is checked on its own, so a route with two mistakes names both.
pub(super) fn build_route(
    path: &str,
    r: RawRoute,
    model_index: &HashMap<String, usize>,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Route, ConfigError> {
    let mut p = Problems::default();
    p.take(check_name(&format!("{path}.name"), &r.name));
    let find = |at: String, name: &str| {
        model_index
            .get(name)
            .copied()
            .ok_or_else(|| invalid(at, format!("no model named `{name}` under `models:`")))
    };
    let split = p.take(build_split(path, &r.split, &find, base, files));
    let sticky = p.take(build_sticky(path, r.sticky.as_deref()));
    let fallback: Vec<usize> = r
        .fallback
        .iter()
        .enumerate()
        .filter_map(|(j, name)| p.take(find(format!("{path}.fallback[{j}]"), name)))
        .collect();
    let matcher = p.take(build_matcher(
        &format!("{path}.match"),
        r.matcher.unwrap_or_default(),
    ));
    let shadow = r
        .shadow
        .and_then(|s| p.take(build_shadow(path, s, &find, base, files)));
    // `only_model` is checked against the models that answer: known once the arms are
    let capture = match (r.capture, &split) {
        (Some(c), Some((arms, _, _))) if fallback.len() == r.fallback.len() => {
            p.take(build_capture(path, c, arms, &fallback, &find, base))
        }
        _ => None,
    };
    let experiment = p.or(build_experiment(path, r.experiment), Experiment::default());
    let max_concurrency = match r.max_concurrency {
        Some(0) => {
            p.push(invalid(format!("{path}.max_concurrency"), "must be > 0"));
            None
        }
        m => m,
    };
    let budget_usd_per_hour = match r.budget_usd_per_hour {
        Some(b) if !b.is_finite() || b <= 0.0 => {
            p.push(invalid(
                format!("{path}.budget_usd_per_hour"),
                "must be a number > 0",
            ));
            None
        }
        b => b,
    };
    p.into_result()?;
    // every part above either built or noted its problem: this is only for the compiler
    let (Some((arms, prompts, total_weight)), Some(sticky), Some(matcher)) =
        (split, sticky, matcher)
    else {
        return Err(invalid(path, "could not be built"));
    };
    Ok(Route {
        name: r.name,
        matcher,
        arms,
        total_weight,
        sticky,
        fallback,
        max_concurrency,
        budget_usd_per_hour,
        prompts,
        shadow,
        capture,
        experiment,
    })
}

/// Looks a model up by name; the error names `at`.
type Find<'a> = dyn Fn(String, &str) -> Result<usize, ConfigError> + 'a;

/// `split:`: the arms, their prompts and the total weight.
fn build_split(
    path: &str,
    split: &[RawArm],
    find: &Find<'_>,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<(Vec<Arm>, Vec<ArmPrompt>, u64), ConfigError> {
    if split.is_empty() {
        return Err(invalid(format!("{path}.split"), "needs at least one arm"));
    }
    let weighted = split.iter().filter(|a| a.weight.is_some()).count();
    if weighted != 0 && weighted != split.len() {
        return Err(invalid(
            format!("{path}.split"),
            "give `weight` on every arm or on none (equal shares)",
        ));
    }
    let mut arms: Vec<Arm> = Vec::new();
    let mut prompts = Vec::new();
    for (j, a) in split.iter().enumerate() {
        let model = find(format!("{path}.split[{j}].model"), &a.model)?;
        if arms.iter().any(|x| x.model == model) {
            return Err(invalid(
                format!("{path}.split[{j}].model"),
                format!("`{}` is already an arm of this route", a.model),
            ));
        }
        arms.push(Arm {
            model,
            weight: a.weight.unwrap_or(1),
        });
        let replace = match a.system_prompt_mode.as_deref() {
            None | Some("prepend") => false,
            Some("replace") => true,
            Some(m) => {
                return Err(invalid(
                    format!("{path}.split[{j}].system_prompt_mode"),
                    format!("`{m}`: expected prepend or replace"),
                ))
            }
        };
        match &a.system_prompt {
            Some(file) => {
                let p = base.join(file);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(
                        format!("{path}.split[{j}].system_prompt"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                if text.trim().is_empty() {
                    return Err(invalid(
                        format!("{path}.split[{j}].system_prompt"),
                        format!("{} is empty", p.display()),
                    ));
                }
                prompts.push(ArmPrompt {
                    model,
                    text: text.trim_end().into(),
                    replace,
                    tokens: std::sync::OnceLock::new(),
                });
                files.push(p);
            }
            None if a.system_prompt_mode.is_some() => {
                return Err(invalid(
                    format!("{path}.split[{j}].system_prompt_mode"),
                    "needs `system_prompt`",
                ))
            }
            None => {}
        }
    }
    let total_weight: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
    if total_weight == 0 {
        return Err(invalid(
            format!("{path}.split"),
            "weights must not all be 0",
        ));
    }
    Ok((arms, prompts, total_weight))
}

fn build_sticky(path: &str, sticky: Option<&str>) -> Result<Sticky, ConfigError> {
    Ok(match sticky {
        None | Some("none") => Sticky::None,
        Some("user") => Sticky::User,
        Some(s) => match s.strip_prefix("header:") {
            Some(h) => Sticky::Header(
                HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                    invalid(
                        format!("{path}.sticky"),
                        format!("`{h}` is not a header name"),
                    )
                })?,
            ),
            None => {
                return Err(invalid(
                    format!("{path}.sticky"),
                    format!("`{s}`: expected user, header:<name> or none"),
                ))
            }
        },
    })
}

fn build_shadow(
    path: &str,
    s: RawShadow,
    find: &Find<'_>,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Shadow, ConfigError> {
    let model = find(format!("{path}.shadow.model"), &s.model)?;
    if !(s.percent > 0.0 && s.percent <= 100.0) {
        return Err(invalid(
            format!("{path}.shadow.percent"),
            "must be > 0 and <= 100",
        ));
    }
    let judge = match s.judge {
        None => None,
        Some(j) => {
            let p = format!("{path}.shadow.judge");
            let jm = find(format!("{p}.model"), &j.model)?;
            let prompt = match j.prompt {
                None => DEFAULT_JUDGE_PROMPT.into(),
                Some(file) => {
                    let f = base.join(file);
                    let text = std::fs::read_to_string(&f).map_err(|e| {
                        invalid(
                            format!("{p}.prompt"),
                            format!("cannot read {}: {e}", f.display()),
                        )
                    })?;
                    if text.trim().is_empty() {
                        return Err(invalid(
                            format!("{p}.prompt"),
                            format!("{} is empty", f.display()),
                        ));
                    }
                    files.push(f);
                    text.trim_end().into()
                }
            };
            Some(Judge { model: jm, prompt })
        }
    };
    Ok(Shadow {
        model,
        percent: s.percent,
        judge,
    })
}

fn build_capture(
    path: &str,
    c: RawCapture,
    arms: &[Arm],
    fallback: &[usize],
    find: &Find<'_>,
    base: &Path,
) -> Result<CaptureConfig, ConfigError> {
    let p = format!("{path}.capture");
    if c.path.trim().is_empty() {
        return Err(invalid(format!("{p}.path"), "must not be empty"));
    }
    let sample = c.sample.unwrap_or(1.0);
    if !(sample > 0.0 && sample <= 1.0) {
        return Err(invalid(format!("{p}.sample"), "must be > 0 and <= 1"));
    }
    let only_model = match &c.only_model {
        Some(m) => {
            let i = find(format!("{p}.only_model"), m)?;
            if !arms.iter().any(|a| a.model == i) && !fallback.contains(&i) {
                return Err(invalid(
                    format!("{p}.only_model"),
                    format!("`{m}` never answers this route"),
                ));
            }
            Some(i)
        }
        None => None,
    };
    let redact = c
        .redact
        .iter()
        .enumerate()
        .map(|(j, r)| Regex::new(r).map_err(|e| invalid(format!("{p}.redact[{j}]"), e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaptureConfig {
        path: base.join(&c.path),
        sample,
        only_model,
        redact: Arc::new(redact),
        max_file_bytes: match c.max_file_bytes {
            Some(0) => return Err(invalid(format!("{p}.max_file_bytes"), "must be > 0")),
            m => m.unwrap_or(100 << 20),
        },
    })
}

fn build_experiment(path: &str, e: Option<RawExperiment>) -> Result<Experiment, ConfigError> {
    let Some(e) = e else {
        return Ok(Experiment::default());
    };
    Ok(Experiment {
        since: match e.since {
            None => None,
            Some(t) => Some(humantime::parse_rfc3339_weak(&t).map_err(|e| {
                invalid(
                    format!("{path}.experiment.since"),
                    format!("`{t}`: {e} (expected e.g. 2026-11-01T00:00:00Z)"),
                )
            })?),
        },
        quality_margin: match e.quality_margin {
            Some(m) if !(0.0..=1.0).contains(&m) => {
                return Err(invalid(
                    format!("{path}.experiment.quality_margin"),
                    "must be between 0 and 1",
                ))
            }
            m => m.unwrap_or(Experiment::default().quality_margin),
        },
    })
}

fn build_matcher(path: &str, m: RawMatch) -> Result<Matcher, ConfigError> {
    let regex = |key: &str, s: Option<String>| {
        s.map(|s| {
            Regex::new(&s)
                .map_err(|e| invalid(format!("{path}.{key}"), format!("invalid regex: {e}")))
        })
        .transpose()
    };
    if m.model.as_ref().is_some_and(|v| v.is_empty()) {
        return Err(invalid(
            format!("{path}.model"),
            "must list at least one model name",
        ));
    }
    if m.endpoint.as_ref().is_some_and(|v| v.is_empty()) {
        return Err(invalid(
            format!("{path}.endpoint"),
            "must list at least one endpoint",
        ));
    }
    let mut headers = Vec::new();
    for (k, v) in m.headers.unwrap_or_default() {
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid(format!("{path}.headers.{k}"), "not a valid header name"))?;
        headers.push((name, v));
    }
    let prompt_tokens = match m.prompt_tokens {
        None => None,
        Some(r) => {
            let (lo, hi) = (r.min.unwrap_or(0), r.max.unwrap_or(u64::MAX));
            if r.min.is_none() && r.max.is_none() {
                return Err(invalid(
                    format!("{path}.prompt_tokens"),
                    "give min, max or both",
                ));
            }
            if lo > hi {
                return Err(invalid(
                    format!("{path}.prompt_tokens"),
                    "min is larger than max",
                ));
            }
            Some((lo, hi))
        }
    };
    Ok(Matcher {
        models: m.model,
        headers,
        user: regex("user", m.user)?,
        metadata: m.metadata.unwrap_or_default().into_iter().collect(),
        system: regex("system", m.system)?,
        content: regex("content", m.content)?,
        prompt_tokens,
        tools: m.tools,
        endpoints: m.endpoint,
    })
}
