//! Latency figures for a summary: nearest-rank percentiles.

use std::time::Duration;

/// The `p`-th percentile (0–100) by nearest rank: the smallest value with at least p% of the
/// values at or below it. None for no values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 and p99 of unsorted latencies, in milliseconds.
pub fn p50_p99_ms(latencies: &[Duration]) -> (Option<f64>, Option<f64>) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        percentile(&sorted, 50.0).map(ms),
        percentile(&sorted, 99.0).map(ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        let hundred: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&hundred, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&hundred, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&hundred, 0.0), Some(Duration::from_millis(1)));
        let (p50, p99) = p50_p99_ms(&ms(&[30, 10, 20]));
        assert_eq!((p50, p99), (Some(20.0), Some(30.0)));
    }
}
