// activation.wgsl — the feed-forward activations (ops/activation.rs).
// swiglu: gate[i] = silu(gate[i]) · up[i]  (Llama);  gelu: x[i] = x·Φ(x), exact-erf GELU (BERT).
// gate, up, x: [t, cols]. Grid: x over cols, y over tokens.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= dims.cols || gid.y >= step.t) {
        return;
    }
    let i = gid.y * dims.cols + gid.x;
    let g = a[i];
    a[i] = g / (1.0 + exp(-g)) * b[i];
}

// erf to ~1.2e-7 absolute (Numerical Recipes' erfc Chebyshev fit): the CPU path's f64 erf
// rounded to f32 differs from it by a few ulps, well inside the kernel test's tolerance.
fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

@compute @workgroup_size(WG)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= dims.cols || gid.y >= step.t) {
        return;
    }
    let i = gid.y * dims.cols + gid.x;
    let v = a[i];
    a[i] = 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}
