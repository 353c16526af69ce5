// rmsnorm.wgsl — RMSNorm (Llama): y = x / sqrt(mean(x²) + eps) · g.
// x: [t, cols]; g: [cols]; y: [t, cols] (with flags & 1: only x's last token, into y's row 0 —
// the final norm before the LM head, which needs only the last position).
// Grid: one workgroup per token (y); WG invocations stride the row and reduce in workgroup memory.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const LAST_ONLY: u32 = 1u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let last = (dims.flags & LAST_ONLY) != 0u;
    // Uniform control flow: every invocation of the workgroup takes the same branch.
    if (wid.y >= step.t) {
        return;
    }
    let token = select(wid.y, step.t - 1u, last);
    let out_row = select(wid.y, 0u, last);
    let n = dims.cols;
    var s = 0.0;
    for (var k = lid.x; k < n; k += WG) {
        let v = x[token * n + k];
        s += v * v;
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid.x < width) {
            partial[lid.x] += partial[lid.x + width];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(partial[0] / f32(n) + dims.eps);
    for (var k = lid.x; k < n; k += WG) {
        y[out_row * n + k] = x[token * n + k] * scale * g[k];
    }
}
