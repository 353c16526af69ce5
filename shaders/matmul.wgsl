// matmul.wgsl — y = x · Wᵀ with W stored quantized: GEMV for decode (TILE = 1) and the
// register-tiled GEMM for prefill (TILE tokens per invocation, so each decoded weight block is
// used TILE times from registers).
// W: [rows, cols] in WTYPE; x: [t, cols]; y: [t, rows] (or, with flags & 2, rows of a KV cache
// [context, rows] starting at row step.pos: K and V projections write straight into the cache).
// Grid: x over the rows (one row per invocation, WG per workgroup), y over tokens / TILE.
//
// Why one row per invocation and no workgroup reduction: consecutive invocations read the same
// x (a broadcast) and no barriers are needed, which suits both CPU rasterisers (lavapipe runs a
// workgroup as SIMD lanes) and GPUs at these widths (d = 576 is only 18 blocks per row).

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const OUT_AT_POS: u32 = 2u;

fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    let t0 = gid.y * TILE;
    if (row >= dims.rows || t0 >= step.t) {
        return;
    }
    let nt = min(TILE, step.t - t0);
    let cols = dims.cols;
    var acc: array<f32, TILE>;
    if (WTYPE == T_F32 || WTYPE == T_F16) {
        for (var k = 0u; k < cols; k++) {
            let wv = w_scalar(row * cols + k);
            for (var i = 0u; i < TILE; i++) {
                if (i < nt) {
                    acc[i] += wv * x[(t0 + i) * cols + k];
                }
            }
        }
    } else {
        let nb = cols / 32u;
        for (var b = 0u; b < nb; b++) {
            let block = row * nb + b;
            let dm = block_dm(block);
            var q: array<vec4<f32>, 8>;
            for (var g = 0u; g < 8u; g++) {
                q[g] = block_quad(block, g);
            }
            for (var i = 0u; i < TILE; i++) {
                if (i < nt) {
                    // d·Σ q·x + m·Σ x: the min folds into one multiply by the input's block sum.
                    let xb = (t0 + i) * cols + b * 32u;
                    var qx = vec4<f32>(0.0);
                    var sx = vec4<f32>(0.0);
                    for (var g = 0u; g < 8u; g++) {
                        let xv = x4(xb + 4u * g);
                        qx += q[g] * xv;
                        sx += xv;
                    }
                    acc[i] += dm.x * (qx.x + qx.y + qx.z + qx.w) + dm.y * (sx.x + sx.y + sx.z + sx.w);
                }
            }
        }
    }
    let base = select(0u, step.pos, (dims.flags & OUT_AT_POS) != 0u);
    for (var i = 0u; i < TILE; i++) {
        if (i < nt) {
            y[(base + t0 + i) * dims.rows + row] = acc[i];
        }
    }
}
