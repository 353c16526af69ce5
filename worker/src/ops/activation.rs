//! Activations: SiLU-gated SwiGLU (Llama FFN) and exact-erf GELU (BERT FFN).

/// SwiGLU in place: gate[i] = silu(gate[i]) · up[i]. gate, up: [t, d_ff].
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// GELU with the exact error function (BERT's `gelu`, not the tanh approximation), in place.
pub fn gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        let z = *v as f64;
        *v = (0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2))) as f32;
    }
}

/// erf(x) in f64 (std has none): the Maclaurin series below 2.5, where it converges quickly,
/// and the continued fraction for erfc above (both to ~1e-15; the common Abramowitz–Stegun
/// 7.1.26 shortcut is only good to ~1e-7).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() || x == 0.0 {
        return x; // erf(±0) = ±0; and the series below would never meet its stopping test at 0
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1)); converges fast here.
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc (Lentz), accurate for large |x|.
        let x2 = ax * ax;
        let mut f = ax;
        let (mut c, mut d) = (ax, 0.0);
        for k in 1..200 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = if d == 0.0 { 1e-300 } else { 1.0 / d };
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.5204998778130465), (1.0, 0.8427007929497149), (2.0, 0.9953222650189527), (3.0, 0.9999779095030014), (-1.5, -0.9661051464753108)] {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {} want {want}", erf(x));
        }
    }

    #[test]
    fn gelu_and_swiglu_values() {
        let mut x = vec![1.0f32, -1.0, 0.0];
        gelu(&mut x);
        assert!((x[0] - 0.8413447).abs() < 1e-6 && (x[1] + 0.1586553).abs() < 1e-6 && x[2] == 0.0);
        let mut g = vec![1.0f32, 0.0];
        swiglu(&mut g, &[2.0, 5.0]);
        assert!((g[0] - 2.0 * 0.7310586).abs() < 1e-6 && g[1] == 0.0);
    }
}
