//! f32 storage: 4 little-endian bytes per value.

#[inline(always)]
fn value(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = value(bytes, i);
    }
}

#[inline]
pub fn dot(bytes: &[u8], x: &[f32]) -> f32 {
    super::lanes_dot(x, |i| value(bytes, i))
}
