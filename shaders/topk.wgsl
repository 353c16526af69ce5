// topk.wgsl — sampling's candidates on the GPU: the k largest logits in the CPU sampler's
// order (value descending in the total order, the lower index first on ties): result[2i] =
// index, result[2i + 1] = the value's bits, for i < k = dims.rows (index 0xffffffff past the
// end when k > cols).
// k = 1 is greedy argmax (8 bytes read back); top-k sampling reads back 8·k bytes instead of
// the vocabulary's logits. logits: [cols]. NaN ranks as −f32::MAX (after every number but −inf:
// it is never chosen while a real logit is left); +inf as +f32::MAX.
// Grid: one workgroup. Round r finds the best entry strictly after round r−1's winner in that
// order: each invocation scans its stride (cols / WG reads), then the workgroup reduces in
// workgroup memory — k rounds.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

const NONE: u32 = 0xffffffffu;
// f32::MAX exactly (a decimal literal rounds past it, and Tint rejects that).
const MAX_F32: f32 = 0x1.fffffep+127f;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// The float's bits as an unsigned key in the float's total order (as Rust's `total_cmp`:
// −0 before +0 — the CPU sampler orders by it, so ties break the same way).
fn order_key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Whether (av, ai) comes before (bv, bi) in the order; nothing (NONE) comes last.
fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    if (ai == NONE) {
        return false;
    }
    let ak = order_key(av);
    let bk = order_key(bv);
    return bi == NONE || ak > bk || (ak == bk && ai < bi);
}

// (WGSL lets implementations assume no NaN or infinity: this mapping is best effort.)
fn logit(j: u32) -> f32 {
    let v = logits[j];
    return select(min(v, MAX_F32), -MAX_F32, v != v);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    // The previous round's winner; in round 0 every entry is after it.
    var prev_v = MAX_F32;
    var prev_i = NONE;
    for (var r = 0u; r < dims.rows; r++) {
        var bv = 0.0;
        var bi = NONE;
        for (var j = lid.x; j < dims.cols; j += WG) {
            let v = logit(j);
            let after_prev = r == 0u || before(prev_v, prev_i, v, j);
            if (after_prev && before(v, j, bv, bi)) {
                bv = v;
                bi = j;
            }
        }
        best_value[lid.x] = bv;
        best_index[lid.x] = bi;
        workgroupBarrier();
        for (var width = WG / 2u; width > 0u; width /= 2u) {
            if (lid.x < width && before(best_value[lid.x + width], best_index[lid.x + width], best_value[lid.x], best_index[lid.x])) {
                best_value[lid.x] = best_value[lid.x + width];
                best_index[lid.x] = best_index[lid.x + width];
            }
            workgroupBarrier();
        }
        prev_v = best_value[0];
        prev_i = best_index[0];
        if (lid.x == 0u) {
            result[2u * r] = prev_i;
            result[2u * r + 1u] = bitcast<u32>(prev_v);
        }
        // Everyone has read the winner before the next round overwrites the scratch. After a
        // NONE winner (k > cols) nothing is "after" it, so the remaining rounds write NONE.
        workgroupBarrier();
    }
}
