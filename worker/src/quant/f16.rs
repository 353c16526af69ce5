//! f16 storage (IEEE half, via the `half` crate): 2 little-endian bytes per value.

use super::f16_at;

pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16_at([pair[0], pair[1]]);
    }
}

pub fn dot(bytes: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.len() / 8;
    for c in 0..chunks {
        for lane in 0..8 {
            let i = c * 8 + lane;
            acc[lane] += f16_at([bytes[2 * i], bytes[2 * i + 1]]) * x[i];
        }
    }
    let mut tail = 0.0;
    for (i, &xi) in x.iter().enumerate().skip(chunks * 8) {
        tail += f16_at([bytes[2 * i], bytes[2 * i + 1]]) * xi;
    }
    acc.iter().sum::<f32>() + tail
}
