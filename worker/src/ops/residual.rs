//! Residual connection: x += y, the skip path around every attention and FFN block.

/// x, y: [t, d]; x is updated in place.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
