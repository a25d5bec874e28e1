//! The sink's end-to-end latency histogram: how long tuples took from the source to the
//! sink, kept by the sink task, carried to the leader on its reports, and shown per job as
//! p50/p99/max by the API and the dashboard.

/// Tuple latency summary (source emit → sink write), as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl LatencyHist {
    /// Adds what `other` recorded to this one.
    pub fn merge(&mut self, other: &LatencyHist) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (b, n) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += n;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// A job's end-to-end latency over all its sink's attempts. Each attempt reports the
/// histograms of what it committed since it started (a new attempt, after a restart, a drain
/// or a move, starts empty), so the job's are those of the attempts that ended plus the
/// current one's; a late report of an attempt already replaced changes nothing.
#[derive(Clone, Debug, Default)]
pub struct SinkLatency {
    attempt: u32,
    ended: (LatencyHist, crate::hist::Hist),
    current: (LatencyHist, crate::hist::Hist),
}

impl SinkLatency {
    /// Takes attempt `attempt`'s latest histograms (the summary one and the Prometheus one).
    pub fn report(
        &mut self,
        attempt: u32,
        summary: Option<&LatencyHist>,
        prom: Option<&crate::hist::Hist>,
    ) {
        if attempt < self.attempt {
            return;
        }
        if attempt > self.attempt {
            let (s, p) = std::mem::take(&mut self.current);
            self.ended.0.merge(&s);
            self.ended.1.merge(&p);
            self.attempt = attempt;
        }
        if let Some(s) = summary {
            self.current.0 = s.clone();
        }
        if let Some(p) = prom {
            self.current.1 = p.clone();
        }
    }

    /// Every attempt's tuples, as a summary histogram.
    pub fn summary(&self) -> LatencyHist {
        let mut t = self.ended.0.clone();
        t.merge(&self.current.0);
        t
    }

    /// Every attempt's tuples, as a Prometheus histogram.
    pub fn prometheus(&self) -> crate::hist::Hist {
        let mut t = self.ended.1.clone();
        t.merge(&self.current.1);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::{LatencyHist, SinkLatency};

    #[test]
    fn a_job_s_latency_counts_every_sink_attempt_s_tuples() {
        let mut one = LatencyHist::default();
        one.record(1_000, 10);
        let mut two = LatencyHist::default();
        two.record(5_000, 3);
        let mut prom = crate::hist::Hist::default();
        prom.record(1_000, 10);
        let mut j = SinkLatency::default();
        j.report(0, Some(&one), Some(&prom));
        // Attempt 1 starts empty and reports its own; attempt 0's stay counted.
        j.report(1, Some(&two), None);
        assert_eq!(j.summary().count, 13);
        assert_eq!(j.summary().max_us, 5_000);
        assert_eq!(j.prometheus().count(), 10);
        // A late report of attempt 0 changes nothing; attempt 1's next one replaces its last.
        j.report(0, Some(&one), Some(&prom));
        let mut two_more = two.clone();
        two_more.record(2_000, 1);
        j.report(1, Some(&two_more), None);
        assert_eq!(j.summary().count, 14);
    }

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
