// rope.wgsl — rotary position embedding, in place, both conventions (see ops/rope.rs for why
// both exist): flags & 1 = 0 rotates adjacent pairs (x[2i], x[2i+1]) (GGUF), 1 rotates halves
// (x[i], x[i + head_dim/2]) (Hugging Face).
// x: [t, heads · head_dim], or with flags & 2 rows step.pos .. step.pos + t of a KV cache
// (keys are rotated where the K projection wrote them); token i is at position step.pos + i.
// table: [positions, head_dim/2] of (cos, sin) pairs, computed on the CPU in f64 exactly as
// ops/rope.rs does, so both backends rotate by identical angles.
// Grid: x over heads · head_dim/2 rotation pairs, y over tokens.

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

const ROTATE_HALF: u32 = 1u;
const ROWS_AT_POS: u32 = 2u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = dims.head_dim / 2u;
    let pair = gid.x;
    let i = gid.y;
    if (pair >= dims.heads * half || i >= step.t) {
        return;
    }
    let head = pair / half;
    let k = pair % half;
    let pos = step.pos + i;
    let row = select(i, pos, (dims.flags & ROWS_AT_POS) != 0u);
    let base = row * dims.heads * dims.head_dim + head * dims.head_dim;
    var a: u32;
    var b: u32;
    if ((dims.flags & ROTATE_HALF) != 0u) {
        a = base + k;
        b = base + k + half;
    } else {
        a = base + 2u * k;
        b = base + 2u * k + 1u;
    }
    let cs = table[pos * half + k];
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
}
