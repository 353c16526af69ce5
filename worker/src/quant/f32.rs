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

/// Eight independent accumulators so the loop vectorizes without reassociating a single sum.
pub fn dot(bytes: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.len() / 8;
    for c in 0..chunks {
        for lane in 0..8 {
            let i = c * 8 + lane;
            acc[lane] += value(bytes, i) * x[i];
        }
    }
    let mut tail = 0.0;
    for (i, &xi) in x.iter().enumerate().skip(chunks * 8) {
        tail += value(bytes, i) * xi;
    }
    acc.iter().sum::<f32>() + tail
}
