// common.wgsl — prepended to every kernel module (after the variant constants the Rust side
// writes: WG, and per family TILE / WTYPE / BLOCK_WORDS). The single WGSL source of truth for
// the two uniform structs; `worker/src/gpu/pipelines.rs` mirrors them as `#[repr(C)]` structs
// with compile-time size checks.

// Per-dispatch constants, written once at load (one 256-byte slot of a shared uniform buffer).
struct Dims {
    rows: u32,      // output features (matmul rows, vocabulary for argmax)
    cols: u32,      // input features / row width
    heads: u32,     // heads in the tensor (RoPE, attention query heads)
    kv_heads: u32,  // attention: KV heads (grouped-query attention)
    head_dim: u32,
    flags: u32,     // kernel-specific bits (see each kernel)
    eps: f32,       // norms
    scale: f32,     // attention: 1/sqrt(head_dim)
    context: u32,   // attention: KV-cache capacity (scratch row stride)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Per-pass values, rewritten before every submit: how many tokens this pass runs and the
// KV-cache position of the first one.
struct Step {
    t: u32,
    pos: u32,
    _pad0: u32,
    _pad1: u32,
}
