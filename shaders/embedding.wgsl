// embedding.wgsl — token embedding gather: out[i, :] = dequantize(W[tokens[i], :]).
// W: [rows = vocab, cols = d] in WTYPE; tokens: [t]; out: [t, d].
// Grid: x over the d columns (WG per workgroup), y over the t tokens.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    let i = gid.y;
    if (e >= dims.cols || i >= step.t) {
        return;
    }
    // An out-of-range id reads row 0 instead of past the buffer; the host refuses such ids
    // before they get here (TokenizerError), this only keeps the read in bounds.
    let row = select(0u, tokens[i], tokens[i] < dims.rows);
    var v: f32;
    if (WTYPE == T_F32 || WTYPE == T_F16) {
        v = w_scalar(row * dims.cols + e);
    } else {
        v = block_value(row * (dims.cols / 32u) + e / 32u, e % 32u);
    }
    out[i * dims.cols + e] = v;
}
