//! `accel pack`: a GGUF file or HF directory → a packed model (`manifest.json` +
//! `shards/<sha256>.bin`, the format of `sw::manifest`), at a chosen precision.
//!
//! **What gets packed** is exactly what the architecture loads: the model is loaded through a
//! [`Recording`] tensor source, which notes every tensor the loader asks for, by the canonical
//! name it asks for (GGUF names for Llama — including HF checkpoints, whose names the HF source
//! maps — and HF names for BERT), in load order. The packed model then loads through
//! `PackedModel` by the same names, so a `keep` pack holds byte-identical weights and gives
//! bit-identical logits.
//!
//! **Precision.** `keep` copies every stored tensor as it is (GGUF Q8_0/Q4_0/Q4_1/F16/F32).
//! `f32`/`f16`/`q8`/`q4`/`q3`/`q2` convert every matrix (q8 = Q8_0, q4 = Q4_1: the min helps at
//! 4 bits). `mixed` picks the bits per tensor class from a map (the seed's by default, see
//! [`DEFAULT_MIXED`]); classes the seed does not name inherit from their sibling
//! (`attention.output` ← `attention.value`, `feed_forward.gate` ← `feed_forward.up`). Vectors
//! (norm weights, biases) always stay f32: they are tiny and every value matters. A tied LM head
//! is the embedding matrix, stored once at the embedding's precision. A matrix whose rows are
//! not whole blocks of 32 falls back to f16.
//!
//! **Layout.** Components in load order — tokenizer, embeddings, layer.0 … layer.N-1,
//! final_norm, lm_head — each contiguous; a component starts a new shard when it would not fit
//! in the current one (so loading a layer touches one shard), and only a component bigger than
//! a shard is split, at tensor boundaries. Entries are 256-byte aligned. Everything is
//! deterministic: the same input and options give the same bytes.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sw::manifest::{Component, FileEntry, ShardInfo, TensorEntry, TokenizerRef, ALIGNMENT, FORMAT, FORMAT_VERSION};
use sw::{ContentHash, Manifest};

use crate::models::llama::{BatchForward, LlamaLayer};
use crate::models::TensorSource;
use crate::quant::{self, StorageType};
use crate::tensor::{Activations, WeightMatrix};
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

/// The seed's mixed-precision map: bits per tensor class.
pub const DEFAULT_MIXED: &[(&str, u32)] = &[
    ("embedding", 8),
    ("attention.query", 3),
    ("attention.key", 3),
    ("attention.value", 3),
    ("feed_forward.up", 2),
    ("feed_forward.down", 2),
    ("layernorm", 8),
    ("lm_head", 4),
];

/// Tensor classes a precision config may name, with the class each inherits from when unnamed.
const CLASSES: &[(&str, Option<&str>)] = &[
    ("embedding", None),
    ("attention.query", None),
    ("attention.key", None),
    ("attention.value", None),
    ("attention.output", Some("attention.value")),
    ("feed_forward.gate", Some("feed_forward.up")),
    ("feed_forward.up", None),
    ("feed_forward.down", None),
    ("layernorm", None),
    ("lm_head", None),
];

/// How to store each matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Precision {
    Keep,
    Uniform(StorageType),
    /// Bits per tensor class (every class of [`CLASSES`] resolved).
    Mixed(BTreeMap<String, u32>),
}

impl Precision {
    /// `--precision NAME` with an optional `--precision-config` JSON (only with `mixed`).
    pub fn parse(name: &str, config: Option<&[u8]>) -> Result<Self, WorkerError> {
        let invalid = |reason: String| WorkerError::InvalidParameter { reason };
        if config.is_some() && name != "mixed" {
            return Err(invalid(format!("--precision-config only applies to --precision mixed (not {name:?})")));
        }
        let uniform = |bits: u32| storage_for_bits(bits).map(Precision::Uniform);
        match name {
            "keep" => Ok(Precision::Keep),
            "f32" => Ok(Precision::Uniform(StorageType::F32)),
            "f16" => Ok(Precision::Uniform(StorageType::F16)),
            "q8" => uniform(8),
            "q4" => uniform(4),
            "q3" => uniform(3),
            "q2" => uniform(2),
            "mixed" => {
                let mut map: BTreeMap<String, u32> = DEFAULT_MIXED.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
                if let Some(bytes) = config {
                    let overrides: BTreeMap<String, serde_json::Value> =
                        serde_json::from_slice(bytes).map_err(|e| invalid(format!("the precision config is not a JSON object of class → bits: {e}")))?;
                    for (key, value) in overrides {
                        if !CLASSES.iter().any(|(c, _)| *c == key) {
                            let known: Vec<&str> = CLASSES.iter().map(|(c, _)| *c).collect();
                            return Err(invalid(format!("unknown tensor class {key:?} in the precision config; known: {}", known.join(", "))));
                        }
                        let bits = value.as_u64().filter(|&b| storage_for_bits(b as u32).is_ok()).ok_or_else(|| invalid(format!("{key:?}: {value} is not one of 2, 3, 4, 8, 16, 32 bits")))?;
                        map.insert(key, bits as u32);
                    }
                }
                for (class, parent) in CLASSES {
                    if let (false, Some(parent)) = (map.contains_key(*class), parent) {
                        let bits = map[*parent];
                        map.insert((*class).to_owned(), bits);
                    }
                }
                Ok(Precision::Mixed(map))
            }
            other => Err(invalid(format!("unknown precision {other:?}; use keep, f32, f16, q8, q4, q3, q2 or mixed"))),
        }
    }

    /// The storage type for a matrix of class `class` now stored as `stored`.
    fn target(&self, class: &str, stored: StorageType) -> StorageType {
        match self {
            Precision::Keep => stored,
            Precision::Uniform(ty) => *ty,
            Precision::Mixed(map) => map.get(class).and_then(|&bits| storage_for_bits(bits).ok()).unwrap_or(stored),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Precision::Keep => "keep".into(),
            Precision::Uniform(ty) => ty.name().into(),
            Precision::Mixed(map) => format!("mixed {}", serde_json::to_string(map).unwrap_or_default()),
        }
    }
}

/// The storage type for a bit width: 4 bits is Q4_1 (with a min: better than Q4_0's offset).
pub fn storage_for_bits(bits: u32) -> Result<StorageType, WorkerError> {
    Ok(match bits {
        32 => StorageType::F32,
        16 => StorageType::F16,
        8 => StorageType::Q8_0,
        4 => StorageType::Q4_1,
        3 => StorageType::Q3,
        2 => StorageType::Q2,
        other => return Err(WorkerError::InvalidParameter { reason: format!("{other} bits is not a storage width; use 2, 3, 4, 8, 16 or 32") }),
    })
}

/// The precision-map class of a canonical tensor name (GGUF Llama names, HF BERT names).
pub fn tensor_class(name: &str) -> &'static str {
    let has = |part: &str| name.contains(part);
    if has("norm") || has("LayerNorm") {
        "layernorm"
    } else if has("token_embd") || has("embeddings.") {
        "embedding"
    } else if has("attn_q.") || has("attention.self.query") {
        "attention.query"
    } else if has("attn_k.") || has("attention.self.key") {
        "attention.key"
    } else if has("attn_v.") || has("attention.self.value") {
        "attention.value"
    } else if has("attn_output") || has("attention.output.dense") {
        "attention.output"
    } else if has("ffn_gate") {
        "feed_forward.gate"
    } else if has("ffn_up") || has("intermediate.dense") {
        "feed_forward.up"
    } else if has("ffn_down") || has(".output.dense") {
        "feed_forward.down"
    } else {
        "lm_head"
    }
}

/// The load-order component of a canonical tensor name: (sort key, name).
fn component_of(name: &str) -> (u32, String) {
    let layer = |prefix: &str| name.strip_prefix(prefix).and_then(|rest| rest.split('.').next()).and_then(|i| i.parse::<u32>().ok());
    if let Some(i) = layer("blk.").or_else(|| layer("encoder.layer.")) {
        (2 + i, format!("layer.{i}"))
    } else if name.starts_with("token_embd") || name.starts_with("embeddings.") {
        (1, "embeddings".into())
    } else if name.starts_with("output_norm") {
        (u32::MAX - 1, "final_norm".into())
    } else {
        (u32::MAX, "lm_head".into())
    }
}

/// What the loader asked for, in order, under the name it asked for.
enum Recorded {
    Matrix(String, WeightMatrix),
    Vector(String, Vec<f32>),
}

/// A [`TensorSource`] wrapper that notes every tensor the architecture loads.
pub struct Recording<'a, S> {
    inner: &'a S,
    seen: RefCell<Vec<Recorded>>,
}

impl<'a, S: TensorSource> Recording<'a, S> {
    pub fn new(inner: &'a S) -> Self {
        Recording { inner, seen: RefCell::new(Vec::new()) }
    }
}

impl<S: TensorSource> TensorSource for Recording<'_, S> {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let m = self.inner.matrix(name, rows, cols)?;
        self.seen.borrow_mut().push(Recorded::Matrix(name.to_owned(), m.clone()));
        Ok(m)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        let v = self.inner.vector(name, len)?;
        self.seen.borrow_mut().push(Recorded::Vector(name.to_owned(), v.clone()));
        Ok(v)
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
}

/// A pack in memory: the manifest and its shards (hash, bytes).
pub struct Pack {
    pub manifest: Manifest,
    pub shards: Vec<(ContentHash, Vec<u8>)>,
}

/// One entry to place: a tensor or a file, its bytes, and its component.
struct Entry {
    name: String,
    component: (u32, String),
    tensor: Option<(Vec<u64>, StorageType)>,
    bytes: Vec<u8>,
}

/// Text the packer runs through the model to measure activation statistics and quantize with
/// GPTQ (2,247 SmolLM2 tokens): all a BERT is calibrated on, the first part of a decoder's
/// [`CALIBRATION_CORPUS`]. Deliberately unrelated to the evaluation text: the first part
/// is our own prose; the rest is SmolLM2-135M-Instruct's own sampled answers to fifteen
/// varied prompts (stories, explanations, code, recipes, letters; temperature 0.8, top-p 0.95),
/// text the model finds typical. GPTQ needs more tokens than H has columns (1,536 for the
/// feed-forward down projection): with the first part alone (555 tokens) it overfits and
/// makes the mixed pack worse, not better.
pub const CALIBRATION_TEXT: &str = include_str!("../data/calibration.txt");

/// What a decoder is calibrated on: [`CALIBRATION_TEXT`] and ~240 KB more of our own prose in
/// other registers (fiction, letters, articles, worked lessons, news, how-tos, Q&A, workplace
/// writing, memoir, verse; then dialogue, reviews, popular science, children's stories, sport,
/// software documentation, finance, nature writing, recipes, opinion) — 58,682 SmolLM2 tokens
/// in 64 sequences. GPTQ estimates each matrix's H = XᵀX from these inputs, and the upstream
/// corrections fit each row to them: with only the first text's 2k tokens, H of a 1,536-column
/// matrix is barely full rank and GPTQ fits the calibration text rather than the model; going
/// from the first five texts (30,916 tokens) to all nine took SmolLM2 `mixed` from 40.15 to
/// 39.46 (20% damping), but four more (manuals, e-mails, forum threads, a mystery, school
/// lessons; ~82k tokens) took it to 42.58: past this size, which text it is moves the result
/// more than how much.
pub const CALIBRATION_CORPUS: [&str; 9] = [
    CALIBRATION_TEXT,
    include_str!("../data/calibration/fiction-letters-travel.txt"),
    include_str!("../data/calibration/articles-lessons-news.txt"),
    include_str!("../data/calibration/howto-questions-work.txt"),
    include_str!("../data/calibration/memoir-history-verse.txt"),
    include_str!("../data/calibration/children-myth-sport.txt"),
    include_str!("../data/calibration/dialogue-reviews-science.txt"),
    include_str!("../data/calibration/nature-food-opinion.txt"),
    include_str!("../data/calibration/technical-finance-law.txt"),
];

/// Longest calibration sequence, in tokens: long enough that later positions are represented
/// (prompts and chats run to hundreds of tokens), short enough that attention stays cheap.
pub const CALIBRATION_SEQUENCE_TOKENS: usize = 1024;

/// [`CALIBRATION_CORPUS`] as token sequences for a batched calibration pass: each text's
/// paragraphs (split at blank lines) gathered in order into sequences of at most `max_tokens`
/// (a paragraph longer than that is cut). No BOS: the evaluation convention adds none either.
pub fn calibration_sequences(tokenizer: &Tokenizer, max_tokens: usize) -> Result<Vec<Vec<u32>>, WorkerError> {
    let mut sequences = Vec::new();
    for text in CALIBRATION_CORPUS {
        let mut current = String::new();
        let mut current_tokens = 0;
        for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            let n = tokenizer.encode(paragraph, false)?.len() + 1;
            if current_tokens > 0 && current_tokens + n > max_tokens {
                sequences.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(paragraph);
            current_tokens += n;
        }
        if !current.is_empty() {
            sequences.push(current);
        }
    }
    sequences
        .iter()
        .map(|text| {
            let mut ids = tokenizer.encode(text, false)?;
            ids.truncate(max_tokens);
            Ok(ids)
        })
        .collect()
}

/// Importance per column of a matrix from its input's mean squares E[a_j²], floored at 1% of
/// their mean so a column the calibration text never excited still counts.
fn importance_weights(mean_squares: &[f32]) -> Vec<f32> {
    let mean = mean_squares.iter().map(|&v| v as f64).sum::<f64>() / mean_squares.len().max(1) as f64;
    let floor = (0.01 * mean).max(f64::MIN_POSITIVE) as f32;
    mean_squares.iter().map(|&v| v + floor).collect()
}

/// What the packer knows beyond the tensors themselves.
#[derive(Debug, Default)]
pub struct PackHints {
    /// Matrix name → E[a_j²] per input column (from [`crate::tensor::calibration::record`]):
    /// weights the rounding error of the min/scale formats; without an entry a matrix is
    /// fitted unweighted.
    pub activation_stats: std::collections::HashMap<String, Vec<f32>>,
    /// Matrix name → the matrix already quantized by GPTQ during calibration ([`gptq_substitute`]);
    /// used when its type is the target, instead of requantizing.
    pub quantized: std::collections::HashMap<String, WeightMatrix>,
    /// Tensors imported from GGUF types the engine does not run (they arrive as f32): the type
    /// `keep` stores them as.
    pub keep_as: std::collections::HashMap<String, StorageType>,
}

/// Builds the pack of a model that was loaded through `recording`.
#[allow(clippy::too_many_arguments)]
pub fn build<S: TensorSource>(
    recording: Recording<'_, S>,
    name: &str,
    architecture: &str,
    hyperparameters: serde_json::Value,
    tokenizer: &Tokenizer,
    precision: &Precision,
    shard_bytes: usize,
    hints: &PackHints,
) -> Result<Pack, WorkerError> {
    if shard_bytes == 0 {
        return Err(WorkerError::InvalidParameter { reason: "--shard-mb must be at least 1".into() });
    }
    let mut entries = vec![
        Entry { name: "tokenizer.json".into(), component: (0, "tokenizer".into()), tensor: None, bytes: tokenizer.to_json_bytes()? },
        Entry { name: "tokenizer_config.json".into(), component: (0, "tokenizer".into()), tensor: None, bytes: serde_json::to_vec(&tokenizer.packed_config()).unwrap_or_default() },
    ];
    for recorded in recording.seen.into_inner() {
        entries.push(match recorded {
            Recorded::Vector(name, values) => {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Entry { component: component_of(&name), tensor: Some((vec![values.len() as u64], StorageType::F32)), bytes, name }
            }
            Recorded::Matrix(name, m) => {
                let target = target_type(precision, &name, &m, &hints.keep_as);
                // Statistics are keyed by the name the matrix carries (the source's own).
                let importance = hints.activation_stats.get(&m.name).filter(|s| s.len() == m.cols).map(|s| importance_weights(s));
                let gptq = hints.quantized.get(&m.name).filter(|q| (q.ty, q.rows, q.cols) == (target, m.rows, m.cols));
                let bytes = match gptq {
                    _ if target == m.ty => m.stored_bytes().to_vec(),
                    Some(q) => q.stored_bytes().to_vec(),
                    None => convert(&m, target, importance.as_deref()),
                };
                Entry { component: component_of(&name), tensor: Some((vec![m.rows as u64, m.cols as u64], target)), bytes, name }
            }
        });
    }
    // Stable sort: load order of components, the loader's order within one.
    entries.sort_by_key(|e| e.component.0);
    Ok(assemble(entries, name, architecture, hyperparameters, precision, shard_bytes))
}

/// The storage type matrix `m`, loaded as `name`, is packed in: the precision's choice for its
/// class (from the type it is kept as, for imported types), or f16 when its rows are not whole
/// blocks of that type.
fn target_type(precision: &Precision, name: &str, m: &WeightMatrix, keep_as: &std::collections::HashMap<String, StorageType>) -> StorageType {
    let stored = keep_as.get(name).copied().unwrap_or(m.ty);
    let target = precision.target(tensor_class(name), stored);
    if target.row_bytes(m.cols).is_some() {
        target
    } else {
        StorageType::F16
    }
}

/// `m`'s target type when it is requantized to a min/scale format (Q4_1, Q3, Q2): the formats
/// whose rounding uses the calibration pass.
fn min_scale_target(precision: &Precision, name: &str, m: &WeightMatrix, keep_as: &std::collections::HashMap<String, StorageType>) -> Option<StorageType> {
    let target = target_type(precision, name, m, keep_as);
    (target != m.ty && quant::gptq::applies(target)).then_some(target)
}

impl<S> Recording<'_, S> {
    /// The matrices GPTQ will quantize, by the name they carry, with their target types: those
    /// requantized to a min/scale format, except the embedding and LM head. The embedding is
    /// also a lookup table (its rows are used directly, not through inputs), and the
    /// calibration pass computes the LM head for one token only, too few for a Gram matrix.
    pub fn gptq_targets(&self, precision: &Precision, keep_as: &std::collections::HashMap<String, StorageType>) -> std::collections::HashMap<String, StorageType> {
        let mut targets = std::collections::HashMap::new();
        for recorded in self.seen.borrow().iter() {
            if let Recorded::Matrix(name, m) = recorded {
                if let Some(target) = min_scale_target(precision, name, m, keep_as).filter(|_| !matches!(tensor_class(name), "embedding" | "lm_head")) {
                    targets.insert(m.name.clone(), target);
                }
            }
        }
        targets
    }

    /// What the calibration pass has to do for `precision`: None when it can be skipped, else
    /// [`Recording::gptq_targets`]. Only a matrix requantized to a min/scale format (Q4_1, Q3,
    /// Q2) uses it — through GPTQ, or through the importance weights of its rounding; Q8_0 and
    /// the float types round each value on its own, so a q8, f16 or f32 pack skips the f32
    /// forward over the whole corpus (SmolLM2 with every matrix at 8 bits, on two cores: 923 s
    /// with it, 1.2 s without) and writes the same bytes. `keep` never calibrates: it re-encodes nothing it has a type for.
    pub fn calibration_plan(&self, precision: &Precision, keep_as: &std::collections::HashMap<String, StorageType>) -> Option<std::collections::HashMap<String, StorageType>> {
        let requantized_to_min_scale = self.seen.borrow().iter().any(|recorded| matches!(recorded, Recorded::Matrix(name, m) if min_scale_target(precision, name, m, keep_as).is_some()));
        (*precision != Precision::Keep && requantized_to_min_scale).then(|| self.gptq_targets(precision, keep_as))
    }
}

/// The full-precision model's inputs of the matrices being quantized, for the upstream
/// correction ([`quant::gptq::correct_for_upstream_error`]). The calibration runs the
/// unquantized layer i over the batch with `recording` on just before it runs layer i to be
/// quantized: the substitute keeps the inputs each target receives in the first run, and takes
/// them out again when it quantizes the target in the second.
#[derive(Default)]
pub struct ReferenceInputs {
    pub recording: std::sync::atomic::AtomicBool,
    inputs: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Vec<f32>>>>,
    /// The next matrix to add to the residual stream, and how far that stream has drifted (see
    /// [`ReferenceInputs::set_drift`]); one at a time, so a matrix GPTQ skips leaves nothing
    /// behind.
    drift: std::sync::Mutex<Option<(String, Vec<f32>)>>,
}

impl ReferenceInputs {
    fn keep(&self, name: &str, xs: &[f32]) {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        // q/k/v (and gate/up) read the same input: one copy for all of them.
        let shared = inputs.values().find(|kept| kept.as_slice() == xs).cloned();
        inputs.insert(name.to_owned(), shared.unwrap_or_else(|| std::sync::Arc::new(xs.to_vec())));
    }

    fn take(&self, name: &str) -> Option<std::sync::Arc<Vec<f32>>> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    /// Notes, for the matrix `name` whose outputs are added to the residual stream next, how far
    /// the quantized pass' stream (`residual`) has drifted from the full-precision one
    /// (`reference`), both [tokens, d_model]: the matrix is then corrected to cancel it too.
    pub fn set_drift(&self, name: &str, reference: &[f32], residual: &[f32]) {
        let drift = reference.iter().zip(residual).map(|(r, x)| r - x).collect();
        *self.drift.lock().unwrap_or_else(|p| p.into_inner()) = Some((name.to_owned(), drift));
    }

    fn take_drift(&self, name: &str) -> Option<Vec<f32>> {
        let mut slot = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some((for_name, drift)) if for_name == name => Some(drift),
            other => {
                *slot = other;
                None
            }
        }
    }
}

/// The calibration substitute (see [`crate::tensor::calibration`]) that quantizes each matrix of
/// `targets` with GPTQ ([`quant::gptq`]) for the inputs it sees in the calibration pass — first
/// corrected towards the full-precision model's outputs when `reference` holds its inputs —
/// then polishes the codes. The last inputs' Gram matrix and factors are kept, since q/k/v and
/// gate/up read the same input.
pub fn gptq_substitute(targets: std::collections::HashMap<String, StorageType>, reference: Option<std::sync::Arc<ReferenceInputs>>) -> std::sync::Arc<crate::tensor::calibration::Substitute> {
    use quant::gptq;
    /// H, its damped inverse factor and λ, and the cross product with the reference inputs.
    struct Factors {
        gram: gptq::Gram,
        factor: Option<(Vec<f32>, f64)>,
        cross: Option<Vec<f64>>,
    }
    // Keyed by the inputs and GPTQ's damping (a custom map may give q/k/v different bits).
    let last: std::sync::Mutex<Option<(Vec<f32>, f64, std::sync::Arc<Factors>)>> = std::sync::Mutex::new(None);
    std::sync::Arc::new(move |m: &WeightMatrix, xs: &[f32]| {
        let &target = targets.get(&m.name)?;
        if let Some(r) = reference.as_ref().filter(|r| r.recording.load(std::sync::atomic::Ordering::Relaxed)) {
            r.keep(&m.name, xs);
            return None;
        }
        let reference_inputs = reference.as_ref().and_then(|r| r.take(&m.name)).filter(|r| r.len() == xs.len());
        let damp = gptq::damping(target);
        let factors = {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            match last.as_ref() {
                Some((inputs, for_damp, factors)) if *for_damp == damp && inputs.as_slice() == xs => factors.clone(),
                _ => {
                    let gram = gptq::Gram::of(xs, m.cols);
                    let factor = gptq::inverse_cholesky_upper_damped(&gram, damp);
                    let cross = reference_inputs.as_ref().map(|r| gptq::cross_gram(r, xs, m.cols));
                    let factors = std::sync::Arc::new(Factors { gram, factor, cross });
                    *last = Some((xs.to_vec(), damp, factors.clone()));
                    factors
                }
            }
        };
        // No factor (H indefinite even when damped): None leaves the matrix to plain rounding.
        let (u, lambda) = factors.factor.as_ref()?;
        let gram = &factors.gram;
        let diag: Vec<f64> = (0..m.cols).map(|j| gram.h[j * m.cols + j]).collect();
        let mut weights = vec![0f32; m.rows * m.cols];
        for (r, row) in weights.chunks_exact_mut(m.cols).enumerate() {
            m.dequantize_row(r, row);
        }
        if let Some(cross) = &factors.cross {
            let tokens = xs.len() / m.cols;
            let drift = reference.as_ref().and_then(|r| r.take_drift(&m.name)).filter(|d| d.len() == tokens * m.rows).map(|d| gptq::drift_gram(&d, m.rows, xs, m.cols));
            gptq::correct_for_upstream_error(&mut weights, m.cols, cross, drift.as_deref(), u, *lambda);
        }
        let polish = gptq::Polish { lambda: *lambda, rounds: gptq::POLISH_ROUNDS };
        let bytes = gptq::quantize_matrix(target, &weights, m.cols, u, &diag, gptq::ColumnWeights::Compensated, Some(&gram.h), Some(polish));
        WeightMatrix::new(&m.name, target, m.rows, m.cols, crate::tensor::SharedBytes::from_vec(bytes)).ok()
    })
}

/// How [`reconstruct_feed_forward`] tunes (see [`quant::ffn_tune`]). Measured on SmolLM2's
/// first two layers (fraction of GPTQ's error left, layer 0 / layer 1): a step of 0.01 × the
/// mean scale 0.907 / 0.968; 0.003 0.914 / 0.971; 0.03 0.932 / 0.992; 0.1 worse than GPTQ;
/// 120 steps at 0.03 0.910 / 0.984. A step costs seven f32 products over the batch.
pub const FEED_FORWARD_TUNING: quant::ffn_tune::Settings = quant::ffn_tune::Settings { steps: 40, batch: 2048, learning_rate: 0.01 };

/// What [`reconstruct_feed_forward`] did to one layer: the squared distance of the quantized
/// pass' residual stream from the full-precision one after the feed-forward, with GPTQ's
/// matrices and with the tuned ones, and whether the tuned ones were kept.
#[derive(Debug, Clone, Copy)]
pub struct Reconstruction {
    pub gptq_error: f64,
    pub tuned_error: f64,
    pub kept: bool,
}

/// After the calibration pass has run `layer`'s feed-forward with its matrices quantized by
/// GPTQ: tunes the 2-bit ones' scales and mins jointly ([`quant::ffn_tune`]) so that the block
/// maps its inputs (the quantized pass' stream `before` the feed-forward, normalized) to the
/// full-precision pass' stream after it (`reference`), then runs the feed-forward again with
/// them. They replace GPTQ's (for the rest of the pass and in the pack) only if the whole
/// corpus' error went down. None when there is nothing to tune: no 2-bit matrix, or one of the
/// three was not quantized to a min/scale format.
pub fn reconstruct_feed_forward(layer: &LlamaLayer, rms_eps: f32, before: &[f32], reference: &[f32], quantized: &mut BatchForward, settings: quant::ffn_tune::Settings) -> Option<Reconstruction> {
    use crate::tensor::calibration;
    use quant::ffn_tune::{tune, BlockParams};
    let gptq = [&layer.w_gate, &layer.w_up, &layer.w_down].map(|m| calibration::substituted(&m.name));
    let [Some(gate), Some(up), Some(down)] = gptq else { return None };
    if ![&gate, &up, &down].iter().any(|m| m.ty == StorageType::Q2) {
        return None;
    }
    let [mut g, mut u, mut d] = [&gate, &up, &down].map(|m| BlockParams::of(m, m.ty == StorageType::Q2));
    let (Some(g), Some(u), Some(d)) = (g.as_mut(), u.as_mut(), d.as_mut()) else { return None };
    let distance = |residual: &[f32]| residual.iter().zip(reference).map(|(&x, &r)| ((x - r) as f64).powi(2)).sum::<f64>();
    let gptq_error = distance(quantized.residual());
    let mut inputs = before.to_vec();
    crate::ops::rmsnorm::rmsnorm(&mut inputs, &layer.ffn_norm, rms_eps);
    let targets: Vec<f32> = reference.iter().zip(before).map(|(r, x)| r - x).collect();
    tune([&mut *g, &mut *u, &mut *d], &inputs, &targets, settings);
    let tuned = [(&*g, &gate), (&*u, &up), (&*d, &down)].map(|(p, m)| p.encode(m));
    let [Some(tuned_gate), Some(tuned_up), Some(tuned_down)] = tuned else { return None };
    for m in [tuned_gate, tuned_up, tuned_down] {
        calibration::replace_substituted(m);
    }
    quantized.rerun_feed_forward(layer, before, Activations::F32);
    let tuned_error = distance(quantized.residual());
    let kept = tuned_error < gptq_error;
    if !kept {
        for m in [gate, up, down] {
            calibration::replace_substituted(m);
        }
        quantized.rerun_feed_forward(layer, before, Activations::F32);
    }
    Some(Reconstruction { gptq_error, tuned_error, kept })
}

/// Re-encodes a matrix row by row (never the whole matrix in f32 at once).
fn convert(m: &WeightMatrix, target: StorageType, importance: Option<&[f32]>) -> Vec<u8> {
    let row_bytes = target.row_bytes(m.cols).unwrap_or(0);
    // Rows are independent: quantize them in parallel natively (the least-squares search is
    // the slow part of packing), then concatenate in order.
    let encoded = crate::tensor::parallel_map((0..m.rows).collect(), |r| {
        let mut row = vec![0f32; m.cols];
        m.dequantize_row(r, &mut row);
        let mut out = Vec::with_capacity(row_bytes);
        quant::quantize::quantize_row_weighted(target, &row, importance, &mut out);
        out
    });
    encoded.concat()
}

/// Places entries into shards and writes the manifest (see the module header).
fn assemble(entries: Vec<Entry>, name: &str, architecture: &str, hyperparameters: serde_json::Value, precision: &Precision, shard_bytes: usize) -> Pack {
    let aligned = |n: usize| n.next_multiple_of(ALIGNMENT as usize);
    let mut shard_data: Vec<Vec<u8>> = vec![Vec::new()];
    // (entry index, shard index, offset)
    let mut placed: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let component = &entries[i].component;
        let end = entries[i..].iter().position(|e| &e.component != component).map_or(entries.len(), |n| i + n);
        let component_size: usize = entries[i..end].iter().map(|e| aligned(e.bytes.len())).sum();
        let current = shard_data.last().map_or(0, Vec::len);
        if current > 0 && aligned(current) + component_size > shard_bytes {
            shard_data.push(Vec::new());
        }
        for (k, entry) in entries[i..end].iter().enumerate() {
            let shard = shard_data.last_mut().expect("at least one shard");
            if !shard.is_empty() && aligned(shard.len()) + entry.bytes.len() > shard_bytes {
                shard_data.push(Vec::new());
            }
            let index = shard_data.len() - 1;
            let shard = &mut shard_data[index];
            shard.resize(aligned(shard.len()), 0);
            placed.push((i + k, index, shard.len()));
            shard.extend_from_slice(&entry.bytes);
        }
        i = end;
    }
    let hashes: Vec<ContentHash> = shard_data.iter().map(|s| ContentHash::of(s)).collect();
    let (mut tensors, mut files, mut components) = (Vec::new(), Vec::new(), Vec::<Component>::new());
    for (index, shard, offset) in placed {
        let e = &entries[index];
        let (shard, offset, length) = (hashes[shard].clone(), offset as u64, e.bytes.len() as u64);
        if components.last().is_none_or(|c| c.name != e.component.1) {
            components.push(Component { name: e.component.1.clone(), priority: components.len() as u32, bytes: 0, tensors: vec![], files: vec![] });
        }
        let component = components.last_mut().expect("pushed above");
        component.bytes += length;
        match &e.tensor {
            Some((shape, ty)) => {
                component.tensors.push(e.name.clone());
                tensors.push(TensorEntry { name: e.name.clone(), shape: shape.clone(), dtype: ty.name().into(), shard, offset, length });
            }
            None => {
                component.files.push(e.name.clone());
                files.push(FileEntry { name: e.name.clone(), shard, offset, length });
            }
        }
    }
    let shards: Vec<(ContentHash, Vec<u8>)> = hashes.into_iter().zip(shard_data).collect();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        name: name.to_owned(),
        architecture: architecture.to_owned(),
        hyperparameters,
        precision: precision.name(),
        tokenizer: TokenizerRef { component: "tokenizer".into(), file: "tokenizer.json".into(), config: "tokenizer_config.json".into() },
        tensors,
        files,
        components,
        shards: shards.iter().map(|(h, b)| ShardInfo { sha256: h.clone(), bytes: b.len() as u64 }).collect(),
        total_bytes: shards.iter().map(|(_, b)| b.len() as u64).sum(),
        mirrors: vec![],
    };
    Pack { manifest, shards }
}

/// Writes a pack to `out` without ever leaving a half-written model there: everything goes to a
/// sibling temporary directory first, which replaces `out` at the end. `out` may be absent,
/// empty, or hold a pack of the same model name (re-packing); anything else is refused.
#[cfg(not(target_arch = "wasm32"))]
pub fn write(pack: &Pack, out: &std::path::Path) -> Result<(), WorkerError> {
    check_output(out, &pack.manifest.name)?;
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| WorkerError::Io { path: path.clone(), reason: e.to_string() }
    };
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "pack".into());
    let staging = out.with_file_name(format!(".{file_name}.packing-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(staging.join("shards")).map_err(io(&staging))?;
        for (hash, bytes) in &pack.shards {
            let path = staging.join(sw::manifest::shard_path(hash));
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        let path = staging.join("manifest.json");
        std::fs::write(&path, pack.manifest.to_json()).map_err(io(&path))?;
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(io(out))?;
        }
        std::fs::rename(&staging, out).map_err(io(out))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// `out` must be absent, an empty directory, or a pack of the model `name`.
#[cfg(not(target_arch = "wasm32"))]
pub fn check_output(out: &std::path::Path, name: &str) -> Result<(), WorkerError> {
    let refuse = |reason: String| Err(WorkerError::InvalidParameter { reason: format!("--out {}: {reason}; choose another directory or remove it", out.display()) });
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return refuse("exists and is not a directory".into());
    }
    let manifest = out.join("manifest.json");
    if !manifest.exists() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        return if empty { Ok(()) } else { refuse("is not empty and holds no packed model".into()) };
    }
    let existing: Option<String> = std::fs::read(&manifest).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(|v| v["name"].as_str().map(str::to_owned));
    match existing {
        Some(existing) if existing == name => Ok(()),
        Some(existing) => refuse(format!("holds a different model, {existing:?} (this one is {name:?})")),
        None => refuse("holds an unreadable manifest.json".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_min_scale_targets_need_the_calibration_pass() {
        // One f32 feed-forward matrix (two blocks per row) and a norm, as a loader records them.
        let values: Vec<f32> = (0..4 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let up = WeightMatrix::from_f32("blk.0.ffn_up.weight", 4, 64, &values).unwrap();
        let seen = vec![Recorded::Matrix("blk.0.ffn_up.weight".into(), up), Recorded::Vector("blk.0.ffn_norm.weight".into(), vec![1.0; 64])];
        let recording = Recording { inner: &(), seen: RefCell::new(seen) };
        let plan = |p: &str| recording.calibration_plan(&Precision::parse(p, None).unwrap(), &Default::default()).map(|targets| targets.len());
        for skipped in ["keep", "f32", "f16", "q8"] {
            assert_eq!(plan(skipped), None, "{skipped}");
        }
        for calibrated in ["q4", "q3", "q2", "mixed"] {
            assert_eq!(plan(calibrated), Some(1), "{calibrated}");
        }
    }

    #[test]
    fn precision_names_and_configs_are_checked() {
        assert_eq!(Precision::parse("keep", None).unwrap(), Precision::Keep);
        assert_eq!(Precision::parse("q4", None).unwrap(), Precision::Uniform(StorageType::Q4_1));
        assert_eq!(Precision::parse("q5", None).unwrap_err().name(), "InvalidParameterError");
        let Precision::Mixed(map) = Precision::parse("mixed", None).unwrap() else { panic!("mixed") };
        assert_eq!((map["attention.query"], map["attention.output"], map["feed_forward.gate"], map["lm_head"]), (3, 3, 2, 4));
        let Precision::Mixed(map) = Precision::parse("mixed", Some(br#"{"feed_forward.up": 4, "feed_forward.gate": 3}"#)).unwrap() else { panic!("mixed") };
        assert_eq!((map["feed_forward.up"], map["feed_forward.gate"], map["feed_forward.down"]), (4, 3, 2));
        for bad in [&br#"{"attention.querry": 4}"#[..], br#"{"lm_head": 5}"#, br#"{"lm_head": "4"}"#, b"[4]", b"{"] {
            let err = Precision::parse("mixed", Some(bad)).unwrap_err();
            assert_eq!(err.name(), "InvalidParameterError", "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Precision::parse("q8", Some(b"{}")).unwrap_err().name(), "InvalidParameterError");
    }

    /// The calibration substitute quantizes only its targets, to their type, and the same
    /// matrix and inputs always give the same bytes (packs stay deterministic).
    #[test]
    fn gptq_substitute_is_deterministic_and_only_touches_its_targets() {
        let mut rng = crate::quant::tests::Rng(17);
        let (rows, cols, tokens) = (16, 64, 96);
        let values: Vec<u8> = (0..rows * cols).flat_map(|_| rng.f32().to_le_bytes()).collect();
        let matrix = |name: &str| WeightMatrix::new(name, StorageType::F32, rows, cols, crate::tensor::SharedBytes::from_vec(values.clone())).unwrap();
        let xs: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let targets: std::collections::HashMap<String, StorageType> = [("blk.0.ffn_up.weight".to_owned(), StorageType::Q2)].into();
        let (first, second) = (gptq_substitute(targets.clone(), None), gptq_substitute(targets, None));
        let a = first(&matrix("blk.0.ffn_up.weight"), &xs).unwrap();
        assert_eq!((a.ty, a.rows, a.cols), (StorageType::Q2, rows, cols));
        assert_eq!(a.stored_bytes(), second(&matrix("blk.0.ffn_up.weight"), &xs).unwrap().stored_bytes());
        // Again through the cached factor of the same inputs.
        assert_eq!(a.stored_bytes(), first(&matrix("blk.0.ffn_up.weight"), &xs).unwrap().stored_bytes());
        assert!(first(&matrix("blk.0.attn_q.weight"), &xs).is_none());
    }

    #[test]
    fn classes_and_components_follow_the_names() {
        for (name, class, component) in [
            ("token_embd.weight", "embedding", "embeddings"),
            ("blk.3.attn_q.weight", "attention.query", "layer.3"),
            ("blk.12.ffn_gate.weight", "feed_forward.gate", "layer.12"),
            ("blk.0.attn_norm.weight", "layernorm", "layer.0"),
            ("output_norm.weight", "layernorm", "final_norm"),
            ("output.weight", "lm_head", "lm_head"),
            ("encoder.layer.5.attention.self.value.weight", "attention.value", "layer.5"),
            ("encoder.layer.5.attention.output.dense.weight", "attention.output", "layer.5"),
            ("encoder.layer.5.intermediate.dense.weight", "feed_forward.up", "layer.5"),
            ("encoder.layer.5.output.dense.weight", "feed_forward.down", "layer.5"),
            ("encoder.layer.5.output.LayerNorm.weight", "layernorm", "layer.5"),
            ("embeddings.position_embeddings.weight", "embedding", "embeddings"),
        ] {
            assert_eq!((tensor_class(name), component_of(name).1.as_str()), (class, component), "{name}");
        }
    }
}
