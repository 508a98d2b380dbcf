//! Feature statistics as lerobot computes them: per episode (min, max, mean, std, count and the
//! 1/10/50/90/99 % quantiles per dimension; images per channel, scaled to [0, 1]), and the
//! dataset's as lerobot's `aggregate_feature_stats` combines episodes (count-weighted means and
//! quantiles, the parallel variance). The aggregate is kept running, so closing an episode
//! costs the same however large the dataset is, and it is read back from `stats.json` on resume.

use crate::video::Histogram;
use crate::{invalid, DatasetError};

/// The statistics written, in lerobot's order.
pub const NAMES: [&str; 10] = [
    "min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99",
];
const QUANTILES: [f64; 5] = [0.01, 0.10, 0.50, 0.90, 0.99];

/// Statistics of one feature (one value per dimension, or per channel for images).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Minimum.
    pub min: Vec<f64>,
    /// Maximum.
    pub max: Vec<f64>,
    /// Mean.
    pub mean: Vec<f64>,
    /// Standard deviation (population).
    pub std: Vec<f64>,
    /// Frames.
    pub count: u64,
    /// The 1, 10, 50, 90 and 99 % quantiles.
    pub q: [Vec<f64>; 5],
    /// An image feature (written with shape `[3, 1, 1]`).
    pub image: bool,
}

/// numpy's default (linear) quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let x = q * (sorted.len() - 1) as f64;
    let (i, f) = (x.floor() as usize, x - x.floor());
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] * (1.0 - f) + sorted[j] * f
}

impl Stats {
    /// Statistics of `rows` (one row per frame, all of one length; at least one row).
    pub fn of_rows(rows: &[Vec<f64>]) -> Self {
        let dim = rows.first().map_or(0, Vec::len);
        let mut s = Self::empty(dim, rows.len() as u64, false);
        for d in 0..dim {
            let mut col: Vec<f64> = rows.iter().map(|r| r[d]).collect();
            col.sort_by(|a, b| a.total_cmp(b));
            let n = col.len() as f64;
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            s.min[d] = col[0];
            s.max[d] = col[col.len() - 1];
            s.mean[d] = mean;
            s.std[d] = var.sqrt();
            for (k, &q) in QUANTILES.iter().enumerate() {
                s.q[k][d] = quantile(&col, q);
            }
        }
        s
    }

    /// Per-channel statistics of `frames` images whose pixel values `h` counts, over [0, 1]:
    /// exactly what numpy gives over every pixel, from the histogram.
    pub fn of_histogram(h: &Histogram, frames: u64) -> Self {
        let mut s = Self::empty(3, frames, true);
        for (c, hist) in h.0.iter().enumerate() {
            let n: u64 = hist.iter().sum();
            if n == 0 {
                continue;
            }
            let v = |i: usize| i as f64 / 255.0;
            let mean = hist
                .iter()
                .enumerate()
                .map(|(i, &k)| v(i) * k as f64)
                .sum::<f64>()
                / n as f64;
            let var = hist
                .iter()
                .enumerate()
                .map(|(i, &k)| (v(i) - mean).powi(2) * k as f64)
                .sum::<f64>()
                / n as f64;
            s.min[c] = v(hist.iter().position(|&k| k > 0).unwrap_or(0));
            s.max[c] = v(hist.iter().rposition(|&k| k > 0).unwrap_or(0));
            s.mean[c] = mean;
            s.std[c] = var.sqrt();
            // the value of the k-th smallest pixel (0-based)
            let nth = |k: u64| -> f64 {
                let mut acc = 0u64;
                for (i, &m) in hist.iter().enumerate() {
                    acc += m;
                    if acc > k {
                        return v(i);
                    }
                }
                v(255)
            };
            for (j, &q) in QUANTILES.iter().enumerate() {
                let x = q * (n - 1) as f64;
                let (i, f) = (x.floor() as u64, x - x.floor());
                s.q[j][c] = nth(i) * (1.0 - f) + nth((i + 1).min(n - 1)) * f;
            }
        }
        s
    }

    fn empty(dim: usize, count: u64, image: bool) -> Self {
        Self {
            min: vec![0.0; dim],
            max: vec![0.0; dim],
            mean: vec![0.0; dim],
            std: vec![0.0; dim],
            count,
            q: Default::default(),
            image,
        }
        .with_q(dim)
    }

    fn with_q(mut self, dim: usize) -> Self {
        for q in &mut self.q {
            *q = vec![0.0; dim];
        }
        self
    }

    /// Fold `other` (a later episode) in, as lerobot's `aggregate_feature_stats` does.
    pub fn merge(&mut self, other: &Stats) -> Result<(), DatasetError> {
        if other.mean.len() != self.mean.len() {
            return Err(invalid!(
                "statistics of {} and {} dimensions cannot be merged",
                self.mean.len(),
                other.mean.len()
            ));
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        if n == 0.0 {
            return Ok(());
        }
        for d in 0..self.mean.len() {
            let mean = (self.mean[d] * na + other.mean[d] * nb) / n;
            let var = ((self.std[d].powi(2) + (self.mean[d] - mean).powi(2)) * na
                + (other.std[d].powi(2) + (other.mean[d] - mean).powi(2)) * nb)
                / n;
            self.min[d] = self.min[d].min(other.min[d]);
            self.max[d] = self.max[d].max(other.max[d]);
            self.mean[d] = mean;
            self.std[d] = var.max(0.0).sqrt();
            for k in 0..5 {
                self.q[k][d] = (self.q[k][d] * na + other.q[k][d] * nb) / n;
            }
        }
        self.count += other.count;
        Ok(())
    }

    /// The values of statistic `name` (one of [`NAMES`]) per dimension.
    pub fn values(&self, name: &str) -> Vec<f64> {
        match name {
            "min" => self.min.clone(),
            "max" => self.max.clone(),
            "mean" => self.mean.clone(),
            "std" => self.std.clone(),
            "count" => vec![self.count as f64],
            "q01" => self.q[0].clone(),
            "q10" => self.q[1].clone(),
            "q50" => self.q[2].clone(),
            "q90" => self.q[3].clone(),
            "q99" => self.q[4].clone(),
            _ => Vec::new(),
        }
    }

    /// As `stats.json` holds it: images as `[3, 1, 1]`, `count` as `[n]`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for name in NAMES {
            let v = if name == "count" {
                serde_json::json!([self.count])
            } else if self.image {
                serde_json::json!(self.values(name).iter().map(|x| [[*x]]).collect::<Vec<_>>())
            } else {
                serde_json::json!(self.values(name))
            };
            m.insert(name.into(), v);
        }
        m.into()
    }

    /// Read back what [`Stats::to_json`] (or lerobot) wrote.
    pub fn from_json(v: &serde_json::Value, image: bool) -> Result<Self, DatasetError> {
        let list = |name: &str| -> Result<Vec<f64>, DatasetError> {
            let a = v
                .get(name)
                .ok_or_else(|| invalid!("no `{name}`"))?
                .as_array()
                .ok_or_else(|| invalid!("`{name}` is not a list"))?;
            a.iter()
                .map(|x| {
                    // [3,1,1] images: each value nested twice
                    let mut x = x;
                    while let Some(inner) = x.as_array() {
                        x = inner
                            .first()
                            .ok_or_else(|| invalid!("an empty list in `{name}`"))?;
                    }
                    x.as_f64()
                        .ok_or_else(|| invalid!("a value of `{name}` is not a number"))
                })
                .collect()
        };
        let count = list("count")?
            .first()
            .copied()
            .filter(|c| *c >= 0.0 && c.is_finite())
            .ok_or_else(|| invalid!("no count"))? as u64;
        let mean = list("mean")?;
        let s = Self {
            min: list("min")?,
            max: list("max")?,
            std: list("std")?,
            count,
            q: [
                list("q01")?,
                list("q10")?,
                list("q50")?,
                list("q90")?,
                list("q99")?,
            ],
            mean,
            image,
        };
        let dim = s.mean.len();
        if [&s.min, &s.max, &s.std].iter().any(|v| v.len() != dim)
            || s.q.iter().any(|q| q.len() != dim)
        {
            return Err(invalid!("statistics of differing lengths"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_episodes_is_what_the_whole_gives() {
        let a: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 1.0]).collect();
        let b: Vec<Vec<f64>> = (10..30).map(|i| vec![i as f64, 3.0]).collect();
        let mut m = Stats::of_rows(&a);
        m.merge(&Stats::of_rows(&b)).unwrap();
        let all: Vec<Vec<f64>> = a.iter().chain(&b).cloned().collect();
        let w = Stats::of_rows(&all);
        for d in 0..2 {
            assert!((m.mean[d] - w.mean[d]).abs() < 1e-12);
            assert!((m.std[d] - w.std[d]).abs() < 1e-12);
        }
        assert_eq!((m.min[0], m.max[0], m.count), (0.0, 29.0, 30));
        let back = Stats::from_json(&m.to_json(), false).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn image_stats_from_the_histogram_match_numpy_over_pixels() {
        let mut h = Histogram::default();
        // 2 frames of 2 pixels: R 0,255,0,255; G 10,20,30,40; B all 128
        h.add(&[0, 10, 128, 255, 20, 128]);
        h.add(&[0, 30, 128, 255, 40, 128]);
        let s = Stats::of_histogram(&h, 2);
        assert_eq!(s.count, 2);
        assert!((s.mean[0] - 0.5).abs() < 1e-12);
        assert!((s.std[0] - 0.5).abs() < 1e-12);
        assert!((s.mean[1] - 25.0 / 255.0).abs() < 1e-12);
        // numpy.quantile([10,20,30,40], 0.5) = 25
        assert!((s.q[2][1] - 25.0 / 255.0).abs() < 1e-12);
        assert!((s.q[0][1] - 10.3 / 255.0).abs() < 1e-12);
        assert_eq!((s.min[2], s.max[2]), (128.0 / 255.0, 128.0 / 255.0));
        let j = s.to_json();
        assert_eq!(j["mean"].as_array().unwrap().len(), 3);
        assert!(j["mean"][0][0][0].is_f64());
        assert_eq!(Stats::from_json(&j, true).unwrap(), s);
    }
}
