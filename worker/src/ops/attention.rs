//! Scaled dot-product attention of one query token over a run of cached keys/values, with
//! grouped-query attention (several query heads share one KV head).

use super::softmax::softmax;
use crate::tensor::dot_f32;

/// Attention for one token.
/// q: [n_head, head_dim]; keys, values: [len, n_kv_head · head_dim] (the visible cache rows);
/// out: [n_head, head_dim]; `mask` (optional, [len]) adds 0 or −∞ per key (BERT padding).
pub fn attend(q: &[f32], keys: &[f32], values: &[f32], n_kv_head: usize, head_dim: usize, mask: Option<&[f32]>, out: &mut [f32]) {
    let n_head = q.len() / head_dim;
    let layout = HeadLayout { n_head, n_kv_head, head_dim };
    for (h, (qh, oh)) in q.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)).enumerate() {
        attend_head(qh, h, keys, values, layout, mask, oh);
    }
}

/// How query heads map onto KV heads (grouped-query attention: `n_head / n_kv_head` query
/// heads share one KV head).
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// One query head `h` of one token: qh, out: [head_dim]; keys, values as in [`attend`].
/// Heads are independent, so callers may run them in parallel.
///
/// This is most of a long prefill's time and of the packer's calibration pass, so on x86 it runs
/// the same code compiled for AVX2 where the CPU has it: the products and sums are the same ones
/// in the same order (no FMA contraction), so the results are bit-identical either way.
pub fn attend_head(qh: &[f32], h: usize, keys: &[f32], values: &[f32], layout: HeadLayout, mask: Option<&[f32]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_x86::available() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { attend_head_avx2(qh, h, keys, values, layout, mask, out) };
    }
    attend_head_portable(qh, h, keys, values, layout, mask, out)
}

/// [`attend_head_portable`] compiled 8 wide. A closure handed to `tensor::with_wide_simd` is
/// compiled on its own, without the wrapper's features, so this is its own function.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_head_avx2(qh: &[f32], h: usize, keys: &[f32], values: &[f32], layout: HeadLayout, mask: Option<&[f32]>, out: &mut [f32]) {
    attend_head_portable(qh, h, keys, values, layout, mask, out)
}

/// [`attend_head`]'s arithmetic, written as plain loops so it inlines whole into its callers.
#[inline(always)]
fn attend_head_portable(qh: &[f32], h: usize, keys: &[f32], values: &[f32], layout: HeadLayout, mask: Option<&[f32]>, out: &mut [f32]) {
    let HeadLayout { n_head, n_kv_head, head_dim } = layout;
    let kv_dim = n_kv_head * head_dim;
    let len = keys.len() / kv_dim;
    let offset = h / (n_head / n_kv_head) * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let qh = &qh[..head_dim];
    // scores: [len], one per visible key.
    let mut scores = vec![0f32; len];
    for (s, score) in scores.iter_mut().enumerate() {
        *score = dot_f32(qh, &keys[s * kv_dim + offset..][..head_dim]) * scale;
    }
    if let Some(m) = mask {
        for (score, m) in scores.iter_mut().zip(m) {
            *score += m;
        }
    }
    softmax(&mut scores);
    let out = &mut out[..head_dim];
    out.fill(0.0);
    for (s, &p) in scores.iter().enumerate() {
        let vs = &values[s * kv_dim + offset..][..head_dim];
        for (o, &v) in out.iter_mut().zip(vs) {
            *o += p * v;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_key_returns_its_value_and_groups_share_kv() {
        // 2 query heads, 1 KV head, head_dim 2, one cached position.
        let q = [1.0, 0.0, 0.0, 1.0];
        let (k, v) = ([0.5, 0.5], [3.0, -2.0]);
        let mut out = [0.0; 4];
        super::attend(&q, &k, &v, 1, 2, None, &mut out);
        assert_eq!(out, [3.0, -2.0, 3.0, -2.0]);
    }

    #[test]
    fn masked_keys_get_no_weight() {
        let q = [1.0, 0.0];
        let k = [1.0, 0.0, 1.0, 0.0];
        let v = [1.0, 1.0, 9.0, 9.0];
        let mut out = [0.0; 2];
        super::attend(&q, &k, &v, 1, 2, Some(&[0.0, f32::NEG_INFINITY]), &mut out);
        assert_eq!(out, [1.0, 1.0]);
    }

    #[test]
    fn the_avx2_build_gives_the_portable_builds_bits() {
        use crate::quant::tests::Rng;
        // SmolLM2's layout: 9 query heads over 3 KV heads of 64; 37 visible keys, one masked.
        let layout = super::HeadLayout { n_head: 9, n_kv_head: 3, head_dim: 64 };
        let mut rng = Rng(3);
        let mut v = |n: usize| (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect::<Vec<f32>>();
        let (q, keys, values) = (v(64), v(37 * 192), v(37 * 192));
        let mut mask = vec![0.0; 37];
        mask[5] = f32::NEG_INFINITY;
        for h in 0..9 {
            for mask in [None, Some(&mask[..])] {
                let (mut dispatched, mut portable) = ([0f32; 64], [0f32; 64]);
                super::attend_head(&q, h, &keys, &values, layout, mask, &mut dispatched);
                super::attend_head_portable(&q, h, &keys, &values, layout, mask, &mut portable);
                assert!(dispatched.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()), "head {h}");
                assert!(portable.iter().any(|&o| o != 0.0));
            }
        }
    }
}
