// attention.wgsl — causal scaled dot-product attention over the KV cache, grouped-query.
// q: [t, heads · head_dim]; k, v: [context, kv_heads · head_dim] (this layer's cache, filled
// up to step.pos + t); out: [t, heads · head_dim]; scores: [t, heads, context] scratch.
// Token i (position step.pos + i) sees cache rows 0 ..= step.pos + i; query head h reads KV
// head h / (heads / kv_heads). Decode is t = 1; prefill runs every token of the chunk at once.
// Grid: one workgroup per (head = x, token = y).
//
// Three phases in one workgroup: scores (and their max), exp and sum, then the weighted sum of
// values with each invocation owning output dimensions. Scores go to a global scratch row, not
// workgroup memory, so the context length is not capped by the 16 KiB workgroup-memory minimum.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn reduce(lid: u32, value: f32, is_max: bool) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            let other = partial[lid + width];
            partial[lid] = select(partial[lid] + other, max(partial[lid], other), is_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let i = wid.y;
    if (h >= dims.heads || i >= step.t) {
        return;
    }
    let hd = dims.head_dim;
    let kv_dim = dims.kv_heads * hd;
    let kv_off = h / (dims.heads / dims.kv_heads) * hd;
    let q_off = (i * dims.heads + h) * hd;
    let s_off = (i * dims.heads + h) * dims.context;
    let n = step.pos + i + 1u;

    var m = -3.0e38;
    for (var j = lid.x; j < n; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[q_off + d] * k[j * kv_dim + kv_off + d];
        }
        s *= dims.scale;
        scores[s_off + j] = s;
        m = max(m, s);
    }
    m = reduce(lid.x, m, true);
    var sum = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        let p = exp(scores[s_off + j] - m);
        scores[s_off + j] = p;
        sum += p;
    }
    sum = reduce(lid.x, sum, false);
    // The exps written above by other invocations must be visible before they are read.
    storageBarrier();
    let inv = 1.0 / sum;
    for (var d = lid.x; d < hd; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += scores[s_off + j] * v[j * kv_dim + kv_off + d];
        }
        out[(i * dims.heads + h) * hd + d] = acc * inv;
    }
}
