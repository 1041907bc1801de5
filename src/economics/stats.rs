//! How sure an A/B answer is: 95% intervals from counters alone (n, sum, sum of squares), so
//! they can be computed from one process's ledger or from Prometheus counters summed over a
//! fleet. Student's t for means, Welch for a difference of means, Wilson for 0/1 scores.
//! Checked against scipy on fixed data (the tests below).

/// The 97.5th percentile of the standard normal distribution.
const Z_975: f64 = 1.959_963_984_540_054;

/// A sample summarised by its count, sum and sum of squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// A value with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Moments {
    /// The moments of a list of values.
    pub fn of(values: &[f64]) -> Moments {
        values.iter().fold(Moments::default(), |m, v| Moments {
            n: m.n + 1.0,
            sum: m.sum + v,
            sum_sq: m.sum_sq + v * v,
        })
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0.0).then(|| self.sum / self.n)
    }

    /// The sample variance (n − 1 in the denominator); never negative (rounding aside).
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1.0).then(|| {
            let m = self.sum / self.n;
            ((self.sum_sq - self.n * m * m) / (self.n - 1.0)).max(0.0)
        })
    }

    /// The mean with its 95% interval (Student's t, n − 1 degrees of freedom).
    pub fn mean_ci95(&self) -> Option<Interval> {
        let (m, v) = (self.mean()?, self.variance()?);
        let half = t_975(self.n - 1.0)? * (v / self.n).sqrt();
        Some(Interval {
            value: m,
            low: m - half,
            high: m + half,
        })
    }
}

/// The difference of two means, `a − b`, with its 95% interval (Welch: unequal variances,
/// Welch–Satterthwaite degrees of freedom).
pub fn diff_ci95(a: &Moments, b: &Moments) -> Option<Interval> {
    let (ma, mb) = (a.mean()?, b.mean()?);
    let (sa, sb) = (a.variance()? / a.n, b.variance()? / b.n);
    let se2 = sa + sb;
    let d = ma - mb;
    if se2 <= 0.0 {
        return Some(Interval {
            value: d,
            low: d,
            high: d,
        });
    }
    let df = se2 * se2 / (sa * sa / (a.n - 1.0) + sb * sb / (b.n - 1.0));
    let half = t_975(df)? * se2.sqrt();
    Some(Interval {
        value: d,
        low: d - half,
        high: d + half,
    })
}

/// Requests per arm for the 95% interval of `a − b` to exclude zero, at the current variances
/// and difference; `None` when there is no difference to detect.
pub fn requests_per_arm_needed(a: &Moments, b: &Moments) -> Option<f64> {
    let d = (a.mean()? - b.mean()?).abs();
    let var = a.variance()? + b.variance()?;
    (d > 0.0).then(|| (Z_975 * Z_975 * var / (d * d)).ceil())
}

/// The Wilson score interval of a proportion, `k` successes in `n`, at 95%.
pub fn wilson95(k: f64, n: f64) -> Option<Interval> {
    if n <= 0.0 || !(0.0..=n).contains(&k) {
        return None;
    }
    let p = k / n;
    let z2 = Z_975 * Z_975;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z_975 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(Interval {
        value: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    })
}

/// Student's t 97.5th percentile for `df` (> 0, not necessarily whole) degrees of freedom.
pub fn t_975(df: f64) -> Option<f64> {
    if df.is_nan() || df <= 0.0 || df.is_infinite() {
        return None;
    }
    // P(T > t) = I_{df/(df+t²)}(df/2, 1/2) / 2; find t where it is 0.025, by bisection
    let tail = |t: f64| 0.5 * beta_inc(df / 2.0, 0.5, df / (df + t * t));
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while tail(hi) > 0.025 {
        hi *= 2.0;
        if hi > 1e12 {
            return None;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > 0.025 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi {
            break;
        }
    }
    Some(0.5 * (lo + hi))
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b) (continued fraction, Lentz's method).
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // the continued fraction converges fast for x < (a + 1) / (a + b + 2); else use the symmetry
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let mut f = 1.0;
    let mut c = 1.0;
    let mut d = 0.0;
    for i in 0..=400u32 {
        let m = f64::from(i / 2);
        let numerator = if i == 0 {
            1.0
        } else if i % 2 == 0 {
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        } else {
            -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        };
        d = 1.0 + numerator * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = 1.0 + numerator / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let cd = c * d;
        f *= cd;
        if (1.0 - cd).abs() < 1e-16 {
            break;
        }
    }
    front * (f - 1.0) / a
}

/// A fine-tune wins when its cost difference is surely below zero and its quality is not worse
/// than this (mean feedback, on a 0..1 scale).
pub const QUALITY_MARGIN: f64 = 0.02;

/// An A/B answer and how sure it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Fine-tune minus base cost per answered request, with its 95% interval.
    pub cost: Option<Interval>,
    /// Fine-tune minus base mean feedback score, with its 95% interval.
    pub quality: Option<Interval>,
    pub text: String,
}

/// The decision rule, from the cost per answered request and the feedback scores of each arm.
/// "fine-tune wins": the 95% interval of (fine-tune − base) cost lies below zero, and quality is
/// not worse by more than `margin` (the route's `experiment.quality_margin`, default
/// [`QUALITY_MARGIN`]; the lower end of its interval is above −margin;
/// without feedback on both arms quality is not judged, and the sentence says so). "base wins":
/// the cost interval lies above zero and quality is not better by the margin, or quality is
/// surely worse by more than the margin. Otherwise "keep testing", with the requests per arm the
/// cost interval needs to exclude zero at the current variances.
pub fn decide(
    ft_cost: &Moments,
    base_cost: &Moments,
    ft_q: &Moments,
    base_q: &Moments,
    margin: f64,
) -> Decision {
    let cost = diff_ci95(ft_cost, base_cost);
    let quality = diff_ci95(ft_q, base_q);
    let quality_worse = quality.is_some_and(|q| q.high < -margin);
    let quality_ok = quality.is_none_or(|q| q.low > -margin);
    let quality_better = quality.is_some_and(|q| q.low > margin);
    let unjudged = if quality.is_none() {
        " (quality not judged: no feedback on both arms)"
    } else {
        ""
    };
    let text = match cost {
        Some(c) if c.high < 0.0 && quality_ok => format!("fine-tune wins{unjudged}"),
        Some(c) if c.low > 0.0 && !quality_better => format!("base wins{unjudged}"),
        _ if quality_worse => "base wins (the fine-tune's answers score worse)".to_owned(),
        _ => match requests_per_arm_needed(ft_cost, base_cost) {
            Some(n) => format!(
                "keep testing: about {} more requests per arm at the current variance",
                (n - ft_cost.n.min(base_cost.n)).max(1.0) as u64
            ),
            None => "keep testing: no cost difference seen yet".to_owned(),
        },
    };
    Decision {
        cost,
        quality,
        text,
    }
}

/// The mean score with its 95% interval: Wilson when every score is 0 or 1 (their squares sum
/// to their sum), Student's t otherwise.
pub fn score_interval(m: &Moments) -> Option<Interval> {
    if m.n > 0.0 && (m.sum_sq - m.sum).abs() < 1e-9 {
        return wilson95(m.sum, m.n);
    }
    m.mean_ci95()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative difference within 1e-6 (absolute near zero).
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-6 * want.abs().max(1e-3)
    }

    // Reference values: scipy 1.14.1, computed with
    //   stats.t.ppf(0.975, df)
    //   stats.t.interval(0.95, n-1, loc=mean, scale=stats.sem(x))
    //   stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    //   stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    const A: [f64; 7] = [0.0123, 0.0150, 0.0098, 0.0132, 0.0141, 0.0119, 0.0127];
    const B: [f64; 9] = [
        0.0101, 0.0099, 0.0110, 0.0093, 0.0105, 0.0097, 0.0102, 0.0108, 0.0095,
    ];

    #[test]
    fn t_quantiles_match_scipy() {
        for (df, want) in [
            (1.0, 12.706204736432095),
            (2.0, 4.302652729696142),
            (6.0, 2.4469118511449692),
            (8.0, 2.306004135204166),
            (30.0, 2.0422724563012373),
            (1000.0, 1.9623390808264074),
        ] {
            let got = t_975(df).unwrap();
            assert!(close(got, want), "df {df}: {got} vs {want}");
        }
        assert_eq!(t_975(0.0), None);
        assert_eq!(t_975(f64::NAN), None);
    }

    #[test]
    fn mean_intervals_match_scipy() {
        let a = Moments::of(&A).mean_ci95().unwrap();
        assert!(close(a.value, 0.012714285714285716));
        assert!(close(a.low, 0.011170939578210862), "{a:?}");
        assert!(close(a.high, 0.01425763185036057), "{a:?}");
        let b = Moments::of(&B).mean_ci95().unwrap();
        assert!(close(b.low, 0.009667135534088253), "{b:?}");
        assert!(close(b.high, 0.010555086688133968), "{b:?}");
        assert_eq!(
            Moments::of(&[1.0]).mean_ci95(),
            None,
            "one value has no spread"
        );
    }

    #[test]
    fn welch_difference_matches_scipy() {
        let d = diff_ci95(&Moments::of(&A), &Moments::of(&B)).unwrap();
        assert!(close(d.value, 0.0026031746031746055));
        assert!(close(d.low, 0.0010492711037323953), "{d:?}");
        assert!(close(d.high, 0.004157078102616816), "{d:?}");
    }

    #[test]
    fn wilson_intervals_match_scipy() {
        for (k, n, lo, hi) in [
            (7.0, 10.0, 0.39677814746114526, 0.892208732593699),
            (0.0, 5.0, 0.0, 0.43448246478317476),
            (40.0, 40.0, 0.9123783988027133, 1.0),
            (123.0, 456.0, 0.2310496275621628, 0.31227123667969053),
        ] {
            let w = wilson95(k, n).unwrap();
            assert!(close(w.low, lo) && close(w.high, hi), "{k}/{n}: {w:?}");
        }
        assert_eq!(wilson95(1.0, 0.0), None);
    }

    #[test]
    fn requests_needed_shrink_the_interval_past_zero() {
        let (a, b) = (Moments::of(&A), Moments::of(&B));
        let n = requests_per_arm_needed(&a, &b).unwrap();
        // with n per arm at these variances the half-width is at most the difference
        let half = Z_975 * ((a.variance().unwrap() + b.variance().unwrap()) / n).sqrt();
        assert!(half <= (a.mean().unwrap() - b.mean().unwrap()).abs() + 1e-18);
        assert_eq!(requests_per_arm_needed(&a, &a), None);
    }

    #[test]
    fn the_decision_rule_says_how_sure_it_is() {
        let spread = |center: f64, n: usize| -> Moments {
            Moments::of(
                &(0..n)
                    .map(|i| center + 0.001 * ((i % 5) as f64 - 2.0))
                    .collect::<Vec<_>>(),
            )
        };
        let ones = Moments::of(&[1.0; 30]);
        let none = Moments::default();
        // clearly cheaper, quality as good: wins
        let d = decide(
            &spread(0.006, 50),
            &spread(0.010, 50),
            &ones,
            &ones,
            QUALITY_MARGIN,
        );
        assert_eq!(d.text, "fine-tune wins", "{d:?}");
        let c = d.cost.unwrap();
        assert!(c.high < 0.0 && (c.value + 0.004).abs() < 1e-12, "{c:?}");
        // no feedback: decided on cost, and it says quality was not judged
        let d = decide(
            &spread(0.006, 50),
            &spread(0.010, 50),
            &none,
            &none,
            QUALITY_MARGIN,
        );
        assert!(
            d.text.starts_with("fine-tune wins (quality not judged"),
            "{}",
            d.text
        );
        // cheaper but its answers score worse (half the 0/1 scores against nine in ten)
        let half = Moments::of(&(0..40).map(|i| f64::from(i % 2)).collect::<Vec<_>>());
        let most = Moments::of(
            &(0..40)
                .map(|i| if i % 10 == 0 { 0.0 } else { 1.0 })
                .collect::<Vec<_>>(),
        );
        let d = decide(
            &spread(0.006, 50),
            &spread(0.010, 50),
            &half,
            &most,
            QUALITY_MARGIN,
        );
        assert!(d.text.starts_with("base wins"), "{}", d.text);
        assert!(d.quality.unwrap().high < -QUALITY_MARGIN);
        // a route that accepts a much lower score for the price: the fine-tune wins there
        let d = decide(&spread(0.006, 50), &spread(0.010, 50), &half, &most, 0.6);
        assert_eq!(d.text, "fine-tune wins", "{d:?}");
        // dearer, quality the same: base wins
        let d = decide(
            &spread(0.012, 50),
            &spread(0.010, 50),
            &ones,
            &ones,
            QUALITY_MARGIN,
        );
        assert_eq!(d.text, "base wins");
        // three requests each and a small difference: keep testing, with a number
        let d = decide(
            &Moments::of(&[0.009, 0.011, 0.0095]),
            &Moments::of(&[0.010, 0.0105, 0.0098]),
            &none,
            &none,
            QUALITY_MARGIN,
        );
        assert!(d.text.starts_with("keep testing: about "), "{}", d.text);
        // 0/1 scores get Wilson's interval
        assert_eq!(score_interval(&half), wilson95(20.0, 40.0));
    }
}
