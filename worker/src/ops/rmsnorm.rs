//! RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + eps) · w. Llama's normalisation.

/// x: [t, d] normalised in place row by row; w: [d].
pub fn rmsnorm(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for row in x.chunks_exact_mut(d) {
        // Mean of squares in f64: d is small, and this is where f32 rounding would compound.
        let mean_sq = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / d as f64;
        let scale = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_rms_after_norm_with_unit_weight() {
        let mut x = vec![3.0, -4.0, 0.0, 5.0];
        super::rmsnorm(&mut x, &[1.0; 4], 0.0);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
        assert!((x[0] / x[1] + 0.75).abs() < 1e-6, "direction is kept");
    }
}
