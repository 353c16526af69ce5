// residual.wgsl — the residual connection (ops/residual.rs): x += o. x, o: [t, cols].
// Grid: x over cols, y over tokens.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> o: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= dims.cols || gid.y >= step.t) {
        return;
    }
    let i = gid.y * dims.cols + gid.x;
    x[i] += o[i];
}
