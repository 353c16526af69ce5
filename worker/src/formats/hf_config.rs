//! Hugging Face `config.json`: the hyper-parameters of a transformers checkpoint, typed per
//! architecture (`model_type`).
//!
//! Each field is read by name with serde, so a missing or mistyped key is a
//! [`WorkerError::Metadata`] that names it. Fields that transformers itself fills with a class
//! default when a config omits them (older Llama configs have no `num_key_value_heads` or
//! `rope_theta`) get that same default here, because that is what the checkpoint was trained
//! with; shape-defining sizes have no default and must be present.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::WorkerError;

type Object = serde_json::Map<String, serde_json::Value>;

/// `model_type = "bert"` (BertModel, e.g. all-MiniLM-L6-v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Always `"gelu"` (exact erf) once parsed; other activations are refused.
    pub hidden_act: String,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub type_vocab_size: usize,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `model_type = "llama"` (LlamaForCausalLM: Llama 2/3, SmolLM2, TinyLlama).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfLlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// transformers' default: `num_attention_heads` (no grouped-query attention).
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    /// transformers' default: 1e-6.
    pub rms_norm_eps: f32,
    /// transformers' default: 10000.
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    /// transformers' default: false (SmolLM2 sets true).
    pub tie_word_embeddings: bool,
}

/// A parsed `config.json`, by architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum HfConfig {
    Bert(BertConfig),
    Llama(HfLlamaConfig),
}

fn meta(key: &str, reason: impl Into<String>) -> WorkerError {
    WorkerError::Metadata { key: key.to_owned(), reason: reason.into() }
}

/// `obj[key]` as `T`; None when absent (or JSON null, which transformers treats as unset).
fn optional<T: DeserializeOwned>(obj: &Object, key: &str) -> Result<Option<T>, WorkerError> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| meta(key, format!("config.json has {v}, expected {}: {e}", std::any::type_name::<T>()))),
    }
}

fn required<T: DeserializeOwned>(obj: &Object, key: &str) -> Result<T, WorkerError> {
    optional(obj, key)?.ok_or_else(|| meta(key, "missing from config.json"))
}

/// A size that must be at least 1.
fn positive(obj: &Object, key: &str) -> Result<usize, WorkerError> {
    match required::<usize>(obj, key)? {
        0 => Err(meta(key, "must be at least 1")),
        n => Ok(n),
    }
}

/// `num_attention_heads` must divide `hidden_size` (the head width is their quotient).
fn check_heads(hidden: usize, heads: usize) -> Result<(), WorkerError> {
    if !hidden.is_multiple_of(heads) {
        return Err(meta("num_attention_heads", format!("{heads} heads do not divide hidden_size {hidden}")));
    }
    Ok(())
}

impl HfConfig {
    /// Parses `config.json` bytes; `source_name` appears in errors about malformed JSON.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, WorkerError> {
        let obj: Object = serde_json::from_slice(bytes).map_err(|e| WorkerError::ModelFormat {
            source_name: source_name.to_owned(),
            format: "config.json",
            reason: format!("not a JSON object: {e}"),
        })?;
        let model_type: String = required(&obj, "model_type")?;
        match model_type.as_str() {
            "bert" => Ok(HfConfig::Bert(bert(&obj)?)),
            "llama" => Ok(HfConfig::Llama(llama(&obj)?)),
            _ => Err(WorkerError::UnsupportedArchitecture { architecture: model_type }),
        }
    }

    /// The `model_type` this config was parsed from.
    pub fn model_type(&self) -> &'static str {
        match self {
            HfConfig::Bert(_) => "bert",
            HfConfig::Llama(_) => "llama",
        }
    }
}

fn bert(obj: &Object) -> Result<BertConfig, WorkerError> {
    let hidden_act = optional::<String>(obj, "hidden_act")?.unwrap_or_else(|| "gelu".into());
    // "gelu" in transformers is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" are the tanh
    // approximation, which would shift every activation slightly: refuse rather than guess.
    if hidden_act != "gelu" {
        return Err(meta("hidden_act", format!("{hidden_act:?} is not supported; only \"gelu\" (exact erf) is")));
    }
    let position_type = optional::<String>(obj, "position_embedding_type")?;
    if position_type.as_deref().is_some_and(|p| p != "absolute") {
        return Err(meta("position_embedding_type", format!("{position_type:?} is not supported; only \"absolute\" is")));
    }
    let config = BertConfig {
        hidden_size: positive(obj, "hidden_size")?,
        num_hidden_layers: positive(obj, "num_hidden_layers")?,
        num_attention_heads: positive(obj, "num_attention_heads")?,
        intermediate_size: positive(obj, "intermediate_size")?,
        hidden_act,
        layer_norm_eps: optional(obj, "layer_norm_eps")?.unwrap_or(1e-12),
        max_position_embeddings: positive(obj, "max_position_embeddings")?,
        vocab_size: positive(obj, "vocab_size")?,
        type_vocab_size: optional(obj, "type_vocab_size")?.unwrap_or(2),
    };
    check_heads(config.hidden_size, config.num_attention_heads)?;
    if config.type_vocab_size == 0 {
        return Err(meta("type_vocab_size", "must be at least 1 (token type 0 is always used)"));
    }
    Ok(config)
}

fn llama(obj: &Object) -> Result<HfLlamaConfig, WorkerError> {
    let num_attention_heads = positive(obj, "num_attention_heads")?;
    let config = HfLlamaConfig {
        hidden_size: positive(obj, "hidden_size")?,
        intermediate_size: positive(obj, "intermediate_size")?,
        num_attention_heads,
        num_key_value_heads: optional(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads),
        num_hidden_layers: positive(obj, "num_hidden_layers")?,
        rms_norm_eps: optional(obj, "rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: optional(obj, "rope_theta")?.unwrap_or(10000.0),
        max_position_embeddings: positive(obj, "max_position_embeddings")?,
        vocab_size: positive(obj, "vocab_size")?,
        tie_word_embeddings: optional(obj, "tie_word_embeddings")?.unwrap_or(false),
    };
    check_heads(config.hidden_size, num_attention_heads)?;
    let kv = config.num_key_value_heads;
    if kv == 0 || num_attention_heads % kv != 0 {
        return Err(meta("num_key_value_heads", format!("{kv} KV heads do not divide {num_attention_heads} query heads")));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
        "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
        "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522}"#;

    const SMOLLM2: &str = r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_attention_heads": 9, "num_key_value_heads": 3, "num_hidden_layers": 30,
        "rms_norm_eps": 1e-05, "rope_theta": 100000, "max_position_embeddings": 8192,
        "vocab_size": 49152, "tie_word_embeddings": true, "rope_scaling": null}"#;

    fn parse(s: &str) -> Result<HfConfig, WorkerError> {
        HfConfig::parse(s.as_bytes(), "config.json")
    }

    #[test]
    fn minilm_and_smollm2_configs() {
        let HfConfig::Bert(b) = parse(MINILM).unwrap() else { panic!("not bert") };
        assert_eq!((b.hidden_size, b.num_hidden_layers, b.num_attention_heads, b.head_dim()), (384, 6, 12, 32));
        assert_eq!((b.intermediate_size, b.max_position_embeddings, b.vocab_size, b.type_vocab_size), (1536, 512, 30522, 2));
        assert_eq!(b.layer_norm_eps, 1e-12);
        let HfConfig::Llama(l) = parse(SMOLLM2).unwrap() else { panic!("not llama") };
        assert_eq!((l.num_attention_heads, l.num_key_value_heads, l.rope_theta, l.rms_norm_eps), (9, 3, 100000.0, 1e-5));
        assert!(l.tie_word_embeddings);
    }

    #[test]
    fn llama_defaults_follow_transformers() {
        let s = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_hidden_layers": 2, "max_position_embeddings": 128, "vocab_size": 100}"#;
        let HfConfig::Llama(l) = parse(s).unwrap() else { panic!("not llama") };
        assert_eq!((l.num_key_value_heads, l.rope_theta, l.rms_norm_eps, l.tie_word_embeddings), (4, 10000.0, 1e-6, false));
    }

    #[test]
    fn bad_configs_are_named_errors() {
        let err = parse(&MINILM.replace("\"bert\"", "\"gpt9\"")).unwrap_err();
        assert_eq!(err, WorkerError::UnsupportedArchitecture { architecture: "gpt9".into() });
        let cases = [
            (MINILM.replace("\"hidden_size\": 384,", ""), "hidden_size"),
            (MINILM.replace("\"hidden_size\": 384", "\"hidden_size\": \"big\""), "hidden_size"),
            (MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 5"), "num_attention_heads"),
            (MINILM.replace("\"gelu\"", "\"gelu_new\""), "hidden_act"),
            (MINILM.replace("\"model_type\": \"bert\",", ""), "model_type"),
            (SMOLLM2.replace("\"num_key_value_heads\": 3", "\"num_key_value_heads\": 4"), "num_key_value_heads"),
            (SMOLLM2.replace("\"vocab_size\": 49152,", ""), "vocab_size"),
        ];
        for (json, key) in cases {
            match parse(&json) {
                Err(WorkerError::Metadata { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected a Metadata error, got {other:?}"),
            }
        }
        assert_eq!(parse("[1, 2]").unwrap_err().name(), "ModelFormatError");
    }
}
