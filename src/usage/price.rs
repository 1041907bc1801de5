//! Prices and cost arithmetic, exact to the picodollar.
//!
//! A price of `P` USD per 1M tokens is `P * 10^6` picodollars (1e-12 USD) per token, so storing
//! prices as integer micro-USD per 1M tokens makes `tokens * price` an exact integer number of
//! picodollars. Costs are summed as integers and turned into a float only when exported.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Usage;

/// One model's price, in micro-USD per 1M tokens (= picodollars per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    /// Fine-tuning training price per 1M training tokens, where the table knows it.
    pub training: Option<u64>,
}

/// Picodollars per USD.
pub const PICO_PER_USD: f64 = 1e12;
/// Decimal places of a picodollar amount in USD.
pub const PICO_DIGITS: u32 = 12;

impl Price {
    /// No price: tokens are counted, nothing is charged (a passthrough model tailor does not know).
    pub const FREE: Price = Price {
        input: 0,
        cached_input: 0,
        output: 0,
        training: None,
    };

    /// Cost of one request in picodollars:
    /// `(prompt - cached) * input + cached * cached_input + completion * output`.
    /// Reasoning tokens are already inside completion tokens and are not added again.
    pub fn cost_pico(&self, u: &Usage) -> u128 {
        let uncached = u.input.saturating_sub(u.cached) as u128;
        uncached * self.input as u128
            + u.cached as u128 * self.cached_input as u128
            + u.output as u128 * self.output as u128
    }

    /// Builds a price from USD per 1M tokens as written in a config file.
    pub fn from_usd(input: f64, cached_input: Option<f64>, output: f64) -> Result<Price, String> {
        let input = usd_to_micro(input)?;
        Ok(Price {
            input,
            cached_input: match cached_input {
                Some(c) => usd_to_micro(c)?,
                None => input,
            },
            output: usd_to_micro(output)?,
            training: None,
        })
    }
}

/// Converts a USD amount with at most 6 decimals to integer micro-USD; rejects negatives,
/// non-finite values and amounts with more precision than a micro-dollar.
fn usd_to_micro(usd: f64) -> Result<u64, String> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return Err(format!("price {usd} must be a finite number >= 0"));
    }
    let micro = (usd * 1e6).round();
    if ((micro / 1e6) - usd).abs() > 1e-9 * usd.max(1.0) {
        return Err(format!("price {usd} has more than 6 decimals"));
    }
    Ok(micro as u64)
}

/// Parses a decimal string such as `1.875` into micro-units without going through a float.
fn parse_micro(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || frac.len() > 6
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{s}` is not a decimal with at most 6 decimals"));
    }
    let whole: u64 = whole.parse().map_err(|e| format!("`{s}`: {e}"))?;
    let frac_val: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|e| format!("`{s}`: {e}"))?
    };
    Ok(whole * 1_000_000 + frac_val * 10u64.pow(6 - frac.len() as u32))
}

/// One row of the built-in table.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub price: Price,
    pub as_of: String,
}

const TABLE_CSV: &str = include_str!("prices.csv");

/// Parses the built-in table. Every row is checked by a unit test, so a bad edit fails CI.
fn parse_table(csv: &str) -> Result<HashMap<String, TableEntry>, String> {
    let mut out = HashMap::new();
    let mut lines = csv
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let header = lines.next().ok_or("empty price table")?;
    if header != "model,input,cached_input,output,training,as_of" {
        return Err(format!("unexpected price table header `{header}`"));
    }
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        let [model, input, cached, output, training, as_of] = cols[..] else {
            return Err(format!("price row `{line}` does not have 6 columns"));
        };
        let input = parse_micro(input)?;
        let price = Price {
            input,
            cached_input: if cached.is_empty() {
                input
            } else {
                parse_micro(cached)?
            },
            output: parse_micro(output)?,
            training: if training.is_empty() {
                None
            } else {
                Some(parse_micro(training)?)
            },
        };
        if out
            .insert(
                model.to_owned(),
                TableEntry {
                    price,
                    as_of: as_of.to_owned(),
                },
            )
            .is_some()
        {
            return Err(format!("price row for `{model}` appears twice"));
        }
    }
    Ok(out)
}

fn table() -> &'static HashMap<String, TableEntry> {
    static TABLE: OnceLock<HashMap<String, TableEntry>> = OnceLock::new();
    // The table is compiled in and checked by a unit test; an error here would be a build defect,
    // so an empty table (every model then needs an explicit price) is the safe degradation.
    TABLE.get_or_init(|| parse_table(TABLE_CSV).unwrap_or_default())
}

/// Looks a model id up in the built-in table. `ft:<base>:<org>:<suffix>:<id>` ids are priced by
/// the `ft:<base>` row. Returns the key that matched, for `tailor check` to show.
pub fn lookup(model_id: &str) -> Option<(&'static str, &'static TableEntry)> {
    let t = table();
    if let Some((k, v)) = t.get_key_value(model_id) {
        return Some((k.as_str(), v));
    }
    let rest = model_id.strip_prefix("ft:")?;
    let base = rest.split(':').next()?;
    t.get_key_value(&format!("ft:{base}"))
        .map(|(k, v)| (k.as_str(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_has_the_models_we_promise() {
        let t = parse_table(TABLE_CSV).unwrap();
        for m in [
            "gpt-4o",
            "gpt-4o-2024-08-06",
            "gpt-4o-mini",
            "ft:gpt-4o-2024-08-06",
            "ft:gpt-4o-mini-2024-07-18",
            "gpt-4.1",
            "ft:gpt-4.1-2025-04-14",
            "o3",
            "o4-mini",
            "text-embedding-3-small",
        ] {
            assert!(t.contains_key(m), "{m} missing");
        }
        // the fine-tune premium the product is about: 1.5x base gpt-4o
        let base = t["gpt-4o-2024-08-06"].price;
        let ft = t["ft:gpt-4o-2024-08-06"].price;
        assert_eq!(base.input, 2_500_000);
        assert_eq!(ft.input * 2, base.input * 3);
        assert_eq!(ft.output * 2, base.output * 3);
        assert_eq!(ft.cached_input, 1_875_000);
    }

    #[test]
    fn ft_ids_fall_back_to_their_base_row() {
        let (k, e) = lookup("ft:gpt-4o-2024-08-06:acme:support:A1b2C3").unwrap();
        assert_eq!(k, "ft:gpt-4o-2024-08-06");
        assert_eq!(e.price.output, 15_000_000);
        assert!(
            lookup("ft:gpt-4o-2024-11-20:acme::x").is_none(),
            "unconfirmed row must not be guessed"
        );
        assert!(lookup("my-llama").is_none());
    }

    #[test]
    fn cost_is_exact_integer_picodollars() {
        let p = lookup("ft:gpt-4o-2024-08-06").unwrap().1.price;
        let u = Usage {
            input: 1000,
            cached: 200,
            output: 50,
            reasoning: 0,
        };
        // 800 * 3.75e-6 + 200 * 1.875e-6 + 50 * 15e-6 = 0.003 + 0.000375 + 0.00075 = 0.004125 USD
        assert_eq!(p.cost_pico(&u), 4_125_000_000);
        let u = Usage {
            input: 10,
            cached: 50,
            output: 0,
            reasoning: 0,
        };
        // cached > prompt cannot happen upstream; never underflows
        assert_eq!(p.cost_pico(&u), 50 * 1_875_000);
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_micro("1.875").unwrap(), 1_875_000);
        assert_eq!(parse_micro("0.025").unwrap(), 25_000);
        assert_eq!(parse_micro("15").unwrap(), 15_000_000);
        assert!(parse_micro("1.2345678").is_err());
        assert!(parse_micro("-1").is_err());
        assert!(parse_micro("?").is_err());
        assert_eq!(usd_to_micro(0.075).unwrap(), 75_000);
        assert!(usd_to_micro(-1.0).is_err());
        assert!(usd_to_micro(0.0000001).is_err());
        assert_eq!(
            Price::from_usd(3.75, None, 15.0).unwrap().cached_input,
            3_750_000
        );
    }
}
