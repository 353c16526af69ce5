//! Rotary position embedding (Su et al. 2021, "RoFormer").
//!
//! Two conventions exist and the wrong one silently ruins a model:
//! - [`RopeStyle::AdjacentPairs`] rotates (x[2i], x[2i+1]). GGUF files need this: llama.cpp's
//!   converter permutes the Q/K weight rows so that adjacent pairs are the rotated ones.
//! - [`RopeStyle::RotateHalf`] rotates (x[i], x[i + d/2]), the Hugging Face layout, for
//!   safetensors checkpoints whose Q/K rows were never permuted.
//!
//! Frequencies: θ_i = base^(−2i/d); angles are computed in f64 (positions reach thousands, and
//! f32 angle error grows with the position).

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    AdjacentPairs,
    RotateHalf,
}

/// cos/sin of every (position, frequency) the model can need, computed once at load.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub style: RopeStyle,
    head_dim: usize,
    /// [positions, head_dim/2]
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(style: RopeStyle, head_dim: usize, base: f64, positions: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for i in 0..half {
                let angle = p as f64 * base.powf(-((2 * i) as f64) / head_dim as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { style, head_dim, cos, sin }
    }

    pub fn positions(&self) -> usize {
        self.cos.len() / (self.head_dim / 2)
    }

    /// Rotates every head of one token at position `pos`. x: [heads, head_dim], in place.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        self.rotate(x, pos, 1.0);
    }

    /// Rotates back by `by` positions (x rotated for position p becomes rotated for p − by):
    /// how the KV cache renumbers keys when its sliding window drops old entries.
    pub fn rotate_back(&self, x: &mut [f32], by: usize) {
        self.rotate(x, by, -1.0);
    }

    /// Rotation by the angles of position `pos`, with sin multiplied by `direction` (±1).
    fn rotate(&self, x: &mut [f32], pos: usize, direction: f32) {
        let half = self.head_dim / 2;
        let (cos, sin) = (&self.cos[pos * half..][..half], &self.sin[pos * half..][..half]);
        for head in x.chunks_exact_mut(self.head_dim) {
            for i in 0..half {
                let (a, b) = match self.style {
                    RopeStyle::AdjacentPairs => (2 * i, 2 * i + 1),
                    RopeStyle::RotateHalf => (i, i + half),
                };
                let (x0, x1, s) = (head[a], head[b], direction * sin[i]);
                head[a] = x0 * cos[i] - x1 * s;
                head[b] = x0 * s + x1 * cos[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_agree_after_permuting_dimensions() {
        // Rotate-half on x equals adjacent-pairs on x with dims interleaved (GGUF's permutation).
        let d = 8;
        let x: Vec<f32> = (0..d).map(|i| i as f32 * 0.37 - 1.0).collect();
        let interleaved: Vec<f32> = (0..d).map(|j| if j % 2 == 0 { x[j / 2] } else { x[j / 2 + d / 2] }).collect();
        let (mut a, mut b) = (x.clone(), interleaved);
        RopeTable::new(RopeStyle::RotateHalf, d, 10000.0, 8).apply(&mut a, 5);
        RopeTable::new(RopeStyle::AdjacentPairs, d, 10000.0, 8).apply(&mut b, 5);
        for j in 0..d {
            let back = if j % 2 == 0 { a[j / 2] } else { a[j / 2 + d / 2] };
            assert!((b[j] - back).abs() < 1e-6);
        }
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let t = RopeTable::new(RopeStyle::AdjacentPairs, 4, 10000.0, 100);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        t.apply(&mut x, 0);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        t.apply(&mut x, 99);
        assert!((x.iter().map(|v| v * v).sum::<f32>() - 30.0).abs() < 1e-4);
    }

    #[test]
    fn rotating_back_renumbers_a_position() {
        for style in [RopeStyle::AdjacentPairs, RopeStyle::RotateHalf] {
            let t = RopeTable::new(style, 8, 10000.0, 64);
            let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.71).sin()).collect();
            let (mut at_40, mut at_27) = (x.clone(), x.clone());
            t.apply(&mut at_40, 40);
            t.apply(&mut at_27, 27);
            t.rotate_back(&mut at_40, 13);
            for (a, b) in at_40.iter().zip(&at_27) {
                assert!((a - b).abs() < 1e-5, "{style:?}: {a} vs {b}");
            }
        }
    }
}
