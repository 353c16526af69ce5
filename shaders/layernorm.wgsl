// layernorm.wgsl — LayerNorm (BERT): y = (x − mean) / sqrt(var + eps) · gamma + beta.
// x: [t, cols]; gamma, beta: [cols]; y: [t, cols].
// Grid: one workgroup per token (y); two reductions (mean, then variance about it).

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone has read the total before the next reduction overwrites it.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    if (wid.y >= step.t) {
        return;
    }
    let n = dims.cols;
    let row = wid.y * n;
    var s = 0.0;
    for (var k = lid.x; k < n; k += WG) {
        s += x[row + k];
    }
    let mean = reduce_sum(lid.x, s) / f32(n);
    var v = 0.0;
    for (var k = lid.x; k < n; k += WG) {
        let c = x[row + k] - mean;
        v += c * c;
    }
    let inv = 1.0 / sqrt(reduce_sum(lid.x, v) / f32(n) + dims.eps);
    for (var k = lid.x; k < n; k += WG) {
        y[row + k] = (x[row + k] - mean) * inv * gamma[k] + beta[k];
    }
}
