//! LayerNorm (Ba et al. 2016): y = (x − mean) / sqrt(var + eps) · w + b. BERT's normalisation.

/// x: [t, d] normalised in place row by row; w, b: [d].
pub fn layernorm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, &g), &bias) in row.iter_mut().zip(w).zip(b) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + bias;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_mean_unit_variance() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        super::layernorm(&mut x, &[1.0; 4], &[0.0; 4], 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }
}
