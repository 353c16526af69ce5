//! Text generation: chunked prefill, then one token at a time through the sampler, with
//! streaming text, stop sequences, EOS and the timings users compare runtimes by.
//!
//! [`Generator`] does the work one step at a time (a prefill chunk, or one forward pass and
//! sample), so the browser worker can yield to its event loop between steps (pause, resume,
//! cancel). [`generate`] is the plain loop over it, with a callback per token; the callback
//! returning `ControlFlow::Break` ends generation early (cancel); the KV cache keeps
//! everything computed so far, so a caller can resume.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::futures::{block_on, LocalBoxFuture};
use crate::models::llama::{Llama, LlamaState};
use crate::sampler::{Sampler, SamplerConfig, Want};
use crate::stop::StopMatcher;
use crate::tokenizer::{TokenStreamDecoder, Tokenizer};
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

/// What a forward pass hands the sampler.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The last token's logits over the vocabulary.
    Logits(Vec<f32>),
    /// The greedy token, chosen by the backend (asked for only when sampling is plain greedy).
    Token(u32),
    /// The backend's top-k candidates `(id, logit)`, best first (asked for by top-k sampling
    /// without penalties).
    TopK(Vec<(u32, f32)>),
}

/// A model with its sequence state, as the generator drives it: the CPU's [`Llama`] +
/// [`LlamaState`], or a backend that keeps its own KV cache (the GPU's `GpuLlama`).
///
/// A forward pass is a future: the browser's GPU answers through promises, so the worker awaits
/// it; the CPU's is ready at the first poll (and the native loop runs it with [`block_on`]).
pub trait Sequence {
    /// Runs `tokens` after the cached ones and returns what the sampler `want`s: a backend may
    /// return only the greedy token ([`Next::Token`]) or the top-k ([`Next::TopK`]), or always
    /// the last token's logits.
    fn forward_next<'s>(&'s mut self, tokens: &'s [u32], want: Want) -> LocalBoxFuture<'s, Result<Next, WorkerError>>;
    /// Whether `tokens` more fit (sliding the window if there is one).
    fn fits(&self, tokens: usize) -> bool;
    /// Tokens held.
    fn len(&self) -> usize;
    /// Capacity in positions.
    fn context(&self) -> usize;
}

impl<S: Sequence + ?Sized> Sequence for &mut S {
    fn forward_next<'s>(&'s mut self, tokens: &'s [u32], want: Want) -> LocalBoxFuture<'s, Result<Next, WorkerError>> {
        (**self).forward_next(tokens, want)
    }
    fn fits(&self, tokens: usize) -> bool {
        (**self).fits(tokens)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn context(&self) -> usize {
        (**self).context()
    }
}

/// The CPU backend as a [`Sequence`].
struct CpuSequence<'a> {
    model: &'a Llama,
    state: &'a mut LlamaState,
}

impl Sequence for CpuSequence<'_> {
    fn forward_next<'s>(&'s mut self, tokens: &'s [u32], _want: Want) -> LocalBoxFuture<'s, Result<Next, WorkerError>> {
        let next = self.model.forward(self.state, tokens, false).map(Next::Logits);
        Box::pin(std::future::ready(next))
    }
    fn fits(&self, tokens: usize) -> bool {
        self.state.fits(tokens)
    }
    fn len(&self) -> usize {
        self.state.len()
    }
    fn context(&self) -> usize {
        self.state.context()
    }
}

/// [`generate`] over any [`Sequence`] (e.g. the GPU backend), blocking this thread on each step
/// (native callers; the browser worker awaits [`Generator::step`] instead).
pub fn generate_on(
    sequence: &mut dyn Sequence,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<Generation, WorkerError> {
    let mut generator = Generator::on(Box::new(sequence), tokenizer, prompt_ids, params)?;
    loop {
        match block_on(generator.step())? {
            Step::Prefilled { .. } => {}
            Step::Token(token) => {
                if on_token(&token.event()).is_break() {
                    // After a stop sequence generation has already ended; cancel changes nothing.
                    generator.cancel();
                }
            }
            Step::Done => break,
        }
    }
    generator.finish()
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
///
/// A loop over [`Generator::step`]; the callback sees every token and may stop generation.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    state: &mut LlamaState,
    prompt_ids: &[u32],
    params: &GenerateParams,
    on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<Generation, WorkerError> {
    generate_on(&mut CpuSequence { model, state }, tokenizer, prompt_ids, params, on_token)
}

/// One unit of work done by [`Generator::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A chunk of the prompt went through the model (`done` of `total` prompt tokens).
    Prefilled { done: usize, total: usize },
    /// A token was sampled (not sent for an end-of-sequence token, which only ends generation).
    Token(GeneratedToken),
    /// Generation has ended; [`Generator::finish`] gives the result.
    Done,
}

/// [`TokenEvent`], owned.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub token_id: u32,
    pub text: String,
    pub index: usize,
    /// Since the generator was created (wall clock: time between steps counts).
    pub elapsed_ms: f64,
    /// Spent in the step that made this token (forward pass + sampling).
    pub step_ms: f64,
}

impl GeneratedToken {
    pub fn event(&self) -> TokenEvent<'_> {
        TokenEvent { token_id: self.token_id, text: &self.text, index: self.index, elapsed_ms: self.elapsed_ms }
    }
}

/// Generation one step at a time: each [`Generator::step`] runs one prefill chunk or one decode
/// step (forward pass + sample), so a caller can do other work between steps — the browser
/// worker yields to its event loop there, to answer pause / resume / cancel. [`generate`] is the
/// plain loop over it; both give the same tokens.
pub struct Generator<'a> {
    sequence: Box<dyn Sequence + 'a>,
    tokenizer: &'a Tokenizer,
    prompt_ids: &'a [u32],
    params: &'a GenerateParams,
    sampler: Sampler,
    stops: StopMatcher,
    decoder: TokenStreamDecoder,
    /// Prompt tokens through the model so far.
    prefilled: usize,
    next: Next,
    history: Vec<u32>,
    token_ids: Vec<u32>,
    text: String,
    /// The last token, still to go through the model before the next sample.
    pending: Option<u32>,
    stop_reason: Option<StopReason>,
    start: f64,
    prefill_ms: f64,
    first_token_ms: f64,
    decode_start: f64,
    /// Time between steps the caller asked to leave out of the rates (pauses).
    excluded_ms: f64,
}

impl<'a> Generator<'a> {
    /// Checks the prompt against the state; computes nothing yet.
    pub fn new(model: &'a Llama, tokenizer: &'a Tokenizer, state: &'a mut LlamaState, prompt_ids: &'a [u32], params: &'a GenerateParams) -> Result<Self, WorkerError> {
        Self::after_prefix(model, tokenizer, state, prompt_ids, params, 0)
    }

    /// As [`Generator::new`] for a `state` that already holds the first `prefilled` prompt
    /// tokens (then call [`Generator::prefilled_before`]).
    pub fn after_prefix(model: &'a Llama, tokenizer: &'a Tokenizer, state: &'a mut LlamaState, prompt_ids: &'a [u32], params: &'a GenerateParams, prefilled: usize) -> Result<Self, WorkerError> {
        Self::on_after_prefix(Box::new(CpuSequence { model, state }), tokenizer, prompt_ids, params, prefilled)
    }

    /// The same over any [`Sequence`] (a backend holding its own KV cache).
    pub fn on(sequence: Box<dyn Sequence + 'a>, tokenizer: &'a Tokenizer, prompt_ids: &'a [u32], params: &'a GenerateParams) -> Result<Self, WorkerError> {
        Self::on_after_prefix(sequence, tokenizer, prompt_ids, params, 0)
    }

    fn on_after_prefix(sequence: Box<dyn Sequence + 'a>, tokenizer: &'a Tokenizer, prompt_ids: &'a [u32], params: &'a GenerateParams, prefilled: usize) -> Result<Self, WorkerError> {
        if prompt_ids.is_empty() {
            return Err(WorkerError::Tokenizer { reason: "the prompt encodes to no tokens; give it some text".into() });
        }
        if !sequence.fits(prompt_ids.len().saturating_sub(prefilled)) {
            return Err(WorkerError::ContextOverflow { tokens: sequence.len() + prompt_ids.len(), context: sequence.context() });
        }
        let start = now_ms();
        Ok(Generator {
            sequence,
            tokenizer,
            prompt_ids,
            params,
            sampler: Sampler::new(params.sampler.clone())?,
            stops: StopMatcher::new(params.stop_sequences.clone()),
            decoder: tokenizer.stream_decoder(true),
            prefilled: 0,
            next: Next::Logits(Vec::new()),
            history: prompt_ids.to_vec(),
            token_ids: Vec::new(),
            text: String::new(),
            pending: None,
            stop_reason: None,
            start,
            prefill_ms: 0.0,
            first_token_ms: 0.0,
            decode_start: start,
            excluded_ms: 0.0,
        })
    }

    /// Takes the first `tokens` prompt tokens as already through the model (the caller ran
    /// them, e.g. layer by layer while the model arrived), with `logits` their last token's,
    /// and times the generation from `start` (a [`now_ms`] reading), so the time to first
    /// token includes that work.
    pub fn prefilled_before(&mut self, tokens: usize, logits: Vec<f32>, start: f64) {
        self.prefilled = tokens.min(self.prompt_ids.len());
        self.next = Next::Logits(logits);
        self.start = start;
        if self.prefilled == self.prompt_ids.len() {
            self.prefill_ms = now_ms() - self.start;
            self.decode_start = now_ms();
        }
    }

    /// Runs one prefill chunk or one decode step.
    pub async fn step(&mut self) -> Result<Step, WorkerError> {
        if self.stop_reason.is_some() {
            return Ok(Step::Done);
        }
        let step_start = now_ms();
        let total = self.prompt_ids.len();
        if self.prefilled < total {
            let end = (self.prefilled + self.params.prefill_chunk.max(1)).min(total);
            self.next = self.sequence.forward_next(&self.prompt_ids[self.prefilled..end], self.params.sampler.wants()).await?;
            self.prefilled = end;
            if end == total {
                self.prefill_ms = now_ms() - self.start - self.excluded_ms;
                self.decode_start = now_ms();
            }
            return Ok(Step::Prefilled { done: end, total });
        }
        if self.token_ids.len() >= self.params.max_tokens {
            return Ok(self.end(StopReason::MaxTokens));
        }
        if let Some(last) = self.pending.take() {
            if !self.sequence.fits(1) {
                return Ok(self.end(StopReason::ContextFull));
            }
            self.next = self.sequence.forward_next(&[last], self.params.sampler.wants()).await?;
        }
        let next = match &self.next {
            Next::Token(id) => *id,
            Next::Logits(logits) => self.sampler.sample(logits, &self.history),
            Next::TopK(top) => self.sampler.sample_top_k(top),
        };
        self.token_ids.push(next);
        self.history.push(next);
        if self.token_ids.len() == 1 {
            self.first_token_ms = now_ms() - self.start - self.excluded_ms;
            self.decode_start = now_ms();
            self.excluded_ms = 0.0;
        }
        if self.tokenizer.eos_ids.contains(&next) {
            return Ok(self.end(StopReason::Eos));
        }
        let piece = self.decoder.push(self.tokenizer, next)?;
        let outcome = self.stops.push(&piece);
        self.text.push_str(&outcome.emit);
        if outcome.stopped {
            self.stop_reason = Some(StopReason::StopSequence);
        } else {
            self.pending = Some(next);
        }
        let now = now_ms();
        Ok(Step::Token(GeneratedToken { token_id: next, text: outcome.emit, index: self.token_ids.len() - 1, elapsed_ms: now - self.start, step_ms: now - step_start }))
    }

    /// Ends generation before the next step, with [`StopReason::Cancelled`] (unless it has
    /// already ended). The KV cache keeps what was computed.
    pub fn cancel(&mut self) {
        self.stop_reason.get_or_insert(StopReason::Cancelled);
    }

    /// Leaves `ms` (time the caller spent between steps, e.g. paused) out of the timings.
    pub fn exclude_ms(&mut self, ms: f64) {
        self.excluded_ms += ms;
    }

    /// Tokens sampled so far (including a final EOS).
    pub fn token_count(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether generation has ended (the next step is [`Step::Done`]).
    pub fn is_done(&self) -> bool {
        self.stop_reason.is_some()
    }

    fn end(&mut self, reason: StopReason) -> Step {
        self.stop_reason = Some(reason);
        Step::Done
    }

    /// The result: call after [`Step::Done`] (or [`Generator::cancel`]); any text the stream
    /// decoder still holds is flushed into it.
    pub fn finish(mut self) -> Result<Generation, WorkerError> {
        let stop_reason = self.stop_reason.unwrap_or(StopReason::Cancelled);
        if stop_reason != StopReason::StopSequence {
            let tail = self.decoder.finish(self.tokenizer)?;
            let outcome = self.stops.push(&tail);
            self.text.push_str(&outcome.emit);
            if !outcome.stopped {
                self.text.push_str(&self.stops.finish());
            }
        }
        let (decode_ms, prefill_ms) = if self.token_ids.is_empty() {
            (0.0, if self.prefilled == self.prompt_ids.len() { self.prefill_ms } else { now_ms() - self.start - self.excluded_ms })
        } else {
            (now_ms() - self.decode_start - self.excluded_ms, self.prefill_ms)
        };
        // The first token comes from the prefill's logits; the decode rate counts the steps after.
        let decoded = self.token_ids.len().saturating_sub(1);
        Ok(Generation {
            prompt_token_ids: self.prompt_ids.to_vec(),
            token_ids: self.token_ids,
            text: self.text,
            stop_reason,
            timings: Timings {
                prefill_tokens_per_s: rate(self.prefilled, prefill_ms),
                decode_tokens_per_s: rate(decoded, decode_ms),
                time_to_first_token_ms: self.first_token_ms,
                prefill_ms,
                decode_ms,
            },
        })
    }
}

fn rate(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1000.0 / ms
    } else {
        0.0
    }
}
