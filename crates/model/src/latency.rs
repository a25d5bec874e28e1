//! The sink's end-to-end latency histogram: how long tuples took from the source to the
//! sink, kept by the sink task, carried to the leader on its reports, and shown per job as
//! p50/p99/max by the API and the dashboard.

/// Tuple latency summary (source emit → sink write), as the API shows it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Maximum, ms.
    pub max: f64,
}

/// Log-scale latency histogram (5% buckets from 1 µs), cheap to update per batch.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyHist {
    buckets: Vec<u64>,
    max_us: u64,
    count: u64,
}

const GROWTH: f64 = 1.05;

impl LatencyHist {
    /// Records `n` tuples that took `us` microseconds.
    pub fn record(&mut self, us: u64, n: u64) {
        let b = ((us.max(1) as f64).ln() / GROWTH.ln()) as usize;
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += n;
        self.count += n;
        self.max_us = self.max_us.max(us);
    }

    /// p50, p99 and max in milliseconds, if anything was recorded.
    pub fn summary(&self) -> Option<Latency> {
        if self.count == 0 {
            return None;
        }
        let q = |p: f64| {
            let target = (self.count as f64 * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in self.buckets.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return (GROWTH.powi(i as i32 + 1) / 1000.0).min(self.max_us as f64 / 1000.0);
                }
            }
            self.max_us as f64 / 1000.0
        };
        Some(Latency {
            p50: q(0.5),
            p99: q(0.99),
            max: self.max_us as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LatencyHist;

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHist::default();
        assert!(h.summary().is_none());
        for us in 1..=1000u64 {
            h.record(us * 10, 1);
        }
        let s = h.summary().unwrap();
        assert!((s.p50 - 5.0).abs() < 0.5, "{s:?}");
        assert!((s.p99 - 9.9).abs() < 0.6, "{s:?}");
        assert_eq!(s.max, 10.0);
    }
}
