//! # BERT encoder and sentence embeddings
//!
//! BERT (Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding", <https://arxiv.org/abs/1810.04805>) as `BertModel` in transformers: learned
//! absolute positions, **post-norm** blocks (LayerNorm after each residual add, unlike Llama's
//! pre-norm), bidirectional attention, every projection with a bias, exact-erf GELU. Sentence
//! embeddings (sentence-transformers, e.g. all-MiniLM-L6-v2) are the attention-masked mean of the
//! last hidden states, L2-normalised.
//!
//! ```text
//! x = LN(word[ids] + pos[0..t] + type[0])                 x: [b·t, d]  (b sequences padded to t)
//! for each layer:
//!   q, k, v = x·Wqᵀ+bq, x·Wkᵀ+bk, x·Wvᵀ+bv               [b·t, d] = [b·t, n_head·hd]
//!   a = attend(q, k, v) within each sequence, padded keys masked to −∞
//!   x = LN(x + a·Woᵀ + bo)
//!   x = LN(x + gelu(x·W1ᵀ + b1)·W2ᵀ + b2)                 [b·t, d_ff] → [b·t, d]
//! e = normalize(mean over real tokens of x)               [b, d]
//! ```
//!
//! Tensor names are transformers' without the `bert.` prefix (`encoder.layer.0.attention.self.
//! query.weight`); [`Bert::from_hf_dir`] also accepts prefixed checkpoints.

use crate::formats::safetensors::{SafetensorsFile, SafetensorsSource};
use crate::models::TensorSource;
use crate::ops::activation::gelu;
use crate::ops::attention::attend;
use crate::ops::residual::add_in_place;
use crate::ops::layernorm::layernorm;
use crate::tensor::{Activations, SharedBytes, WeightMatrix};
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

pub use crate::formats::hf_config::BertConfig;
use crate::formats::hf_config::HfConfig;

/// A projection with its bias: y = x·Wᵀ + b.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: WeightMatrix,
    pub bias: Vec<f32>,
}

impl Linear {
    /// `{prefix}.weight` [out, in] and `{prefix}.bias` [out].
    fn load(src: &impl TensorSource, prefix: &str, out: usize, inp: usize) -> Result<Self, WorkerError> {
        Ok(Linear { weight: src.matrix(&format!("{prefix}.weight"), out, inp)?, bias: src.vector(&format!("{prefix}.bias"), out)? })
    }

    /// xs: [t, in] → [t, out].
    fn forward(&self, xs: &[f32], t: usize) -> Vec<f32> {
        let mut ys = vec![0f32; t * self.weight.rows];
        self.weight.matmul(xs, &mut ys, t, Activations::F32);
        for row in ys.chunks_exact_mut(self.weight.rows) {
            for (y, &b) in row.iter_mut().zip(&self.bias) {
                *y += b;
            }
        }
        ys
    }
}

/// LayerNorm weight and bias.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Norm {
    fn load(src: &impl TensorSource, prefix: &str, d: usize) -> Result<Self, WorkerError> {
        Ok(Norm { weight: src.vector(&format!("{prefix}.weight"), d)?, bias: src.vector(&format!("{prefix}.bias"), d)? })
    }
}

/// One encoder block's weights.
#[derive(Debug, Clone)]
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: Norm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: Norm,
}

impl BertLayer {
    pub fn load(src: &impl TensorSource, c: &BertConfig, i: usize) -> Result<Self, WorkerError> {
        let p = format!("encoder.layer.{i}");
        let (d, ff) = (c.hidden_size, c.intermediate_size);
        Ok(BertLayer {
            query: Linear::load(src, &format!("{p}.attention.self.query"), d, d)?,
            key: Linear::load(src, &format!("{p}.attention.self.key"), d, d)?,
            value: Linear::load(src, &format!("{p}.attention.self.value"), d, d)?,
            attn_out: Linear::load(src, &format!("{p}.attention.output.dense"), d, d)?,
            attn_norm: Norm::load(src, &format!("{p}.attention.output.LayerNorm"), d)?,
            intermediate: Linear::load(src, &format!("{p}.intermediate.dense"), ff, d)?,
            output: Linear::load(src, &format!("{p}.output.dense"), d, ff)?,
            out_norm: Norm::load(src, &format!("{p}.output.LayerNorm"), d)?,
        })
    }
}

/// A loaded BERT encoder with mean pooling.
#[derive(Debug, Clone)]
pub struct Bert {
    pub config: BertConfig,
    pub word: WeightMatrix,
    pub position: WeightMatrix,
    /// Row 0 of `token_type_embeddings`: every token is segment A for sentence embeddings.
    pub token_type: Vec<f32>,
    pub embed_norm: Norm,
    pub layers: Vec<BertLayer>,
}

impl Bert {
    pub fn load(src: &impl TensorSource, config: BertConfig) -> Result<Self, WorkerError> {
        let d = config.hidden_size;
        let word = src.matrix("embeddings.word_embeddings.weight", config.vocab_size, d)?;
        let position = src.matrix("embeddings.position_embeddings.weight", config.max_position_embeddings, d)?;
        let types = src.matrix("embeddings.token_type_embeddings.weight", config.type_vocab_size, d)?;
        let mut token_type = vec![0f32; d];
        types.dequantize_row(0, &mut token_type);
        let embed_norm = Norm::load(src, "embeddings.LayerNorm", d)?;
        let layers = (0..config.num_hidden_layers).map(|i| BertLayer::load(src, &config, i)).collect::<Result<Vec<_>, _>>()?;
        Ok(Bert { config, word, position, token_type, embed_norm, layers })
    }

    /// From `config.json` bytes and the bytes of `model.safetensors` (the browser path).
    pub fn from_hf_bytes(config_json: &[u8], weights: SharedBytes) -> Result<Self, WorkerError> {
        let config = bert_config(config_json, "config.json")?;
        let file = SafetensorsFile::parse(weights, "model.safetensors")?;
        Bert::load(&SafetensorsSource::new(file, "bert").with_prefix("bert."), config)
    }

    /// From an HF model directory: `config.json` and a memory-mapped `model.safetensors`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self, WorkerError> {
        let config_path = dir.join("config.json");
        let config = bert_config(&crate::loader::read_file(&config_path)?, &config_path.display().to_string())?;
        let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        Bert::load(&SafetensorsSource::new(file, "bert").with_prefix("bert."), config)
    }

    /// The pooled, L2-normalised embedding of one sequence of ids. ids: [t] → [d].
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>, WorkerError> {
        let mut out = self.embed_batch(std::slice::from_ref(&ids.to_vec()))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Embeddings of several sequences at once: padded to the longest, with padded keys masked
    /// out of attention and padded rows left out of the mean, so each result equals
    /// [`Bert::embed_ids`] of that sequence alone. batch: b × [tᵢ] → b × [d].
    pub fn embed_batch(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, WorkerError> {
        let c = &self.config;
        for ids in batch {
            if ids.is_empty() {
                return Err(WorkerError::Protocol { reason: "cannot embed an empty token sequence (the text tokenized to nothing)".into() });
            }
            if ids.len() > c.max_position_embeddings {
                return Err(WorkerError::ContextOverflow { tokens: ids.len(), context: c.max_position_embeddings });
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(WorkerError::Tokenizer { reason: format!("token id {bad} is outside the vocabulary of {}", c.vocab_size) });
            }
        }
        let (b, t, d) = (batch.len(), batch.iter().map(Vec::len).max().unwrap_or(0), c.hidden_size);
        if b == 0 {
            return Ok(Vec::new());
        }
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();

        // Embeddings: x[s, i] = word[id] + pos[i] + type[0]. Padding uses id 0 ([PAD] in BERT
        // vocabularies); its rows only need to be finite, since the mask hides them.
        let mut x = vec![0f32; b * t * d]; // [b·t, d]
        let mut pos = vec![0f32; d];
        for (s, ids) in batch.iter().enumerate() {
            for i in 0..t {
                let row = &mut x[(s * t + i) * d..][..d];
                self.word.dequantize_row(ids.get(i).copied().unwrap_or(0) as usize, row);
                self.position.dequantize_row(i, &mut pos);
                for ((v, &p), &ty) in row.iter_mut().zip(&pos).zip(&self.token_type) {
                    *v += p + ty;
                }
            }
        }
        layernorm(&mut x, &self.embed_norm.weight, &self.embed_norm.bias, c.layer_norm_eps);

        // Additive key mask per sequence: 0 for real tokens, −∞ for padding ([b, t]). A batch
        // without padding needs none, which also keeps the single-sequence path mask-free.
        let masks: Vec<Option<Vec<f32>>> = lens
            .iter()
            .map(|&len| (len < t).then(|| (0..t).map(|i| if i < len { 0.0 } else { f32::NEG_INFINITY }).collect()))
            .collect();
        for layer in &self.layers {
            self.layer_forward(layer, &mut x, &lens, t, &masks);
        }

        Ok(lens.iter().enumerate().map(|(s, &len)| mean_pool_normalized(&x[s * t * d..][..len * d], d)).collect())
    }

    /// One post-norm block over x: [b·t, d] in place.
    fn layer_forward(&self, w: &BertLayer, x: &mut [f32], lens: &[usize], t: usize, masks: &[Option<Vec<f32>>]) {
        let c = &self.config;
        let (n, d, hd) = (x.len() / c.hidden_size, c.hidden_size, c.head_dim());
        let q = w.query.forward(x, n); // [b·t, d]
        let k = w.key.forward(x, n);
        let v = w.value.forward(x, n);
        // Attention within each sequence. Padded query rows are skipped (left zero): nothing
        // reads them but later padded rows, which are masked out everywhere.
        let mut attn = vec![0f32; n * d]; // [b·t, n_head·hd]
        for (s, (&len, mask)) in lens.iter().zip(masks).enumerate() {
            let (keys, values) = (&k[s * t * d..][..t * d], &v[s * t * d..][..t * d]);
            for i in 0..len {
                let r = (s * t + i) * d;
                attend(&q[r..][..d], keys, values, c.num_attention_heads, hd, mask.as_deref(), &mut attn[r..][..d]);
            }
        }
        let o = w.attn_out.forward(&attn, n); // [b·t, d]
        add_in_place(x, &o);
        layernorm(x, &w.attn_norm.weight, &w.attn_norm.bias, c.layer_norm_eps);

        let mut h = w.intermediate.forward(x, n); // [b·t, d_ff]
        gelu(&mut h);
        let o = w.output.forward(&h, n); // [b·t, d]
        add_in_place(x, &o);
        layernorm(x, &w.out_norm.weight, &w.out_norm.bias, c.layer_norm_eps);
    }
}

/// Mean of the rows of `rows` ([len, d]), then divided by its L2 norm (floored at 1e-12, as
/// torch's `F.normalize`, so an all-zero vector stays zero instead of becoming NaN). Sums in f64.
fn mean_pool_normalized(rows: &[f32], d: usize) -> Vec<f32> {
    let len = rows.len() / d;
    let mut sum = vec![0f64; d];
    for row in rows.chunks_exact(d) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / len as f64).collect();
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt().max(1e-12);
    mean.iter().map(|m| (m / norm) as f32).collect()
}

/// `config.json` bytes that must describe a BERT model.
fn bert_config(bytes: &[u8], source_name: &str) -> Result<BertConfig, WorkerError> {
    match HfConfig::parse(bytes, source_name)? {
        HfConfig::Bert(c) => Ok(c),
        other => Err(WorkerError::Metadata {
            key: "model_type".into(),
            reason: format!("{source_name} describes a {} model; a sentence embedder needs \"bert\"", other.model_type()),
        }),
    }
}

/// Text → sentence embedding: a BERT encoder and its WordPiece tokenizer.
#[derive(Debug, Clone)]
pub struct Embedder {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
}

impl Embedder {
    pub fn new(bert: Bert, tokenizer: Tokenizer) -> Self {
        Embedder { bert, tokenizer }
    }

    /// From the bytes of `config.json`, `model.safetensors` and `tokenizer.json`.
    pub fn from_hf_bytes(config_json: &[u8], weights: SharedBytes, tokenizer_json: &[u8]) -> Result<Self, WorkerError> {
        Ok(Embedder { bert: Bert::from_hf_bytes(config_json, weights)?, tokenizer: Tokenizer::from_json_bytes(tokenizer_json)? })
    }

    /// From an HF model directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self, WorkerError> {
        let tokenizer = Tokenizer::from_json_bytes(&crate::loader::read_file(&dir.join("tokenizer.json"))?)?;
        Ok(Embedder { bert: Bert::from_hf_dir(dir)?, tokenizer })
    }

    /// The ids the encoder sees for `text` (with `[CLS]` … `[SEP]`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, WorkerError> {
        self.tokenizer.encode(text, true)
    }

    /// One unit-length embedding per text, computed as one padded batch.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, WorkerError> {
        let batch = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        self.bert.embed_batch(&batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::safetensors::tests::{build, f32_bytes};
    use crate::quant::tests::Rng;

    /// A random 2-layer BERT (d 8, 2 heads, d_ff 16, vocab 20, 12 positions) as safetensors.
    fn tiny() -> Bert {
        let config = BertConfig {
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            max_position_embeddings: 12,
            vocab_size: 20,
            type_vocab_size: 2,
        };
        let mut rng = Rng(7);
        let mut tensors: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![20, 8]),
            ("embeddings.position_embeddings.weight".into(), vec![12, 8]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, 8]),
            ("embeddings.LayerNorm.weight".into(), vec![8]),
            ("embeddings.LayerNorm.bias".into(), vec![8]),
        ];
        for l in 0..2 {
            for (name, shape) in [
                ("attention.self.query", vec![8, 8]),
                ("attention.self.key", vec![8, 8]),
                ("attention.self.value", vec![8, 8]),
                ("attention.output.dense", vec![8, 8]),
                ("attention.output.LayerNorm", vec![8]),
                ("intermediate.dense", vec![16, 8]),
                ("output.dense", vec![8, 16]),
                ("output.LayerNorm", vec![8]),
            ] {
                let bias = vec![shape[0]];
                tensors.push((format!("bert.encoder.layer.{l}.{name}.weight"), shape));
                tensors.push((format!("bert.encoder.layer.{l}.{name}.bias"), bias));
            }
        }
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s)| {
                let values: Vec<f32> = (0..s.iter().product::<usize>()).map(|_| rng.f32()).collect();
                (n, s, f32_bytes(&values))
            })
            .collect();
        let refs: Vec<(&str, &str, &[usize], Vec<u8>)> = data.iter().map(|(n, s, b)| (n.as_str(), "F32", s.as_slice(), b.clone())).collect();
        let file = SafetensorsFile::parse(SharedBytes::from_vec(build(&refs)), "tiny").unwrap();
        Bert::load(&SafetensorsSource::new(file, "bert").with_prefix("bert."), config).unwrap()
    }

    #[test]
    fn batch_equals_one_by_one_and_is_unit_norm() {
        let bert = tiny();
        let batch = vec![vec![1, 5, 7, 2], vec![1, 9, 2], vec![1, 3, 4, 6, 8, 10, 2], vec![4]];
        let together = bert.embed_batch(&batch).unwrap();
        for (ids, got) in batch.iter().zip(&together) {
            let alone = bert.embed_ids(ids).unwrap();
            let worst = got.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-6, "{ids:?}: batch differs from alone by {worst}");
            let norm = alone.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }

    #[test]
    fn bad_ids_are_named_errors() {
        let bert = tiny();
        assert_eq!(bert.embed_ids(&[1; 13]).unwrap_err(), WorkerError::ContextOverflow { tokens: 13, context: 12 });
        assert_eq!(bert.embed_ids(&[1, 20]).unwrap_err().name(), "TokenizerError");
        assert_eq!(bert.embed_ids(&[]).unwrap_err().name(), "ProtocolError");
        assert!(bert.embed_batch(&[]).unwrap().is_empty());
    }
}
