//! Exact decimal numbers for the importer: LiteLLM writes prices in USD per token
//! (`0.0000025`, `2.5e-06`), tailor in USD per 1M tokens with at most 6 decimals. Going through
//! `f64 * 1e6` would print `2.4999999999999996`; shifting the decimal point of the number as
//! written cannot.

/// `digits × 10^exp`, `digits` without leading zeros (empty means zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    digits: String,
    exp: i32,
}

impl Decimal {
    /// Reads `12`, `0.000421`, `2.5e-06`, `1E-7`, `+3.`; not negatives, `nan`, `inf` or hex.
    pub fn parse(s: &str) -> Option<Decimal> {
        let s = s.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        // prices and weights live far inside this; it keeps the text of `1e999999` small
        if !(-400..=400).contains(&exp) || whole.len() + frac.len() > 400 {
            return None;
        }
        let frac_len = i32::try_from(frac.len()).ok()?;
        let digits = format!("{whole}{frac}").trim_start_matches('0').to_owned();
        Some(Decimal {
            digits,
            exp: exp.checked_sub(frac_len)?,
        })
    }

    /// The decimal a YAML number stands for: integers as they are, floats by their shortest
    /// round-trip form (which is what was written, for anything with up to 17 significant digits).
    pub fn from_yaml(v: &serde_yaml_ng::Value) -> Option<Decimal> {
        use serde_yaml_ng::Value;
        match v {
            Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => Decimal::parse(&u.to_string()),
                (None, Some(f)) if f.is_finite() && f >= 0.0 => Decimal::parse(&format!("{f:e}")),
                _ => None,
            },
            // PyYAML (LiteLLM's parser) reads `1e-6` as a string and LiteLLM casts it
            Value::String(s) => Decimal::parse(s),
            _ => None,
        }
    }

    /// This number times `10^n`.
    pub fn shift(&self, n: i32) -> Decimal {
        Decimal {
            digits: self.digits.clone(),
            exp: self.exp.saturating_add(n),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Plain decimal text with at most `max_decimals` decimals (rounded half up), no exponent,
    /// no trailing zeros; `true` when rounding changed the value.
    pub fn to_text(&self, max_decimals: u32) -> (String, bool) {
        if self.digits.is_empty() {
            return ("0".to_owned(), false);
        }
        if self.exp >= 0 {
            let zeros = "0".repeat(self.exp.unsigned_abs() as usize);
            return (format!("{}{zeros}", self.digits), false);
        }
        let decimals = self.exp.unsigned_abs() as usize;
        let padded = format!("{:0>width$}", self.digits, width = decimals + 1);
        let (whole, frac) = padded.split_at(padded.len() - decimals);
        let keep = (max_decimals as usize).min(frac.len());
        let (kept, dropped) = frac.split_at(keep);
        let rounded = !dropped.bytes().all(|b| b == b'0');
        let mut text: Vec<u8> = format!("{whole}{kept}").into_bytes();
        if dropped.as_bytes().first().is_some_and(|b| *b >= b'5') {
            // add one unit in the last kept place, carrying to the left
            let mut i = text.len();
            loop {
                if i == 0 {
                    text.insert(0, b'1');
                    break;
                }
                i -= 1;
                if text[i] == b'9' {
                    text[i] = b'0';
                } else {
                    text[i] += 1;
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let (w, f) = text.split_at(text.len() - keep);
        let w = w.trim_start_matches('0');
        let w = if w.is_empty() { "0" } else { w };
        let f = f.trim_end_matches('0');
        let out = if f.is_empty() {
            w.to_owned()
        } else {
            format!("{w}.{f}")
        };
        (out, rounded)
    }

    /// The number as an integer when it is one and fits a u64.
    pub fn to_u64(&self) -> Option<u64> {
        match self.to_text(0) {
            (t, false) => t.parse().ok(),
            _ => None,
        }
    }

    /// Exponent of the last significant digit (`0.25` → -2, `300` → 2 as written `3e2`).
    pub fn exp(&self) -> i32 {
        self.exp
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    fn per_million(s: &str) -> (String, bool) {
        Decimal::parse(s).unwrap().shift(6).to_text(6)
    }

    #[test]
    fn per_token_prices_become_per_million_without_float_noise() {
        for (per_token, want) in [
            ("0.0000025", "2.5"),
            ("2.5e-06", "2.5"),
            ("0.000421", "421"),
            ("0.000520", "520"),
            ("0.005", "5000"),
            ("1", "1000000"),
            ("0", "0"),
            ("0.00000015", "0.15"),
            ("1.875e-6", "1.875"),
            ("3E-7", "0.3"),
            ("0.0000000000001", "0"),
        ] {
            let (got, rounded) = per_million(per_token);
            assert_eq!(got, want, "{per_token}");
            assert_eq!(rounded, per_token == "0.0000000000001", "{per_token}");
        }
    }

    #[test]
    fn rounding_is_half_up_and_carries() {
        assert_eq!(per_million("1.2345675e-6"), ("1.234568".into(), true));
        assert_eq!(per_million("9.9999999e-6"), ("10".into(), true));
        assert_eq!(per_million("1.2345674e-6"), ("1.234567".into(), true));
        assert_eq!(
            Decimal::parse("0.0000004").unwrap().to_text(6),
            ("0".into(), true)
        );
    }

    #[test]
    fn yaml_floats_are_read_as_written() {
        for (yaml, want) in [
            ("0.0000025", "2.5"),
            ("2.5e-06", "2.5"),
            ("0.1", "100000"),
            ("7", "7000000"),
            ("\"1e-6\"", "1"),
        ] {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
            let d = Decimal::from_yaml(&v).unwrap();
            assert_eq!(d.shift(6).to_text(6).0, want, "{yaml}");
        }
        for bad in ["-1", "true", "abc", ".nan", "[1]", "\"0x10\"", "\"\""] {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(bad).unwrap();
            assert_eq!(Decimal::from_yaml(&v), None, "{bad}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(Decimal::parse("1440").unwrap().to_u64(), Some(1440));
        assert_eq!(Decimal::parse("0.9").unwrap().to_u64(), None);
        assert_eq!(Decimal::parse("0.9").unwrap().shift(1).to_u64(), Some(9));
        assert_eq!(Decimal::parse("2.50").unwrap().exp(), -2);
    }
}
