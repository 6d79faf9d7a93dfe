//! Summary statistics of a sample: percentiles, mean and a 95 % confidence interval.

/// A summary of samples (in any unit; the harness uses microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Half-width of the 95 % confidence interval of the mean (normal approximation,
    /// 1.96 standard errors); 0 for fewer than two samples.
    pub ci95: f64,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let ci95 = if n > 1 {
            let variance = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            1.96 * (variance / n as f64).sqrt()
        } else {
            0.0
        };
        Some(Self {
            n,
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            mean,
            ci95,
        })
    }
}

/// The `p`th percentile of sorted samples, by linear interpolation between closest ranks
/// (the method of numpy's default and of Excel's PERCENTILE.INC).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0];
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// A ratio of medians with its bootstrap 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// median(a) / median(b).
    pub value: f64,
    /// 2.5th percentile of the resampled ratios.
    pub low: f64,
    /// 97.5th percentile of the resampled ratios.
    pub high: f64,
}

impl Ratio {
    /// `1.17x (1.02–1.31)`.
    pub fn show(&self) -> String {
        format!(
            "{:.2}x (95% CI {:.2}–{:.2})",
            self.value, self.low, self.high
        )
    }

    /// Whether the whole interval lies at or below `bound`.
    pub fn surely_at_most(&self, bound: f64) -> bool {
        self.high <= bound
    }

    /// Whether the whole interval lies above `bound`.
    pub fn surely_above(&self, bound: f64) -> bool {
        self.low > bound
    }
}

/// How many resamples [`ratio_of_medians`] draws: enough for stable 2.5/97.5 percentiles.
const RESAMPLES: usize = 2000;

/// median(a) / median(b), with a percentile-bootstrap 95 % interval: both samples are
/// resampled with replacement, independently, [`RESAMPLES`] times. The seed is fixed so a
/// report is reproducible from its raw data. `None` if either sample is empty or b's median
/// is not positive.
pub fn ratio_of_medians(a: &[f64], b: &[f64]) -> Option<Ratio> {
    ratio_of_percentiles(a, b, 50.0)
}

/// `a`'s `p`th percentile over `b`'s, with a bootstrap 95 % confidence interval (resampling
/// both sides), as [`ratio_of_medians`] does for the median.
pub fn ratio_of_percentiles(a: &[f64], b: &[f64], p: f64) -> Option<Ratio> {
    let at = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, p)
    };
    let (mut sa, mut sb) = (a.to_vec(), b.to_vec());
    if sa.is_empty() || sb.is_empty() {
        return None;
    }
    let (ma, mb) = (at(&mut sa), at(&mut sb));
    if mb <= 0.0 {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(0x1157_5eed);
    let mut ratios = Vec::with_capacity(RESAMPLES);
    let (mut ra, mut rb) = (Vec::with_capacity(a.len()), Vec::with_capacity(b.len()));
    for _ in 0..RESAMPLES {
        ra.clear();
        rb.clear();
        ra.extend((0..a.len()).map(|_| a[rng.usize(..a.len())]));
        rb.extend((0..b.len()).map(|_| b[rng.usize(..b.len())]));
        let d = at(&mut rb);
        if d > 0.0 {
            ratios.push(at(&mut ra) / d);
        }
    }
    ratios.sort_by(f64::total_cmp);
    Some(Ratio {
        value: ma / mb,
        low: percentile(&ratios, 2.5),
        high: percentile(&ratios, 97.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_interval_holds_the_ratio_and_narrows_with_data() {
        let a: Vec<f64> = (0..40).map(|i| 2.0 + f64::from(i % 7) * 0.1).collect();
        let b: Vec<f64> = (0..40).map(|i| 1.0 + f64::from(i % 5) * 0.05).collect();
        let r = ratio_of_medians(&a, &b).unwrap();
        assert!(r.low <= r.value && r.value <= r.high, "{r:?}");
        assert!(r.surely_above(1.5) && r.surely_at_most(2.6), "{r:?}");
        // Noisy, few samples: the interval straddles 1, so neither side may claim a win.
        let noisy = ratio_of_medians(&[0.8, 1.3, 0.9, 1.2], &[1.1, 0.7, 1.25, 0.95]).unwrap();
        assert!(
            !noisy.surely_above(1.0) && !noisy.surely_at_most(1.0),
            "{noisy:?}"
        );
        assert!(ratio_of_medians(&[], &b).is_none());
        assert!(ratio_of_medians(&a, &[0.0]).is_none());
    }

    #[test]
    fn percentiles_on_known_data() {
        let data: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&data).unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.min, 1.0);
        assert!((s.p50 - 50.5).abs() < 1e-9);
        assert!((s.p95 - 95.05).abs() < 1e-9);
        assert!((s.p99 - 99.01).abs() < 1e-9);
        assert!((s.mean - 50.5).abs() < 1e-9);
        // sd of 1..=100 is 29.011; 1.96 * 29.011 / 10 = 5.686.
        assert!((s.ci95 - 5.686).abs() < 1e-3, "{}", s.ci95);
    }

    #[test]
    fn order_does_not_matter_and_one_sample_has_no_interval() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.p50), (1.0, 2.0));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.ci95), (7.0, 7.0, 0.0));
        assert!(Summary::of(&[]).is_none());
    }
}
