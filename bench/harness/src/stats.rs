//! Small statistics: latency percentiles from a histogram, medians over
//! repetitions, and ratios that tolerate missing figures.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds.
    pub fn from_nanos(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    /// The percentiles reported in tables, with their labels.
    pub fn labelled(&self) -> [(&'static str, f64); 4] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
        ]
    }

    /// Field-by-field `self - base`: the latency a proxy adds.
    pub fn minus(&self, base: &Percentiles) -> Percentiles {
        Percentiles {
            p50: self.p50 - base.p50,
            p90: self.p90 - base.p90,
            p99: self.p99 - base.p99,
            p999: self.p999 - base.p999,
            max: self.max - base.max,
            mean: self.mean - base.mean,
        }
    }

    /// Field-by-field median of several runs.
    pub fn median_of(runs: &[Percentiles]) -> Option<Percentiles> {
        let field = |f: fn(&Percentiles) -> f64| median(runs.iter().map(f));
        Some(Percentiles {
            p50: field(|p| p.p50)?,
            p90: field(|p| p.p90)?,
            p99: field(|p| p.p99)?,
            p999: field(|p| p.p999)?,
            max: field(|p| p.max)?,
            mean: field(|p| p.mean)?,
        })
    }
}

/// A latency histogram in nanoseconds, 1 µs to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    let clamped = ns.clamp(h.low(), h.high());
    h.record(clamped).expect("value clamped into range");
}

/// The median; the mean of the two middle values for an even count. `None`
/// for no values; NaNs are ignored.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `a / b`, or `None` when either is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(Vec::<f64>::new()), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
    }

    #[test]
    fn percentiles_from_a_histogram() {
        let mut h = latency_histogram();
        // 1..=1000 µs, one each.
        for us in 1..=1000u64 {
            record(&mut h, us * 1000);
        }
        let p = Percentiles::from_nanos(&h);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.01;
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p90, 900.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.p999, 999.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
        assert!(close(p.mean, 500.5), "{p:?}");
        // Out-of-range values are clamped rather than lost.
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 1002);
    }

    #[test]
    fn added_latency_and_medians_of_runs() {
        let a = Percentiles {
            p50: 300.0,
            p90: 400.0,
            p99: 900.0,
            p999: 2000.0,
            max: 5000.0,
            mean: 320.0,
        };
        let base = Percentiles {
            p50: 100.0,
            p90: 150.0,
            p99: 300.0,
            p999: 600.0,
            max: 1000.0,
            mean: 110.0,
        };
        let added = a.minus(&base);
        assert_eq!(added.p50, 200.0);
        assert_eq!(added.p999, 1400.0);
        let m = Percentiles::median_of(&[a, base, a]).unwrap();
        assert_eq!(m, a);
        assert_eq!(Percentiles::median_of(&[]), None);
    }
}
