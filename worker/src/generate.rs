//! Text generation: chunked prefill, then one token at a time through the sampler, with
//! streaming text, stop sequences, EOS and the timings users compare runtimes by.
//!
//! The loop is a plain function over a model, a tokenizer and one sequence's state, with a
//! callback per token. The callback returning `ControlFlow::Break` ends generation early
//! (cancel); the KV cache keeps everything computed so far, so a caller can resume.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::models::llama::{Llama, LlamaState};
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::StopMatcher;
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GenerateParams {
    pub max_tokens: usize,
    #[serde(flatten)]
    pub sampler: SamplerConfig,
    pub stop_sequences: Vec<String>,
    /// Tokens per prefill forward pass: each weight row is dequantized once per chunk, so larger
    /// chunks reuse more; activations grow with it ([chunk, d_ff] floats).
    pub prefill_chunk: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams { max_tokens: 128, sampler: SamplerConfig::default(), stop_sequences: vec![], prefill_chunk: 128 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    StopSequence,
    MaxTokens,
    /// The KV cache is full (the context window is exhausted and no sliding window is on).
    ContextFull,
    /// The caller stopped it (cancel / abort).
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub time_to_first_token_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    /// Every sampled id, including a final EOS.
    pub token_ids: Vec<u32>,
    /// The text shown to the user: no EOS, no stop sequence.
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

/// One streamed token: its id, the text it made visible (may be empty while a character or a
/// possible stop sequence is incomplete), and its index among generated tokens.
#[derive(Debug, Clone)]
pub struct TokenEvent<'a> {
    pub token_id: u32,
    pub text: &'a str,
    pub index: usize,
    pub elapsed_ms: f64,
}

/// Runs the prompt after what `state` already holds and generates up to `params.max_tokens`.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    state: &mut LlamaState,
    prompt_ids: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<Generation, WorkerError> {
    if prompt_ids.is_empty() {
        return Err(WorkerError::Tokenizer { reason: "the prompt encodes to no tokens; give it some text".into() });
    }
    if !state.fits(prompt_ids.len()) {
        return Err(WorkerError::ContextOverflow { tokens: state.len() + prompt_ids.len(), context: state.context() });
    }
    let mut sampler = Sampler::new(params.sampler.clone())?;
    let mut stops = StopMatcher::new(params.stop_sequences.clone());
    let mut decoder = tokenizer.stream_decoder(true);
    let chunk = params.prefill_chunk.max(1);

    let start = now_ms();
    let mut logits = Vec::new();
    for piece in prompt_ids.chunks(chunk) {
        logits = model.forward(state, piece, false)?;
    }
    let prefill_ms = now_ms() - start;

    let mut history: Vec<u32> = prompt_ids.to_vec();
    let (mut token_ids, mut text) = (Vec::new(), String::new());
    let mut first_token_ms = 0.0;
    let mut decode_start = now_ms();
    let mut stop_reason = StopReason::MaxTokens;
    while token_ids.len() < params.max_tokens {
        let next = sampler.sample(&logits, &history);
        token_ids.push(next);
        history.push(next);
        if token_ids.len() == 1 {
            first_token_ms = now_ms() - start;
            decode_start = now_ms();
        }
        if tokenizer.eos_ids.contains(&next) {
            stop_reason = StopReason::Eos;
            break;
        }
        let piece = decoder.push(tokenizer, next)?;
        let outcome = stops.push(&piece);
        text.push_str(&outcome.emit);
        let event = TokenEvent { token_id: next, text: &outcome.emit, index: token_ids.len() - 1, elapsed_ms: now_ms() - start };
        if outcome.stopped {
            stop_reason = StopReason::StopSequence;
            // Generation ends here whatever the callback says; it still sees the last text.
            let _ = on_token(&event);
            break;
        }
        if on_token(&event).is_break() {
            stop_reason = StopReason::Cancelled;
            break;
        }
        if token_ids.len() == params.max_tokens {
            break;
        }
        if !state.fits(1) {
            stop_reason = StopReason::ContextFull;
            break;
        }
        logits = model.forward(state, &[next], false)?;
    }
    if stop_reason != StopReason::StopSequence {
        let tail = decoder.finish(tokenizer)?;
        let outcome = stops.push(&tail);
        text.push_str(&outcome.emit);
        if !outcome.stopped {
            text.push_str(&stops.finish());
        }
    }

    let decode_ms = now_ms() - decode_start;
    // The first token comes from the prefill's logits; the decode rate counts the steps after.
    let decoded = token_ids.len().saturating_sub(1);
    Ok(Generation {
        prompt_token_ids: prompt_ids.to_vec(),
        token_ids,
        text,
        stop_reason,
        timings: Timings {
            prefill_tokens_per_s: rate(prompt_ids.len(), prefill_ms),
            decode_tokens_per_s: rate(decoded, decode_ms),
            time_to_first_token_ms: first_token_ms,
            prefill_ms,
            decode_ms,
        },
    })
}

fn rate(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1000.0 / ms
    } else {
        0.0
    }
}
