//! f16 storage (IEEE half, via the `half` crate): 2 little-endian bytes per value.

use super::f16_at;

pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16_at([pair[0], pair[1]]);
    }
}

#[inline]
pub fn dot(bytes: &[u8], x: &[f32]) -> f32 {
    super::lanes_dot(x, |i| f16_at([bytes[2 * i], bytes[2 * i + 1]]))
}
