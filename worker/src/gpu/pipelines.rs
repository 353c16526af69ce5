//! The WGSL registry and the pipeline cache.
//!
//! Every kernel family is one file in `shaders/` (stem shared with its CPU op), included at
//! compile time. A [`Variant`] specialises a family by a few constants the Rust side writes in
//! front of the source (workgroup size, token tile, weight storage type), and its [`Variant::key`]
//! (`matmul_q4_1_t4_l8_wg64`) is both the wgpu label and the cache key, so a validation message
//! names the exact variant.
//!
//! [`Dims`] and [`Step`] mirror `shaders/common.wgsl`'s structs byte for byte (compile-time
//! size checks below); that file is prepended to every module, so it is the one WGSL source of
//! truth for the uniform layout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::GpuContext;
use crate::quant::StorageType;
use crate::WorkerError;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const WEIGHTS: &str = include_str!("../../../shaders/weights.wgsl");

/// Per-dispatch constants (`struct Dims` in common.wgsl), written once at load.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dims {
    pub rows: u32,
    pub cols: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub flags: u32,
    pub eps: f32,
    pub scale: f32,
    pub context: u32,
    pub _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<Dims>() == 48);

impl Dims {
    pub fn to_bytes(&self) -> Vec<u8> {
        let words = [self.rows, self.cols, self.heads, self.kv_heads, self.head_dim, self.flags, self.eps.to_bits(), self.scale.to_bits(), self.context, 0, 0, 0];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// Per-pass values (`struct Step`): tokens in this pass and the first one's position.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub t: u32,
    pub pos: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Step>() == 16);

impl Step {
    pub fn new(t: usize, pos: usize) -> Self {
        Step { t: t as u32, pos: pos as u32, _pad: [0; 2] }
    }
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.t.to_le_bytes());
        out[4..8].copy_from_slice(&self.pos.to_le_bytes());
        out
    }
}

/// A kernel family: one `shaders/<stem>.wgsl`, one entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Embedding,
    Matmul,
    RmsNorm,
    LayerNorm,
    Rope,
    Attention,
    Swiglu,
    Gelu,
    Residual,
    TopK,
}

impl Family {
    fn source(self) -> &'static str {
        match self {
            Family::Embedding => include_str!("../../../shaders/embedding.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::RmsNorm => include_str!("../../../shaders/rmsnorm.wgsl"),
            Family::LayerNorm => include_str!("../../../shaders/layernorm.wgsl"),
            Family::Rope => include_str!("../../../shaders/rope.wgsl"),
            Family::Attention => include_str!("../../../shaders/attention.wgsl"),
            Family::Swiglu | Family::Gelu => include_str!("../../../shaders/activation.wgsl"),
            Family::Residual => include_str!("../../../shaders/residual.wgsl"),
            Family::TopK => include_str!("../../../shaders/topk.wgsl"),
        }
    }

    fn entry_point(self) -> &'static str {
        match self {
            Family::Swiglu => "swiglu",
            Family::Gelu => "gelu",
            _ => "main",
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Family::Embedding => "embedding",
            Family::Matmul => "matmul",
            Family::RmsNorm => "rmsnorm",
            Family::LayerNorm => "layernorm",
            Family::Rope => "rope",
            Family::Attention => "attention",
            Family::Swiglu => "swiglu",
            Family::Gelu => "gelu",
            Family::Residual => "residual",
            Family::TopK => "topk",
        }
    }
}

/// Storage-type code and GPU block size in words (`T_*` and `BLOCK_WORDS` in weights.wgsl).
pub fn weight_code(ty: StorageType) -> (u32, u32) {
    match ty {
        StorageType::F32 => (0, 1),
        StorageType::F16 => (1, 1),
        StorageType::Q8_0 => (2, 9),
        StorageType::Q4_0 => (3, 5),
        StorageType::Q4_1 => (4, 5),
        StorageType::Q3 => (5, 4),
        StorageType::Q2 => (6, 3),
    }
}

/// One specialisation of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    pub family: Family,
    /// Workgroup size (invocations along x).
    pub wg: u32,
    /// Tokens per invocation (matmul only; 1 = GEMV).
    pub tile: u32,
    /// The weight storage type (embedding, matmul).
    pub weights: Option<StorageType>,
    /// Invocations per weight row (matmul only; 1..=8, a divisor of 8).
    pub lanes: u32,
}

impl Variant {
    pub fn new(family: Family, wg: u32) -> Self {
        Variant { family, wg, tile: 1, weights: None, lanes: 1 }
    }

    pub fn weights(family: Family, ty: StorageType, tile: u32, wg: u32) -> Self {
        Variant { family, wg, tile, weights: Some(ty), lanes: 1 }
    }

    /// `family[_type][_tN]_wgN`: the wgpu label and the cache key.
    pub fn key(&self) -> String {
        let mut key = self.family.stem().to_owned();
        if let Some(ty) = self.weights {
            key.push('_');
            key.push_str(ty.name());
        }
        if self.family == Family::Matmul {
            key.push_str(&format!("_t{}_l{}", self.tile, self.lanes));
        }
        key.push_str(&format!("_wg{}", self.wg));
        key
    }

    /// The module source: variant constants, common.wgsl, weights.wgsl when the family reads
    /// stored weights, then the family's file.
    pub fn source(&self) -> String {
        let mut src = format!("// variant {}\nconst WG: u32 = {}u;\nconst TILE: u32 = {}u;\nconst LANES: u32 = {}u;\n", self.key(), self.wg, self.tile, self.lanes);
        if let Some(ty) = self.weights {
            let (code, words) = weight_code(ty);
            src.push_str(&format!("const WTYPE: u32 = {code}u;\nconst BLOCK_WORDS: u32 = {words}u;\n"));
        }
        src.push_str(COMMON);
        if self.weights.is_some() {
            src.push_str(WEIGHTS);
        }
        src.push_str(self.family.source());
        src
    }
}

/// Compiled pipelines by variant key, and the time spent compiling them.
#[derive(Default)]
pub struct PipelineCache {
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    compile_ms: Mutex<f64>,
}

impl PipelineCache {
    /// The pipeline of `variant`, compiled on first use (inside a validation error scope, so a
    /// shader that does not compile is a `GpuValidationError` naming the variant).
    pub fn get(&self, ctx: &GpuContext, variant: Variant) -> Result<Arc<wgpu::ComputePipeline>, WorkerError> {
        let key = variant.key();
        if let Some(p) = self.pipelines.lock().ok().and_then(|map| map.get(&key).cloned()) {
            return Ok(p);
        }
        let start = crate::clock::now_ms();
        let source = variant.source();
        let pipeline = ctx.scoped(&format!("pipeline {key}"), || {
            let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(&key), source: wgpu::ShaderSource::Wgsl(source.into()) });
            ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some(variant.family.entry_point()),
                compilation_options: Default::default(),
                cache: None,
            })
        })?;
        let pipeline = Arc::new(pipeline);
        if let Ok(mut ms) = self.compile_ms.lock() {
            *ms += crate::clock::now_ms() - start;
        }
        if let Ok(mut map) = self.pipelines.lock() {
            map.insert(key, pipeline.clone());
        }
        Ok(pipeline)
    }

    /// Milliseconds spent compiling pipelines so far.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms.lock().map(|ms| *ms).unwrap_or(0.0)
    }

    /// The keys compiled so far (sorted).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.pipelines.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    }
}
