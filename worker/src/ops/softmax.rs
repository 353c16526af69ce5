//! Numerically stable softmax (subtract the max before exponentiating).

/// x: [n] in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// log-softmax of one entry without materialising the distribution: x[i] − logsumexp(x).
pub fn log_softmax_at(x: &[f32], i: usize) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x[i] as f64 - lse
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_to_one_and_survives_large_values() {
        let mut x = vec![1000.0, 1001.0, 1002.0];
        super::softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
        let lp = super::log_softmax_at(&[0.0, 0.0], 1);
        assert!((lp - (0.5f64).ln()).abs() < 1e-12);
    }
}
