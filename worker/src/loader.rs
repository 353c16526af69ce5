//! From bytes or a path to a ready model: detects the format (GGUF file, HF directory) and the
//! architecture, and builds the model with its tokenizer.

use crate::formats::gguf::GgufFile;
use crate::models::llama::Llama;
use crate::tensor::SharedBytes;
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::WorkerError;

/// A text-generation model and its tokenizer.
#[derive(Debug, Clone)]
pub struct TextModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
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
        Ok(TextModel { model, tokenizer })
    }

    /// Token ids for a prompt: as plain text, or wrapped by the model's chat template as one
    /// user turn (with `system`, when given, as the system turn).
    pub fn encode_prompt(&self, prompt: &str, chat: bool, system: Option<&str>) -> Result<Vec<u32>, WorkerError> {
        if !chat {
            return self.tokenizer.encode(prompt, true);
        }
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", prompt));
        let rendered = self.tokenizer.render_chat(&messages, true)?;
        self.tokenizer.encode(&rendered, true)
    }
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

        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| WorkerError::Io { path: path.display().to_string(), reason: e.to_string() })
        };
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
        Ok(TextModel { model, tokenizer })
    }
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
        ModelPathKind::PackedDirectory => Err(WorkerError::ModelFormat {
            source_name: path.display().to_string(),
            format: "packed model",
            reason: "packed models load once the packed-format issue (#4) lands".into(),
        }),
    }
}
