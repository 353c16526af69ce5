// argmax.wgsl — greedy sampling on the GPU: result = (index, bits of the value) of the largest
// logit, the lowest index on ties (as the CPU's first-maximum rule). logits: [cols].
// A decode step then reads back 8 bytes instead of the vocabulary's logits.
// Grid: one workgroup; WG invocations stride the vector, then reduce in workgroup memory.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var j = lid.x; j < dims.cols; j += WG) {
        let v = logits[j];
        // Strictly greater: within one invocation indices rise, so the first maximum stays.
        if (v > bv || bi == 0xffffffffu) {
            bv = v;
            bi = j;
        }
    }
    best_value[lid.x] = bv;
    best_index[lid.x] = bi;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid.x < width) {
            let ov = best_value[lid.x + width];
            let oi = best_index[lid.x + width];
            let mine = best_index[lid.x];
            if (oi != 0xffffffffu && (mine == 0xffffffffu || ov > best_value[lid.x] || (ov == best_value[lid.x] && oi < mine))) {
                best_value[lid.x] = ov;
                best_index[lid.x] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        result[0] = best_index[0];
        result[1] = bitcast<u32>(best_value[0]);
    }
}
