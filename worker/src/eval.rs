//! Quality measures for `accel eval`: perplexity of a text model, and agreement of an embedding
//! model with a reference (e.g. a quantized pack against the f32 original).

use crate::models::bert::Embedder;
use crate::models::llama::Llama;
use crate::ops::softmax::log_softmax_at;
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

/// Perplexity over one text.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// Tokens in the text (N); N − 1 predictions are scored.
    pub tokens: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
}

/// Perplexity under ../shared/fixtures/MODELS.md's convention: no BOS, the whole text as one
/// sequence, exp(mean NLL of tokens 2..N given their prefix). Runs in prefill chunks of
/// `chunk` tokens with every position's logits.
pub fn perplexity(model: &Llama, tokenizer: &Tokenizer, text: &str, chunk: usize) -> Result<Perplexity, WorkerError> {
    let ids = tokenizer.encode(text, false)?;
    if ids.len() < 2 {
        return Err(WorkerError::InvalidParameter { reason: format!("the text encodes to {} token(s); perplexity needs at least 2", ids.len()) });
    }
    let mut state = model.new_state(ids.len());
    if state.context() < ids.len() {
        return Err(WorkerError::ContextOverflow { tokens: ids.len(), context: state.context() });
    }
    let vocab = model.config.vocab;
    let mut nll = 0f64;
    let chunk = chunk.max(1);
    for (c, piece) in ids.chunks(chunk).enumerate() {
        let logits = model.forward(&mut state, piece, true)?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            // Position p predicts token p + 1.
            if let Some(&next) = ids.get(c * chunk + i + 1) {
                nll -= log_softmax_at(row, next as usize);
            }
        }
    }
    let mean_nll = nll / (ids.len() - 1) as f64;
    Ok(Perplexity { tokens: ids.len(), mean_nll, perplexity: mean_nll.exp() })
}

/// Agreement of an embedding model with a reference on the same sentences.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EmbeddingAgreement {
    pub sentences: usize,
    pub mean_cosine: f64,
    pub min_cosine: f64,
}

/// Mean and worst cosine between `model`'s and `reference`'s embeddings of each sentence.
pub fn embedding_agreement(model: &Embedder, reference: &Embedder, sentences: &[&str]) -> Result<EmbeddingAgreement, WorkerError> {
    if sentences.is_empty() {
        return Err(WorkerError::InvalidParameter { reason: "no sentences to embed (one per non-empty line of --text)".into() });
    }
    let (a, b) = (model.embed(sentences)?, reference.embed(sentences)?);
    let cosines: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (norm(x) * norm(y)).max(f64::MIN_POSITIVE)
        })
        .collect();
    Ok(EmbeddingAgreement {
        sentences: sentences.len(),
        mean_cosine: cosines.iter().sum::<f64>() / cosines.len() as f64,
        min_cosine: cosines.iter().copied().fold(f64::INFINITY, f64::min),
    })
}
