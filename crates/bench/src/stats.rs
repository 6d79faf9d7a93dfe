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

#[cfg(test)]
mod tests {
    use super::*;

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
