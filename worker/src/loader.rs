//! From bytes or a path to a ready model: detects the format (GGUF file, HF directory, packed
//! directory) and the architecture, and builds the model with its tokenizer — or, for
//! `accel pack`, loads it through a recording source and builds the pack.

use std::sync::Arc;

use crate::formats::gguf::GgufFile;
use crate::models::bert::{Bert, Embedder};
use crate::models::llama::Llama;
use crate::models::packed_source::PackedModel;
use crate::tensor::SharedBytes;
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::WorkerError;

/// A text-generation model and its tokenizer.
#[derive(Debug, Clone)]
pub struct TextModel {
    pub model: Llama,
    /// Shared: the worker builds it as soon as its component arrives, before the model.
    pub tokenizer: Arc<Tokenizer>,
}

/// Default system prompt for `--chat` when the caller gives none (SmolLM2's own template adds
/// the same one by itself; templates without a default get it from here).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

impl TextModel {
    /// A GGUF file in memory (memory-mapped natively, downloaded in the browser).
    pub fn from_gguf(bytes: SharedBytes, source_name: &str) -> Result<Self, WorkerError> {
        let file = GgufFile::parse(&bytes, source_name)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let model = Llama::from_gguf(&file, bytes)?;
        Ok(TextModel { model, tokenizer: Arc::new(tokenizer) })
    }

    /// A packed Llama (manifest + verified shards).
    pub fn from_packed(pack: &PackedModel) -> Result<Self, WorkerError> {
        Self::assemble(pack, Arc::new(pack.tokenizer()?))
    }

    /// A packed Llama whose tokenizer is already built.
    pub fn assemble(pack: &PackedModel, tokenizer: Arc<Tokenizer>) -> Result<Self, WorkerError> {
        require_architecture(pack, "llama")?;
        Ok(TextModel { model: Llama::load(pack, pack.hyperparameters()?)?, tokenizer })
    }

    /// Token ids for a prompt: see [`encode_prompt`].
    pub fn encode_prompt(&self, prompt: &str, chat: bool, system: Option<&str>) -> Result<Vec<u32>, WorkerError> {
        encode_prompt(&self.tokenizer, prompt, chat, system)
    }
}

/// Token ids for a prompt: as plain text, or wrapped by the model's chat template as one user
/// turn (with `system`, when given, as the system turn).
pub fn encode_prompt(tokenizer: &Tokenizer, prompt: &str, chat: bool, system: Option<&str>) -> Result<Vec<u32>, WorkerError> {
    if !chat {
        return tokenizer.encode(prompt, true);
    }
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", prompt));
    let rendered = tokenizer.render_chat(&messages, true)?;
    tokenizer.encode(&rendered, true)
}

#[cfg(not(target_arch = "wasm32"))]
impl TextModel {
    /// An HF Llama directory: `config.json`, `model.safetensors` (memory-mapped) and
    /// `tokenizer.json`.
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self, WorkerError> {
        use crate::formats::hf_config::HfConfig;
        use crate::formats::safetensors::{SafetensorsFile, SafetensorsSource};
        use crate::models::hf_llama::HfLlamaNames;
        use crate::models::llama::LlamaConfig;

        let read = |name: &str| read_file(&dir.join(name));
        let config = match HfConfig::parse(&read("config.json")?, &dir.join("config.json").display().to_string())? {
            HfConfig::Llama(c) => c,
            other => {
                return Err(WorkerError::UnsupportedArchitecture {
                    architecture: format!("{} (an embedding model: use `accel embed`)", other.model_type()),
                })
            }
        };
        let weights = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        let source = SafetensorsSource::new(weights, "llama");
        let model = Llama::load(&HfLlamaNames(&source), LlamaConfig::from_hf(&config))?;
        let tokenizer = Tokenizer::from_json_bytes(&read("tokenizer.json")?)?;
        Ok(TextModel { model, tokenizer: Arc::new(tokenizer) })
    }
}

/// Reads a whole (small) file; a failure is an `IoError` naming the path.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, WorkerError> {
    std::fs::read(path).map_err(|e| WorkerError::Io { path: path.display().to_string(), reason: e.to_string() })
}

/// Reads a whole file into shared bytes: memory-mapped, so a 100 MB model costs no copy and
/// only the pages a forward pass touches are read.
#[cfg(not(target_arch = "wasm32"))]
pub fn map_file(path: &std::path::Path) -> Result<SharedBytes, WorkerError> {
    let io = |e: std::io::Error| WorkerError::Io { path: path.display().to_string(), reason: e.to_string() };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only; like every mmap user we rely on nobody truncating the model
    // file while it is loaded (a truncation would fault, not corrupt memory safety elsewhere).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(SharedBytes::new(std::sync::Arc::new(map)))
}

/// What kind of model a path holds.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPathKind {
    GgufFile,
    /// A directory with `config.json` (+ safetensors + tokenizer.json).
    HfDirectory,
    /// A directory with `manifest.json` + `shards/` (the packed format).
    PackedDirectory,
}

#[cfg(not(target_arch = "wasm32"))]
pub fn detect_path(path: &std::path::Path) -> Result<ModelPathKind, WorkerError> {
    let io = |reason: String| WorkerError::Io { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
    if meta.is_dir() {
        if path.join("manifest.json").is_file() {
            return Ok(ModelPathKind::PackedDirectory);
        }
        if path.join("config.json").is_file() {
            return Ok(ModelPathKind::HfDirectory);
        }
        return Err(io("is a directory without config.json (HF layout) or manifest.json (packed model)".into()));
    }
    let mut magic = [0u8; 4];
    use std::io::Read;
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| io(e.to_string()))?;
    if &magic == b"GGUF" {
        Ok(ModelPathKind::GgufFile)
    } else {
        Err(WorkerError::ModelFormat {
            source_name: path.display().to_string(),
            format: "model",
            reason: format!("starts with {magic:02x?}: not a GGUF file (give a .gguf file, an HF directory or a packed directory)"),
        })
    }
}

/// Loads a text-generation model from a GGUF file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_text_model(path: &std::path::Path) -> Result<TextModel, WorkerError> {
    match detect_path(path)? {
        ModelPathKind::GgufFile => TextModel::from_gguf(map_file(path)?, &path.display().to_string()),
        ModelPathKind::HfDirectory => TextModel::from_hf_dir(path),
        ModelPathKind::PackedDirectory => TextModel::from_packed(&PackedModel::open(path)?),
    }
}

/// Loads a sentence-embedding model from an HF directory or a packed directory.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_embedder(path: &std::path::Path) -> Result<Embedder, WorkerError> {
    match detect_path(path)? {
        ModelPathKind::HfDirectory => Embedder::from_hf_dir(path),
        ModelPathKind::PackedDirectory => Embedder::from_packed(&PackedModel::open(path)?),
        ModelPathKind::GgufFile => Err(WorkerError::UnsupportedArchitecture { architecture: format!("{} is a GGUF; embedding models load from an HF or packed directory", path.display()) }),
    }
}

/// Whether `path` holds an embedding (BERT) model rather than a text-generation one.
#[cfg(not(target_arch = "wasm32"))]
pub fn is_embedding_model(path: &std::path::Path) -> Result<bool, WorkerError> {
    use crate::formats::hf_config::HfConfig;
    let read = |name: &str| read_file(&path.join(name));
    Ok(match detect_path(path)? {
        ModelPathKind::GgufFile => false,
        ModelPathKind::HfDirectory => matches!(HfConfig::parse(&read("config.json")?, "config.json")?, HfConfig::Bert(_)),
        ModelPathKind::PackedDirectory => sw::Manifest::parse(&read("manifest.json")?)?.architecture == "bert",
    })
}

impl Embedder {
    /// A packed BERT (manifest + verified shards).
    pub fn from_packed(pack: &PackedModel) -> Result<Self, WorkerError> {
        require_architecture(pack, "bert")?;
        Ok(Embedder::new(Bert::load(pack, pack.hyperparameters()?)?, pack.tokenizer()?))
    }
}

fn require_architecture(pack: &PackedModel, expected: &str) -> Result<(), WorkerError> {
    let found = &pack.manifest.architecture;
    if found == expected {
        Ok(())
    } else {
        let use_instead = if found == "bert" { "an embedding model: use embed" } else { "a text-generation model: use generate" };
        Err(WorkerError::UnsupportedArchitecture { architecture: format!("{found} ({} is {use_instead})", pack.manifest.name) })
    }
}

/// `accel pack`: loads the model at `input` (GGUF, HF directory, or another pack) through a
/// recording source and packs what the architecture loaded (see [`crate::pack`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn pack_path(input: &std::path::Path, precision: &crate::pack::Precision, shard_bytes: usize, name: Option<&str>) -> Result<crate::pack::Pack, WorkerError> {
    use crate::formats::hf_config::HfConfig;
    use crate::formats::safetensors::{SafetensorsFile, SafetensorsSource};
    use crate::models::gguf_source::GgufSource;
    use crate::models::hf_llama::HfLlamaNames;
    use crate::models::llama::LlamaConfig;
    use crate::pack::{build, Recording};

    let default_name = sanitize_name(&input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let name = name.map(str::to_owned).unwrap_or(default_name);
    if !sw::manifest::is_valid_name(&name) {
        return Err(WorkerError::InvalidParameter { reason: format!("--name {name:?}: use ASCII letters, digits, '-', '_' and '.'") });
    }
    match detect_path(input)? {
        ModelPathKind::GgufFile => {
            let bytes = map_file(input)?;
            let file = GgufFile::parse(&bytes, &input.display().to_string())?;
            let tokenizer = Tokenizer::from_gguf(&file)?;
            let config = LlamaConfig::from_gguf(&file)?;
            let source = GgufSource::importing(&file, bytes.clone(), "llama");
            let recording = Recording::new(&source);
            let model = Llama::load(&recording, config.clone())?;
            let keep_as = source.imported.as_ref().map(|i| i.borrow().iter().cloned().collect()).unwrap_or_default();
            let calibrated = llama_calibration(&model, &tokenizer, recording.calibration_plan(precision, &keep_as))?;
            build(recording, &name, "llama", hyperparameters_json(&config)?, &tokenizer, precision, shard_bytes, &calibrated.hints(keep_as))
        }
        ModelPathKind::HfDirectory => {
            let config_path = input.join("config.json");
            let config_json = read_file(&config_path)?;
            let tokenizer = Tokenizer::from_json_bytes(&read_file(&input.join("tokenizer.json"))?)?;
            let weights = SafetensorsFile::open(&input.join("model.safetensors"))?;
            match HfConfig::parse(&config_json, &config_path.display().to_string())? {
                HfConfig::Llama(c) => {
                    let config = LlamaConfig::from_hf(&c);
                    let source = SafetensorsSource::new(weights, "llama");
                    let names = HfLlamaNames(&source);
                    let recording = Recording::new(&names);
                    let model = Llama::load(&recording, config.clone())?;
                    let calibrated = llama_calibration(&model, &tokenizer, recording.calibration_plan(precision, &Default::default()))?;
                    build(recording, &name, "llama", hyperparameters_json(&config)?, &tokenizer, precision, shard_bytes, &calibrated.hints(Default::default()))
                }
                HfConfig::Bert(config) => {
                    let source = SafetensorsSource::new(weights, "bert").with_prefix("bert.");
                    let recording = Recording::new(&source);
                    let embedder = Embedder::new(Bert::load(&recording, config.clone())?, tokenizer.clone());
                    let calibrated = bert_calibration(&embedder, recording.calibration_plan(precision, &Default::default()))?;
                    build(recording, &name, "bert", hyperparameters_json(&config)?, &tokenizer, precision, shard_bytes, &calibrated.hints(Default::default()))
                }
            }
        }
        ModelPathKind::PackedDirectory => {
            let pack = PackedModel::open(input)?;
            let tokenizer = pack.tokenizer()?;
            let recording = Recording::new(&pack);
            let architecture = pack.manifest.architecture.clone();
            let calibrated = match architecture.as_str() {
                "llama" => {
                    let model = Llama::load(&recording, pack.hyperparameters()?)?;
                    llama_calibration(&model, &tokenizer, recording.calibration_plan(precision, &Default::default()))?
                }
                "bert" => {
                    let embedder = Embedder::new(Bert::load(&recording, pack.hyperparameters()?)?, tokenizer.clone());
                    bert_calibration(&embedder, recording.calibration_plan(precision, &Default::default()))?
                }
                other => return Err(WorkerError::UnsupportedArchitecture { architecture: other.to_owned() }),
            };
            let hyperparameters = pack.manifest.hyperparameters.clone();
            build(recording, &name, &architecture, hyperparameters, &tokenizer, precision, shard_bytes, &calibrated.hints(Default::default()))
        }
    }
}

/// Runs the model over the calibration corpus in f32 (see `tensor::calibration`), quantizing
/// the matrices of `targets` with GPTQ on the way (`pack::gptq_substitute`); records the mean
/// square of every matrix input. Skipped (`targets` None, see `pack::Recording::calibration_plan`)
/// when nothing is requantized to a format that uses it: `keep`, q8, f16, f32.
#[cfg(not(target_arch = "wasm32"))]
fn llama_calibration(model: &Llama, tokenizer: &Tokenizer, targets: Option<GptqTargets>) -> Result<Recorded, WorkerError> {
    let Some(targets) = targets else {
        return Ok(Recorded::default());
    };
    let sequences = crate::pack::calibration_sequences(tokenizer, crate::pack::CALIBRATION_SEQUENCE_TOKENS.min(model.config.trained_context))?;
    let sequences: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    calibrate_llama(model, &sequences, targets, crate::pack::FEED_FORWARD_TUNING).map(|(recorded, _)| recorded)
}

/// [`llama_calibration`] over `sequences`, with the feed-forward reconstruction tuned by
/// `tuning`; also returns what the reconstruction did to each layer.
///
/// The sequences run as one batch ([`Llama::start_batch`]), so each matrix sees every
/// calibration token in one product, which sequential GPTQ needs. Two batches go through the
/// layers side by side, half a layer (attention, then feed-forward) at a time: the
/// full-precision model's, whose inputs to each half are recorded just before that half is
/// quantized in the other batch, so every matrix is corrected towards the outputs the
/// unquantized model would give (`quant::gptq::correct_for_upstream_error`); and the two
/// residual streams are compared before each half, so the matrix that ends it (attention
/// output, down) is also corrected to cancel the drift the quantized layers before it left.
/// After a feed-forward is quantized, its 2-bit matrices' scales and mins are tuned jointly
/// towards the full-precision stream (`pack::reconstruct_feed_forward`).
#[cfg(not(target_arch = "wasm32"))]
fn calibrate_llama(model: &Llama, sequences: &[&[u32]], targets: GptqTargets, tuning: crate::quant::ffn_tune::Settings) -> Result<(Recorded, Vec<Option<crate::pack::Reconstruction>>), WorkerError> {
    use std::sync::atomic::Ordering;
    let f32 = crate::tensor::Activations::F32;
    let reference = std::sync::Arc::new(crate::pack::ReferenceInputs::default());
    let substitute = crate::pack::gptq_substitute(targets, Some(reference.clone()));
    let (result, recorded) = crate::tensor::calibration::record(Some(substitute), || {
        crate::tensor::on_compute_pool(|| {
            let mut full = model.start_batch(sequences)?;
            let mut quantized = model.start_batch(sequences)?;
            let mut reconstructions = Vec::with_capacity(model.layers.len());
            // Half a layer at a time, so that the matrices writing to the residual stream see
            // how far it has drifted just before they add to it.
            for layer in &model.layers {
                reference.set_drift(&layer.wo.name, full.residual(), quantized.residual());
                reference.recording.store(true, Ordering::Relaxed);
                full.run_attention(layer, f32);
                reference.recording.store(false, Ordering::Relaxed);
                quantized.run_attention(layer, f32);
                reference.set_drift(&layer.w_down.name, full.residual(), quantized.residual());
                reference.recording.store(true, Ordering::Relaxed);
                full.run_feed_forward(layer, f32);
                reference.recording.store(false, Ordering::Relaxed);
                let before = quantized.residual().to_vec();
                quantized.run_feed_forward(layer, f32);
                reconstructions.push(crate::pack::reconstruct_feed_forward(layer, model.config.rms_eps, &before, full.residual(), &mut quantized, tuning));
            }
            quantized.finish(&model.out_norm, &model.lm_head, f32)?;
            Ok(reconstructions)
        })
    });
    result.map(|reconstructions| (recorded, reconstructions))
}

/// [`llama_calibration`] for BERT: the calibration text's lines as one padded batch.
#[cfg(not(target_arch = "wasm32"))]
fn bert_calibration(embedder: &Embedder, targets: Option<GptqTargets>) -> Result<Recorded, WorkerError> {
    let Some(targets) = targets else {
        return Ok(Recorded::default());
    };
    let lines: Vec<&str> = crate::pack::CALIBRATION_TEXT.lines().filter(|l| !l.trim().is_empty()).collect();
    let (result, recorded) = crate::tensor::calibration::record(Some(crate::pack::gptq_substitute(targets, None)), || embedder.embed(&lines));
    result.map(|_| recorded)
}

#[cfg(not(target_arch = "wasm32"))]
type GptqTargets = std::collections::HashMap<String, crate::quant::StorageType>;

#[cfg(not(target_arch = "wasm32"))]
use crate::tensor::calibration::Recorded;

#[cfg(not(target_arch = "wasm32"))]
impl Recorded {
    /// The packer's hints from a calibration run, with the GGUF import's `keep_as` types.
    fn hints(self, keep_as: std::collections::HashMap<String, crate::quant::StorageType>) -> crate::pack::PackHints {
        crate::pack::PackHints { activation_stats: self.mean_squares, quantized: self.substituted, keep_as }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn hyperparameters_json(config: &impl serde::Serialize) -> Result<serde_json::Value, WorkerError> {
    serde_json::to_value(config).map_err(|e| WorkerError::Metadata { key: "hyperparameters".into(), reason: e.to_string() })
}

/// A file stem as a model name: lowercase, with anything but letters, digits, '-', '_', '.'
/// turned into '-'.
#[cfg(not(target_arch = "wasm32"))]
fn sanitize_name(stem: &str) -> String {
    stem.chars().map(|c| if sw::manifest::is_name_char(c) { c.to_ascii_lowercase() } else { '-' }).collect()
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::quant::ffn_tune::Settings;
    use crate::quant::StorageType;

    /// The tiny random Llama of the model tests, with every matrix renamed so that no other
    /// test's products can meet this one's calibration substitute (its state is global).
    fn tiny_llama() -> Llama {
        let bytes = crate::models::llama::tests::tiny_llama_gguf("llama", |n, d| Some((n.into(), d)));
        let file = GgufFile::parse(&bytes, "tiny.gguf").expect("a valid GGUF");
        let mut model = Llama::from_gguf(&file, SharedBytes::from_vec(bytes.clone())).expect("a valid model");
        for layer in &mut model.layers {
            for m in [&mut layer.wq, &mut layer.wk, &mut layer.wv, &mut layer.wo, &mut layer.w_gate, &mut layer.w_up, &mut layer.w_down] {
                m.name = format!("reconstruction-test.{}", m.name);
            }
        }
        model
    }

    /// The feed-forward reconstruction tunes only the 2-bit matrices' scales and mins: GPTQ's
    /// codes stay, a tuning stays only where it brought the quantized stream closer to the
    /// full-precision one, and 3-bit feed-forwards are left exactly as GPTQ made them.
    #[test]
    fn feed_forward_reconstruction_keeps_the_codes_and_only_improvements() {
        let model = tiny_llama();
        let sequences: Vec<Vec<u32>> = (0..6).map(|s| (0..40).map(|i| ((i * 7 + s * 11 + i * i) % 40) as u32).collect()).collect();
        let sequences: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let feed_forwards = || model.layers.iter().flat_map(|l| [&l.w_gate, &l.w_up, &l.w_down]);
        let targets = |ty: StorageType| feed_forwards().map(|m| (m.name.clone(), ty)).collect::<GptqTargets>();
        let tuning = Settings { steps: 30, batch: 128, learning_rate: 0.01 };

        let (_, at_3_bits) = calibrate_llama(&model, &sequences, targets(StorageType::Q3), tuning).expect("calibrates");
        assert!(at_3_bits.iter().all(Option::is_none), "{at_3_bits:?}");

        // No steps: the same matrices, the same error, so GPTQ's are kept.
        let (gptq, untuned) = calibrate_llama(&model, &sequences, targets(StorageType::Q2), Settings { steps: 0, ..tuning }).expect("calibrates");
        assert!(untuned.iter().all(|r| matches!(r, Some(r) if !r.kept && r.tuned_error == r.gptq_error)), "{untuned:?}");
        let (tuned, reconstructions) = calibrate_llama(&model, &sequences, targets(StorageType::Q2), tuning).expect("calibrates");
        for r in reconstructions.iter().map(|r| r.expect("a 2-bit feed-forward")) {
            assert!(!r.kept || r.tuned_error < r.gptq_error, "{r:?}");
        }
        let first = reconstructions[0].expect("a 2-bit feed-forward");
        assert!(first.kept, "{first:?}");
        // Layer 0's GPTQ saw the same inputs in both runs: the same codes, new scales and mins.
        for m in &[&model.layers[0].w_gate, &model.layers[0].w_up, &model.layers[0].w_down] {
            let (before, after) = (gptq.substituted[&m.name].stored_bytes(), tuned.substituted[&m.name].stored_bytes());
            assert_ne!(before, after, "{}", m.name);
            for (b, a) in before.chunks_exact(crate::quant::q2::BLOCK_BYTES).zip(after.chunks_exact(crate::quant::q2::BLOCK_BYTES)) {
                assert_eq!(b[4..], a[4..], "{}: codes changed", m.name);
            }
        }
    }
}
