// weights.wgsl — decoding of stored weight matrices, prepended to the kernels that read them
// (embedding, matmul). The kernel declares `w: array<u32>` (the matrix) and the Rust side
// writes `const WTYPE` and `const BLOCK_WORDS` for the storage type of the variant; every
// `if (WTYPE == ...)` below is a constant the shader compiler folds away.
//
// GPU layouts (worker/src/gpu/buffers.rs writes them; all blocks hold 32 values and start on a
// u32 word, so every read is one aligned word):
//   f32   as stored.                           f16   as stored, two values per word.
//   q8_0  9 words: [d:f16 | 0], 32 × i8        (GGUF's 34-byte block, padded to 36)
//   q4_0  5 words: [d:f16 | 0], 16 B nibbles   (GGUF's 18-byte block, padded to 20)
//   q4_1  5 words: [d:f16 | m:f16], 16 B nibbles                       (GGUF's, as stored)
//   q3    4 words: [d | m], ql (2 words), qh (1 word)                   (as stored, see quant/q3.rs)
//   q2    3 words: [d | m], qs (2 words)                                (as stored, see quant/q2.rs)
// Every block type decodes as value = d·q + m (q8_0: m = 0, signed q; q4_0: q − 8, m = 0).

const T_F32: u32 = 0u;
const T_F16: u32 = 1u;
const T_Q8_0: u32 = 2u;
const T_Q4_0: u32 = 3u;
const T_Q4_1: u32 = 4u;
const T_Q3: u32 = 5u;
const T_Q2: u32 = 6u;

// Element i of a matrix stored as f32 or f16 (flat, row-major).
fn w_scalar(i: u32) -> f32 {
    if (WTYPE == T_F16) {
        let pair = unpack2x16float(w[i >> 1u]);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(w[i]);
}

// (d, m) of block b: value = d·q + m.
fn block_dm(b: u32) -> vec2<f32> {
    let dm = unpack2x16float(w[b * BLOCK_WORDS]);
    if (WTYPE == T_Q8_0 || WTYPE == T_Q4_0) {
        return vec2<f32>(dm.x, 0.0);
    }
    return dm;
}

// The four bytes of a word as unsigned values.
fn bytes4(v: u32) -> vec4<f32> {
    return vec4<f32>(f32(v & 0xffu), f32((v >> 8u) & 0xffu), f32((v >> 16u) & 0xffu), f32(v >> 24u));
}

// q of elements 4g .. 4g+4 (g in 0..8) of block b.
fn block_quad(b: u32, g: u32) -> vec4<f32> {
    let base = b * BLOCK_WORDS;
    if (WTYPE == T_Q8_0) {
        let v = bitcast<i32>(w[base + 1u + g]);
        return vec4<f32>(f32(extractBits(v, 0u, 8u)), f32(extractBits(v, 8u, 8u)), f32(extractBits(v, 16u, 8u)), f32(extractBits(v, 24u, 8u)));
    }
    if (WTYPE == T_Q4_0 || WTYPE == T_Q4_1) {
        // Elements 0..16 are the low nibbles of bytes 0..16, elements 16..32 the high ones.
        let v = (w[base + 1u + (g & 3u)] >> (4u * (g >> 2u))) & 0x0f0f0f0fu;
        if (WTYPE == T_Q4_0) {
            return bytes4(v) - vec4<f32>(8.0);
        }
        return bytes4(v);
    }
    if (WTYPE == T_Q3) {
        let l = w[base + 1u + (g & 1u)];
        let h = w[base + 3u];
        return bytes4(((l >> (2u * (g >> 1u))) & 0x03030303u) | (((h >> g) & 0x01010101u) << 2u));
    }
    // T_Q2
    return bytes4((w[base + 1u + (g & 1u)] >> (2u * (g >> 1u))) & 0x03030303u);
}

// Element e (0..32) of block b, dequantized.
fn block_value(b: u32, e: u32) -> f32 {
    let dm = block_dm(b);
    return dm.x * block_quad(b, e >> 2u)[e & 3u] + dm.y;
}
