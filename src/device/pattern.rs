//! `device simulate --pattern`: readings shaped like the anomalies the analytics detector
//! looks for, so a demo or a test can show each one arriving. Every value is drawn from the
//! thing's name, `--seed` and the reading's index alone, so a run can be repeated exactly and
//! a test knows what each device sent.

use std::fmt;

/// What a device's readings look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Noise around the device's own baseline.
    Normal,
    /// From the onset, a steady climb faster than `analytics.max_rate` per reading.
    Drift,
    /// From the onset, the same value again and again.
    Stuck,
    /// One reading far above the baseline at the onset, normal before and after.
    Spike,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Pattern::Normal,
        Pattern::Drift,
        Pattern::Stuck,
        Pattern::Spike,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Normal => "normal",
            Pattern::Drift => "drift",
            Pattern::Stuck => "stuck",
            Pattern::Spike => "spike",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a pattern: normal, drift, stuck or spike"))
    }
}

/// The noise's standard deviation, °C.
pub const NOISE: f64 = 0.2;
/// How far a spike goes above the baseline, °C: 60 times the noise's MAD, an outlier for any
/// threshold iotreg accepts.
pub const SPIKE: f64 = 12.0;

/// Where the anomaly starts and how steep a drift is, from the detector's settings: the
/// onset comes after the history the z-score needs, a drift climbs twice the rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub onset: u32,
    pub drift_per_reading: f64,
    /// Readings the pattern needs in all for the detector to see it.
    pub needs: u32,
}

impl Shape {
    pub fn new(pattern: Pattern, a: &crate::config::analytics::AnalyticsConfig) -> Shape {
        let onset = a.min_history + 5;
        let needs = match pattern {
            Pattern::Normal => 1,
            Pattern::Spike => onset + 3,
            Pattern::Stuck => onset + a.stuck_count + 2,
            Pattern::Drift => onset + a.rate_window + 2,
        };
        Shape {
            onset,
            drift_per_reading: 2.0 * a.max_rate,
            needs,
        }
    }
}

/// Reading `i` (from 0) of `thing`.
pub fn value(pattern: Pattern, shape: &Shape, thing: &str, seed: u64, i: u32) -> f64 {
    let key = hash(thing) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The device's own baseline, 20.00 to 23.99 °C.
    let baseline = 20.0 + (key % 400) as f64 / 100.0;
    let normal = |i: u32| round(baseline + NOISE * gaussian(key, i));
    let onset = shape.onset;
    match pattern {
        Pattern::Normal => normal(i),
        Pattern::Spike if i == onset => round(baseline + SPIKE),
        Pattern::Spike => normal(i),
        Pattern::Stuck if i >= onset => normal(onset),
        Pattern::Stuck => normal(i),
        Pattern::Drift if i >= onset => {
            round(normal(i) + f64::from(i - onset + 1) * shape.drift_per_reading)
        }
        Pattern::Drift => normal(i),
    }
}

/// Two decimals, as a sensor reports.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// FNV-1a: a stable hash of the name (std's hasher may change between Rust releases).
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64: a well-mixed 64-bit value for each input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw for reading `i` (Box–Muller on two uniform draws).
fn gaussian(key: u64, i: u32) -> f64 {
    let base = key ^ (u64::from(i) << 32);
    let uniform = |z: u64| ((mix(z) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (uniform(base), uniform(base ^ 0x5555_5555));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::analytics::AnalyticsConfig;

    fn series(p: Pattern, n: u32) -> (Shape, Vec<f64>) {
        let shape = Shape::new(p, &AnalyticsConfig::default());
        (
            shape,
            (0..n)
                .map(|i| value(p, &shape, "sensor-0001", 7, i))
                .collect(),
        )
    }

    #[test]
    fn the_same_inputs_draw_the_same_readings() {
        assert_eq!(series(Pattern::Normal, 50).1, series(Pattern::Normal, 50).1);
        let shape = Shape::new(Pattern::Normal, &AnalyticsConfig::default());
        let other = value(Pattern::Normal, &shape, "sensor-0002", 7, 3);
        assert_ne!(series(Pattern::Normal, 4).1[3], other);
    }

    #[test]
    fn normal_readings_are_noise_around_a_baseline() {
        let (_, v) = series(Pattern::Normal, 2000);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((20.0..24.2).contains(&mean), "{mean}");
        assert!((sd - NOISE).abs() < 0.02, "{sd}");
        assert!(v.windows(2).filter(|w| w[0] == w[1]).count() < 40);
    }

    #[test]
    fn each_anomaly_starts_at_the_onset() {
        let (shape, normal) = series(Pattern::Normal, 60);
        let onset = shape.onset as usize;
        assert_eq!(onset, 35);
        let (_, spike) = series(Pattern::Spike, 60);
        assert!(spike[onset] - normal[onset] > 10.0);
        assert_eq!(spike[onset + 1], normal[onset + 1]);
        let (shape, stuck) = series(Pattern::Stuck, 60);
        assert_eq!(shape.needs, 47);
        assert!(stuck[onset..].iter().all(|v| *v == stuck[onset]));
        assert_eq!(stuck[..onset], normal[..onset]);
        let (_, drift) = series(Pattern::Drift, 60);
        assert!(drift[onset + 10] - normal[onset + 10] > 21.0);
    }
}
