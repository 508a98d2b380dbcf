//! ACT's temporal ensembling (LeRobot's `ACTTemporalEnsembler`): every step a fresh chunk is
//! predicted and each future step's action is the exponentially weighted average of every
//! prediction made for it, weights `exp(−coeff · i)` with i = 0 for the oldest prediction.

/// Online temporal ensembler over chunks of `chunk` actions of dimension `dim`.
#[derive(Debug, Clone)]
pub struct TemporalEnsembler {
    weights: Vec<f64>,
    cumsum: Vec<f64>,
    chunk: usize,
    dim: usize,
    actions: Vec<Vec<f64>>, // pending averaged actions, oldest first
    counts: Vec<usize>,
}

impl TemporalEnsembler {
    /// A fresh ensembler.
    pub fn new(coeff: f64, chunk: usize, dim: usize) -> Self {
        let weights: Vec<f64> = (0..chunk).map(|i| (-coeff * i as f64).exp()).collect();
        let mut cumsum = Vec::with_capacity(chunk);
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cumsum.push(acc);
        }
        Self {
            weights,
            cumsum,
            chunk,
            dim,
            actions: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Forget everything (new episode).
    pub fn reset(&mut self) {
        self.actions.clear();
        self.counts.clear();
    }

    /// Add a new chunk (`chunk` rows of `dim` values) and return the action for this step.
    pub fn update(&mut self, chunk: &[Vec<f64>]) -> Vec<f64> {
        assert_eq!(chunk.len(), self.chunk, "chunk length");
        if self.actions.is_empty() {
            self.actions = chunk.to_vec();
            self.counts = vec![1; self.chunk];
        } else {
            for (i, row) in self.actions.iter_mut().enumerate() {
                let c = self.counts[i];
                for (k, v) in row.iter_mut().enumerate().take(self.dim) {
                    *v = (*v * self.cumsum[c - 1] + chunk[i][k] * self.weights[c]) / self.cumsum[c];
                }
                self.counts[i] = (c + 1).min(self.chunk);
            }
            self.actions.push(chunk[self.chunk - 1].clone());
            self.counts.push(1);
        }
        self.counts.remove(0);
        self.actions.remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_offline_weighted_average() {
        // constant per-prediction values: after n updates, step t's action is the weighted mean
        let mut e = TemporalEnsembler::new(0.01, 5, 1);
        let mut outs = Vec::new();
        for n in 0..5 {
            let chunk: Vec<Vec<f64>> = (0..5).map(|_| vec![n as f64]).collect();
            outs.push(e.update(&chunk)[0]);
        }
        // the 5th output averages predictions 0..=4 made for that step, oldest weighted most
        let w: Vec<f64> = (0..5).map(|i| (-0.01 * i as f64).exp()).collect();
        let expect = (0..5).map(|i| w[i] * i as f64).sum::<f64>() / w.iter().sum::<f64>();
        assert!((outs[4] - expect).abs() < 1e-12, "{} vs {expect}", outs[4]);
        assert_eq!(outs[0], 0.0);
    }
}
