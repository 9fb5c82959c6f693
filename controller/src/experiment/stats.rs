//! How sure an experiment is: the difference between an arm and the
//! baseline as a 95% confidence interval from repeated runs, and the verdict
//! that follows from it.
//!
//! The interval is a paired t-interval. Each block of an experiment runs
//! every arm once at a load, in an alternating order, so what drifts between
//! blocks (a neighbour's load, a cache warming, the time of day) shifts both
//! runs of a pair alike and cancels in their difference. The per-pair
//! differences are what vary; with a handful of runs their spread is
//! unknown, so Student's t (not the normal distribution) sets the width. A
//! bootstrap would need more runs than an experiment usually has (with four
//! pairs it can only resample 35 distinct sets). The difference is given in
//! percent of the baseline's mean (in percentage points for an error rate).

use serde::Serialize;

/// Which way a measure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// How a difference is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Percent of the baseline's mean.
    Relative,
    /// Percentage points (an error rate, whose baseline may be 0).
    Points,
}

/// The verdict an interval allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    /// The interval lies within the margin: no difference that matters.
    Same,
    /// The interval is wider than the margin and holds 0.
    Inconclusive,
}

/// An arm against the baseline on one measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Pairs (blocks) the interval is made of.
    pub pairs: usize,
    /// `None` when fewer than two pairs, or a relative difference of a
    /// baseline whose mean is 0.
    pub difference_pct: Option<f64>,
    pub ci_low_pct: Option<f64>,
    pub ci_high_pct: Option<f64>,
    pub verdict: Verdict,
    /// The verdict in words, with why.
    pub words: String,
}

/// Two-sided 95% quantiles of Student's t, by degrees of freedom 1..=30.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
pub fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T_975[df - 1],
        // Beyond the table: within 0.5% of the exact value from 31 on.
        _ => 1.96 + 2.4 / df as f64,
    }
}

/// Mean and sample standard deviation.
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// What a verdict is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Judging<'a> {
    /// The baseline arm's name and the other's, for the words.
    pub baseline: &'a str,
    pub arm: &'a str,
    /// What is measured, for the words ("p95", "requests/s").
    pub what: &'a str,
    /// How a rise and a fall read ("slower", "faster").
    pub up: &'a str,
    pub down: &'a str,
    pub better: Better,
    pub scale: Scale,
    /// An interval within ± this is "same" (percent, or points).
    pub margin: f64,
}

/// The difference of `arm` against `baseline`, run by run in pairs (the
/// i-th value of each is from the same block).
pub fn difference(pairs: &[(f64, f64)], j: Judging<'_>) -> Difference {
    let n = pairs.len();
    let unit = match j.scale {
        Scale::Relative => "%",
        Scale::Points => " points",
    };
    let none = |words: String| Difference {
        pairs: n,
        difference_pct: None,
        ci_low_pct: None,
        ci_high_pct: None,
        verdict: Verdict::Inconclusive,
        words,
    };
    if n < 2 {
        return none(format!(
            "inconclusive: {n} pair(s) of runs; an interval needs at least 2"
        ));
    }
    if pairs.iter().all(|(a, b)| a == b) {
        let v = pairs[0].0;
        let all_same = pairs.iter().all(|p| p.0 == v);
        return Difference {
            pairs: n,
            difference_pct: Some(0.0),
            ci_low_pct: Some(0.0),
            ci_high_pct: Some(0.0),
            verdict: Verdict::Same,
            words: if all_same {
                format!("same: {} {v} in every run of both arms", j.what)
            } else {
                format!("same: {} equal in every pair of runs", j.what)
            },
        };
    }
    let base_mean = pairs.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let scale = match j.scale {
        Scale::Relative if base_mean == 0.0 => {
            return none(format!(
                "inconclusive: the baseline's {} is 0, so no relative difference",
                j.what
            ));
        }
        Scale::Relative => 100.0 / base_mean,
        Scale::Points => 1.0,
    };
    let diffs: Vec<f64> = pairs.iter().map(|(a, b)| (b - a) * scale).collect();
    let (mean, sd) = mean_sd(&diffs);
    let half = t_975(n - 1) * sd / (n as f64).sqrt();
    let (low, high) = (mean - half, mean + half);
    let m = j.margin;
    let verdict = if low >= -m && high <= m {
        Verdict::Same
    } else if low > 0.0 || high < 0.0 {
        let up = low > 0.0;
        match (up, j.better) {
            (true, Better::Lower) | (false, Better::Higher) => Verdict::Worse,
            _ => Verdict::Better,
        }
    } else {
        Verdict::Inconclusive
    };
    let words = match verdict {
        Verdict::Same => format!(
            "same: {} no different from {} in {} beyond ±{:.1}{unit} ({:+.1}{unit} [{:+.1}, {:+.1}])",
            j.arm,
            j.baseline,
            j.what,
            low.abs().max(high.abs()),
            mean,
            low,
            high
        ),
        Verdict::Better | Verdict::Worse => format!(
            "{}: {} {} than {} by {:.1}{unit} in {} [{:+.1}, {:+.1}]",
            if verdict == Verdict::Better {
                "better"
            } else {
                "worse"
            },
            j.arm,
            if mean > 0.0 { j.up } else { j.down },
            j.baseline,
            mean.abs(),
            j.what,
            low,
            high
        ),
        Verdict::Inconclusive => {
            // Runs per arm for a half-width within the margin, if the pairs
            // keep varying as they did.
            let needed = (2..=1000).find(|&k| t_975(k - 1) * sd / (k as f64).sqrt() <= m);
            let more = match needed {
                Some(k) if k > n => format!(
                    "; about {} more run(s) per arm would resolve a {m:.0}{unit} difference",
                    k - n
                ),
                _ => String::new(),
            };
            format!(
                "inconclusive: {} {:+.1}{unit} [{:+.1}, {:+.1}]; the runs vary by ±{half:.1}{unit}{more}",
                j.what, mean, low, high
            )
        }
    };
    Difference {
        pairs: n,
        difference_pct: Some(mean),
        ci_low_pct: Some(low),
        ci_high_pct: Some(high),
        verdict,
        words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judging(better: Better) -> Judging<'static> {
        Judging {
            baseline: "file",
            arm: "redis",
            what: "p50",
            up: "slower",
            down: "faster",
            better,
            scale: Scale::Relative,
            margin: 5.0,
        }
    }

    #[test]
    fn the_t_table_holds_known_values() {
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(3), 3.182);
        assert_eq!(t_975(30), 2.042);
        // t(60) = 2.000, t(120) = 1.980
        assert!((t_975(60) - 2.000).abs() < 0.01, "{}", t_975(60));
        assert!((t_975(120) - 1.980).abs() < 0.01, "{}", t_975(120));
    }

    #[test]
    fn a_clear_slowdown_is_worse_with_its_interval() {
        // 20 ms against 24 ms, with a little noise: +20%.
        let pairs = [(20.1, 24.2), (20.3, 24.1), (19.9, 24.0), (20.0, 24.3)];
        let d = difference(&pairs, judging(Better::Lower));
        assert_eq!(d.verdict, Verdict::Worse, "{}", d.words);
        let (lo, hi) = (d.ci_low_pct.unwrap(), d.ci_high_pct.unwrap());
        assert!(lo < 20.0 && 20.0 < hi, "[{lo}, {hi}]");
        assert!(lo > 0.0);
        assert!(
            d.words
                .starts_with("worse: redis slower than file by 20.3% in p50"),
            "{}",
            d.words
        );
        // Throughput going up is better.
        let d = difference(
            &pairs,
            Judging {
                what: "requests/s",
                ..judging(Better::Higher)
            },
        );
        assert_eq!(d.verdict, Verdict::Better);
    }

    #[test]
    fn the_same_store_is_same_or_inconclusive() {
        let same = [(20.1, 20.2), (20.3, 20.1), (19.9, 20.0), (20.0, 19.9)];
        let d = difference(&same, judging(Better::Lower));
        assert_eq!(d.verdict, Verdict::Same, "{}", d.words);
        assert!(d.ci_low_pct.unwrap() < 0.0 && d.ci_high_pct.unwrap() > 0.0);
        // Noisy runs: the interval is wider than the margin.
        let noisy = [(20.0, 30.0), (25.0, 18.0), (19.0, 24.0), (30.0, 22.0)];
        let d = difference(&noisy, judging(Better::Lower));
        assert_eq!(d.verdict, Verdict::Inconclusive, "{}", d.words);
        assert!(d.words.contains("more run(s) per arm"), "{}", d.words);
    }

    #[test]
    fn the_interval_matches_a_hand_computation() {
        // Differences 1, 2, 3 (of a baseline mean of 10): mean 2 → 20%;
        // sd 1, t(2) = 4.303, half-width 4.303/√3 = 2.484 → ±24.84%.
        let pairs = [(10.0, 11.0), (10.0, 12.0), (10.0, 13.0)];
        let d = difference(&pairs, judging(Better::Lower));
        assert!((d.difference_pct.unwrap() - 20.0).abs() < 1e-9);
        assert!((d.ci_low_pct.unwrap() - (20.0 - 24.843)).abs() < 0.01);
        assert!((d.ci_high_pct.unwrap() - (20.0 + 24.843)).abs() < 0.01);
    }

    #[test]
    fn too_few_runs_or_a_zero_baseline_say_why() {
        let d = difference(&[(1.0, 2.0)], judging(Better::Lower));
        assert_eq!(d.verdict, Verdict::Inconclusive);
        assert!(d.words.contains("at least 2"), "{}", d.words);
        let d = difference(&[(0.0, 2.0), (0.0, 1.0)], judging(Better::Lower));
        assert!(d.words.contains("is 0"), "{}", d.words);
        // Points need no baseline.
        let d = difference(
            &[(0.0, 2.0), (0.0, 2.5), (0.0, 1.5)],
            Judging {
                scale: Scale::Points,
                margin: 1.0,
                ..judging(Better::Lower)
            },
        );
        assert_eq!(d.verdict, Verdict::Worse, "{}", d.words);
        assert!(d.words.contains("points"), "{}", d.words);
    }
}
