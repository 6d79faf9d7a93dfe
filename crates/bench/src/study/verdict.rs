//! The runtime-selection verdict: which backend wins cold start, execution, and the total cost
//! over 1, 10 and 100 invocations, and where the winner changes.

/// One backend's medians for one workload, in milliseconds.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Backend name.
    pub backend: String,
    /// One-time cost before the first invocation (the compile an AOT cache pays once).
    pub setup_ms: f64,
    /// Median end-to-end cost of one invocation.
    pub per_invocation_ms: f64,
    /// Median cold start, when the backend reports it.
    pub cold_ms: Option<f64>,
    /// Median execution, when the backend reports it.
    pub exec_ms: Option<f64>,
}

impl Candidate {
    /// The total cost of `n` invocations.
    pub fn total(&self, n: u32) -> f64 {
        self.setup_ms + f64::from(n) * self.per_invocation_ms
    }
}

/// The verdict for one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Fastest cold start.
    pub cold: Option<String>,
    /// Fastest execution.
    pub exec: Option<String>,
    /// Cheapest total for 1, 10 and 100 invocations.
    pub totals: Vec<(u32, String)>,
    /// Each `n` (up to 1000) from which another backend becomes the cheapest in total.
    pub crossovers: Vec<(u32, String)>,
}

fn best(c: &[Candidate], key: impl Fn(&Candidate) -> Option<f64>) -> Option<&Candidate> {
    c.iter().filter(|c| key(c).is_some()).min_by(|a, b| {
        key(a)
            .unwrap_or(f64::MAX)
            .total_cmp(&key(b).unwrap_or(f64::MAX))
    })
}

/// Decides among comparable candidates (leave emulated ones out before calling).
pub fn decide(candidates: &[Candidate]) -> Verdict {
    let name = |c: Option<&Candidate>| c.map(|c| c.backend.clone());
    let cheapest = |n: u32| name(best(candidates, |c| Some(c.total(n))));
    let mut crossovers = Vec::new();
    let mut current = None;
    for n in 1..=1000 {
        let winner = cheapest(n);
        if winner != current {
            if let Some(w) = &winner {
                crossovers.push((n, w.clone()));
            }
            current = winner;
        }
    }
    Verdict {
        cold: name(best(candidates, |c| c.cold_ms)),
        exec: name(best(candidates, |c| c.exec_ms)),
        totals: [1, 10, 100]
            .into_iter()
            .filter_map(|n| cheapest(n).map(|w| (n, w)))
            .collect(),
        crossovers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(backend: &str, setup: f64, per: f64, cold: Option<f64>, exec: Option<f64>) -> Candidate {
        Candidate {
            backend: backend.into(),
            setup_ms: setup,
            per_invocation_ms: per,
            cold_ms: cold,
            exec_ms: exec,
        }
    }

    #[test]
    fn a_setup_cost_is_won_back_after_the_crossover() {
        // "cached" pays 52 ms once, then 1 ms a call; "spawn" pays 6 ms every call.
        let v = decide(&[
            c("cached", 52.0, 1.0, Some(0.01), Some(0.99)),
            c("spawn", 0.0, 6.0, Some(1.0), Some(0.5)),
        ]);
        assert_eq!(v.cold.as_deref(), Some("cached"));
        assert_eq!(v.exec.as_deref(), Some("spawn"));
        assert_eq!(
            v.totals,
            vec![
                (1, "spawn".into()),
                (10, "spawn".into()),
                (100, "cached".into())
            ]
        );
        // 52 + n < 6n from n = 11 on.
        assert_eq!(
            v.crossovers,
            vec![(1, "spawn".into()), (11, "cached".into())]
        );
    }

    #[test]
    fn missing_figures_do_not_win() {
        let v = decide(&[
            c("cli", 0.0, 10.0, None, None),
            c("x", 0.0, 20.0, Some(5.0), None),
        ]);
        assert_eq!(v.cold.as_deref(), Some("x"));
        assert_eq!(v.exec, None);
        assert_eq!(v.crossovers, vec![(1, "cli".into())]);
    }
}
