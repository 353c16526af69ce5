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
pub fn attend_head(qh: &[f32], h: usize, keys: &[f32], values: &[f32], layout: HeadLayout, mask: Option<&[f32]>, out: &mut [f32]) {
    let HeadLayout { n_head, n_kv_head, head_dim } = layout;
    let kv_dim = n_kv_head * head_dim;
    let len = keys.len() / kv_dim;
    let offset = h / (n_head / n_kv_head) * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut scores: Vec<f32> = (0..len).map(|s| dot_f32(qh, &keys[s * kv_dim + offset..][..head_dim]) * scale).collect();
    if let Some(m) = mask {
        for (score, m) in scores.iter_mut().zip(m) {
            *score += m;
        }
    }
    softmax(&mut scores);
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
}
