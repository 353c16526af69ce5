//! Next-token sampling: logits `[vocab]` + recent token history → one token id.
//!
//! Order of operations (the Hugging Face `transformers` logits-processor order; llama.cpp
//! agrees on the parts that matter, see below):
//!
//! 1. **Penalties** on the raw logits, over the last `penalty_last_n` tokens of the history:
//!    repetition (CTRL-style: a positive logit is divided by the penalty, a negative one
//!    multiplied, once per distinct token), then presence (`− presence_penalty` once per
//!    distinct token) and frequency (`− frequency_penalty × count`), as llama.cpp's
//!    `penalties` sampler. *Why first:* penalties are defined on logits, not on probabilities;
//!    applied after temperature, the same penalty would bite harder or softer depending on the
//!    temperature, and greedy decoding (which has no temperature) must see them too.
//! 2. **Temperature 0 → greedy:** argmax of the penalised logits, ties to the lowest id, no
//!    randomness consumed. `top_k = 1` takes the same path at any temperature.
//! 3. **Temperature** scales the logits. It is folded into the softmax as
//!    `exp((l − max) / T)`: dividing first would overflow to `inf` for large logits at small
//!    `T`, and subtracting the maximum keeps the exponent `<= 0`.
//! 4. **Top-k** keeps the `k` largest logits with `select_nth_unstable` (O(vocab), no full
//!    sort). Scaling by `1/T` does not change the order, so doing it before or after
//!    temperature is the same.
//! 5. **Softmax** over the survivors (sums in `f64`: 49k terms of very different size).
//! 6. **Top-p** (nucleus): the smallest highest-probability set whose mass is `>= top_p`,
//!    never empty. It sorts only as far as it must: growing chunks are selected off the top
//!    until the nucleus is complete, so a peaked distribution sorts a few dozen entries, not
//!    the whole vocabulary. *Why after temperature:* that is HF's order, so the nucleus is
//!    that of the distribution actually sampled. (llama.cpp's default chain applies
//!    temperature last, so at `T != 1` its nucleus is slightly different.)
//! 7. **Min-p** (off by default): drops tokens whose probability is below `min_p` × that of
//!    the most likely one (HF's `MinPLogitsWarper`, also applied after temperature).
//! 8. **Draw** one token from what is left, with the sampler's seeded [`Pcg32`].
//!
//! Determinism: the RNG is PCG32 in plain wrapping `u64` arithmetic, so a seed gives the same
//! stream of numbers natively and on wasm32. Without a seed the sampler starts from
//! [`DEFAULT_SEED`] (never OS randomness: wasm32-unknown-unknown has none without JS glue, and
//! a fixed default makes runs reproducible); callers that want variety pass their own seed.
//! The probabilities go through `f32::exp`, whose last bit may differ between the platform's
//! libm and the one compiled into wasm, so a draw falling exactly on a boundary could in
//! principle differ across targets; logits computed on different GPUs differ far more anyway.
//!
//! Non-finite logits: `NaN` is treated as `-inf` (never chosen), `+inf` as `f32::MAX`.

use serde::{Deserialize, Serialize};

use crate::WorkerError;

/// The seed used when [`SamplerConfig::seed`] is `None` (PCG's reference default state).
pub const DEFAULT_SEED: u64 = 0x853c_49e6_748f_ea9b;

/// Sampling parameters, as the host sends them (camelCase in JSON: `temperature`, `topK`,
/// `topP`, `minP`, `repetitionPenalty`, `presencePenalty`, `frequencyPenalty`,
/// `penaltyLastN`, `seed`). Every field is optional in JSON; the defaults switch everything off
/// and decode greedily.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SamplerConfig {
    /// Softmax temperature, `>= 0`; `0` = greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; `0` = off.
    pub top_k: usize,
    /// Nucleus sampling mass, in `(0, 1]`; `1` = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one, in `[0, 1]`; `0` = off.
    pub min_p: f32,
    /// CTRL repetition penalty, `> 0`; `1` = off, `> 1` discourages repeats.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every distinct token in the window; `0` = off.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the window; `0` = off.
    pub frequency_penalty: f32,
    /// How many of the most recent history tokens the penalties look at; `0` = none.
    pub penalty_last_n: usize,
    /// RNG seed; `None` = [`DEFAULT_SEED`]. (JS numbers are exact only up to 2^53.)
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
        }
    }
}

impl SamplerConfig {
    /// Checks every parameter against its range; the error names the parameter, the valid
    /// range and the value received.
    pub fn validate(&self) -> Result<(), WorkerError> {
        fn invalid(name: &str, range: &str, value: f32) -> WorkerError {
            WorkerError::InvalidParameter { reason: format!("sampling parameter {name} must be {range}, got {value}") }
        }
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid("temperature", "a finite number >= 0 (0 = greedy)", t));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("topP", "in (0, 1] (1 = off)", p));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(invalid("minP", "in [0, 1] (0 = off)", m));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid("repetitionPenalty", "a finite number > 0 (1 = off)", r));
        }
        if !self.presence_penalty.is_finite() {
            return Err(invalid("presencePenalty", "a finite number (0 = off)", self.presence_penalty));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(invalid("frequencyPenalty", "a finite number (0 = off)", self.frequency_penalty));
        }
        Ok(())
    }

    /// Plain greedy decoding: the argmax of the raw logits, no penalties. A backend may then
    /// pick the token itself (the GPU reads back one id instead of the vocabulary's logits).
    pub fn is_plain_greedy(&self) -> bool {
        (self.temperature == 0.0 || self.top_k == 1) && !self.penalties_active()
    }

    /// What this sampler needs from a forward pass: the greedy token, the top-k candidates
    /// (top-k sampling without penalties: everything after top-k looks only at the k best), or
    /// the whole vocabulary's logits. A backend may return more than asked (logits always do).
    pub fn wants(&self) -> Want {
        if self.is_plain_greedy() {
            Want::Token
        } else if self.top_k > 0 && !self.penalties_active() {
            Want::TopK(self.top_k)
        } else {
            Want::Logits
        }
    }

    fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }
}

/// What a forward pass must hand the sampler ([`SamplerConfig::wants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The greedy token (a GPU picks it: 8 bytes read back).
    Token,
    /// The `k` largest logits with their ids, best first, ties to the lower id
    /// ([`Sampler::sample_top_k`]).
    TopK(usize),
    /// The last token's logits over the vocabulary ([`Sampler::sample`]).
    Logits,
}

/// PCG32 (PCG-XSH-RR, 64-bit state, 32-bit output; O'Neill 2014, <https://www.pcg-random.org>).
/// Small, fast, statistically good, and pure integer arithmetic, so identical on every target.
#[derive(Debug, Clone)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

impl Pcg32 {
    const MULTIPLIER: u64 = 6_364_136_223_846_793_005;
    /// The stream selector for [`Pcg32::from_seed`] (any constant works; this is the
    /// reference implementation's default increment, halved).
    const DEFAULT_STREAM: u64 = 0xda3e_39cb_94b9_5bdb >> 1;

    /// The reference `pcg32_srandom_r(initstate, initseq)`.
    pub fn new(initstate: u64, initseq: u64) -> Self {
        let mut rng = Pcg32 { state: 0, inc: (initseq << 1) | 1 };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(initstate);
        rng.next_u32();
        rng
    }

    pub fn from_seed(seed: u64) -> Self {
        Pcg32::new(seed, Self::DEFAULT_STREAM)
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in `[0, 1)`; exact in `f64` (32 random bits).
    pub fn next_f64(&mut self) -> f64 {
        f64::from(self.next_u32()) * (1.0 / 4_294_967_296.0)
    }
}

/// A token still in the running, with its (penalised) logit and, after the softmax, its
/// unnormalised probability.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    prob: f32,
}

/// Descending logit, ties to the lower id: a total order, so every selection and sort below
/// has one deterministic outcome whatever the algorithm.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// `NaN` can never win (treated as `-inf`); `+inf` becomes the largest finite value so that
/// `l − max` stays finite.
fn sanitize(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit.min(f32::MAX)
    }
}

/// Argmax, ties to the lowest id; `NaN` never wins. `0` for an empty or all-`NaN` slice.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        // Strict `>`: an equal later value does not replace the earlier (lower) id.
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Applies repetition, presence and frequency penalties in place (`logits: [vocab]`) for the
/// last `penalty_last_n` tokens of `history`. `window` is scratch space. Ids outside the
/// vocabulary are ignored.
fn apply_penalties(logits: &mut [f32], history: &[u32], config: &SamplerConfig, window: &mut Vec<u32>) {
    let start = history.len().saturating_sub(config.penalty_last_n);
    window.clear();
    window.extend_from_slice(&history[start..]);
    // Sorting the (short) window groups equal ids, which gives distinct tokens and their
    // counts without a hash map.
    window.sort_unstable();
    let mut i = 0;
    while i < window.len() {
        let id = window[i];
        let mut count = 1usize;
        while i + count < window.len() && window[i + count] == id {
            count += 1;
        }
        i += count;
        let Some(logit) = logits.get_mut(id as usize) else { continue };
        // Same branch as llama.cpp (`<= 0` multiplies); HF uses `< 0`, identical at 0.
        if *logit <= 0.0 {
            *logit *= config.repetition_penalty;
        } else {
            *logit /= config.repetition_penalty;
        }
        *logit -= count as f32 * config.frequency_penalty + config.presence_penalty;
    }
}

/// Sorts `candidates` from the top just far enough to find the nucleus and returns its length:
/// the smallest `n >= 1` with the `n` most likely candidates holding `>= top_p` of `total`.
fn nucleus_len(candidates: &mut [Candidate], total: f64, top_p: f32) -> usize {
    let target = f64::from(top_p) * total;
    let n = candidates.len();
    let mut sorted = 0;
    let mut chunk = 64;
    let mut cumulative = 0.0f64;
    while sorted < n {
        let end = (sorted + chunk).min(n);
        let rest = &mut candidates[sorted..];
        if end < n {
            rest.select_nth_unstable_by(end - sorted - 1, by_logit_desc);
        }
        rest[..end - sorted].sort_unstable_by(by_logit_desc);
        for (i, c) in candidates[sorted..end].iter().enumerate() {
            cumulative += f64::from(c.prob);
            if cumulative >= target {
                return sorted + i + 1;
            }
        }
        sorted = end;
        chunk *= 4;
    }
    // Rounding kept the sum just under the target: everything is in the nucleus.
    n
}

/// Turns logits into token ids under one [`SamplerConfig`], holding the RNG and the scratch
/// buffers so a generation loop allocates nothing per token after the first.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Pcg32,
    /// Penalised logits `[vocab]`.
    work: Vec<f32>,
    /// Candidates `[<= vocab]`.
    candidates: Vec<Candidate>,
    /// Penalty window `[<= penalty_last_n]`.
    window: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self, WorkerError> {
        config.validate()?;
        let rng = Pcg32::from_seed(config.seed.unwrap_or(DEFAULT_SEED));
        Ok(Sampler { config, rng, work: Vec::new(), candidates: Vec::new(), window: Vec::new() })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks the next token. `logits: [vocab]`; `history`: the tokens so far (prompt and
    /// generated, oldest first), of which the penalties see the last `penalty_last_n`.
    /// Returns `0` for empty logits (there is nothing to choose from).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let config = &self.config;
        let logits: &[f32] = if config.penalties_active() {
            self.work.clear();
            self.work.extend_from_slice(logits);
            apply_penalties(&mut self.work, history, config, &mut self.window);
            &self.work
        } else {
            logits
        };

        if config.temperature == 0.0 || config.top_k == 1 {
            return argmax(logits);
        }

        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| Candidate { id: i as u32, logit: sanitize(l), prob: 0.0 }));
        if candidates.is_empty() {
            return 0;
        }

        // Top-k: partition so the k best come first, drop the rest, and put them in order —
        // the order a backend's top-k arrives in (`sample_top_k`), so both draw the same token.
        if config.top_k > 0 {
            if config.top_k < candidates.len() {
                candidates.select_nth_unstable_by(config.top_k - 1, by_logit_desc);
                candidates.truncate(config.top_k);
            }
            candidates.sort_unstable_by(by_logit_desc);
        }
        self.draw()
    }

    /// Picks the next token from a backend's top-k (`top`: the `k` largest logits with their
    /// ids, best first, ties to the lower id — [`Want::TopK`]). The same token as
    /// [`Sampler::sample`] on the logits they came from, for a config whose
    /// [`SamplerConfig::wants`] is `TopK`.
    pub fn sample_top_k(&mut self, top: &[(u32, f32)]) -> u32 {
        let k = self.config.top_k.max(1);
        self.candidates.clear();
        self.candidates.extend(top.iter().take(k).map(|&(id, logit)| Candidate { id, logit: sanitize(logit), prob: 0.0 }));
        if self.candidates.is_empty() {
            return 0;
        }
        self.draw()
    }

    /// Softmax at the temperature over `self.candidates` (non-empty), then top-p, min-p and the
    /// draw.
    fn draw(&mut self) -> u32 {
        let config = &self.config;
        let candidates = &mut self.candidates;
        // Softmax (unnormalised: draws scale by the total instead of dividing every entry).
        let max = candidates.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every logit is -inf or NaN: no distribution; fall back to the lowest id.
            return candidates.iter().map(|c| c.id).min().unwrap_or(0);
        }
        let inv_t = 1.0 / config.temperature;
        let mut total = 0.0f64;
        for c in candidates.iter_mut() {
            c.prob = ((c.logit - max) * inv_t).exp();
            total += f64::from(c.prob);
        }

        if config.top_p < 1.0 {
            let keep = nucleus_len(candidates, total, config.top_p);
            candidates.truncate(keep);
            total = candidates.iter().map(|c| f64::from(c.prob)).sum();
        }

        if config.min_p > 0.0 {
            // The most likely candidate has prob exp(0) = 1, so the threshold is min_p itself
            // (and that candidate always survives, since min_p <= 1).
            let threshold = config.min_p;
            candidates.retain(|c| c.prob >= threshold);
            total = candidates.iter().map(|c| f64::from(c.prob)).sum();
        }

        let target = self.rng.next_f64() * total;
        let mut cumulative = 0.0f64;
        let mut last_possible = None;
        for c in candidates.iter() {
            if c.prob > 0.0 {
                cumulative += f64::from(c.prob);
                last_possible = Some(c.id);
                if target < cumulative {
                    return c.id;
                }
            }
        }
        // Rounding left the target at or just past the sum: the last token that could be drawn
        // (or, if none had a probability above 0, the most likely).
        last_possible.unwrap_or_else(|| candidates.iter().min_by(|a, b| by_logit_desc(a, b)).map_or(0, |c| c.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(config: SamplerConfig) -> Sampler {
        Sampler::new(config).expect("valid test config")
    }

    fn draws(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
        (0..n).map(|_| s.sample(logits, &[])).collect()
    }

    /// A fixed, bumpy 1000-entry logit vector with a unique maximum at id 617.
    fn bumpy_logits() -> Vec<f32> {
        let mut rng = Pcg32::from_seed(7);
        let mut v: Vec<f32> = (0..1000).map(|_| (rng.next_f64() as f32) * 8.0 - 4.0).collect();
        v[617] = 5.0;
        v
    }

    /// A backend's top-k (what the GPU's top-k kernel returns): the k best, best first.
    fn top_k_of(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        order.into_iter().take(k).map(|id| (id, logits[id as usize])).collect()
    }

    #[test]
    fn a_backends_top_k_draws_the_tokens_the_logits_draw() {
        let mut logits = bumpy_logits();
        // Ties across the cut and at the top.
        logits[3] = logits[617];
        logits[10] = 2.5;
        logits[11] = 2.5;
        for (top_k, top_p, min_p, temperature) in [(40, 1.0, 0.0, 0.8), (5, 0.9, 0.0, 1.3), (128, 0.5, 0.05, 0.7), (2, 1.0, 0.0, 2.0), (1000, 0.95, 0.0, 1.0)] {
            let config = SamplerConfig { temperature, top_k, top_p, min_p, seed: Some(11), ..SamplerConfig::default() };
            assert_eq!(config.wants(), Want::TopK(top_k));
            let (mut full, mut top) = (sampler(config.clone()), sampler(config));
            let candidates = top_k_of(&logits, top_k);
            let a: Vec<u32> = (0..200).map(|_| full.sample(&logits, &[])).collect();
            let b: Vec<u32> = (0..200).map(|_| top.sample_top_k(&candidates)).collect();
            assert_eq!(a, b, "top_k {top_k}, top_p {top_p}, min_p {min_p}, T {temperature}");
            assert!(a.iter().any(|&t| t != a[0]), "the draws vary (top_k {top_k})");
        }
    }

    #[test]
    fn what_a_sampler_asks_of_the_backend() {
        let config = |temperature, top_k, repetition_penalty| SamplerConfig { temperature, top_k, repetition_penalty, ..SamplerConfig::default() };
        assert_eq!(config(0.0, 0, 1.0).wants(), Want::Token);
        assert_eq!(config(0.8, 1, 1.0).wants(), Want::Token);
        assert_eq!(config(0.8, 40, 1.0).wants(), Want::TopK(40));
        // Penalties change logits the top-k never saw; no top-k means the whole vocabulary.
        assert_eq!(config(0.8, 40, 1.2).wants(), Want::Logits);
        assert_eq!(config(0.8, 0, 1.0).wants(), Want::Logits);
        assert_eq!(config(0.0, 0, 1.2).wants(), Want::Logits);
    }

    #[test]
    fn pcg32_matches_reference_vector() {
        // pcg32-demo from the reference C implementation: srandom(42, 54).
        let mut rng = Pcg32::new(42, 54);
        let got: Vec<u32> = (0..6).map(|_| rng.next_u32()).collect();
        assert_eq!(got, [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]);
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = sampler(SamplerConfig::default());
        assert_eq!(s.sample(&bumpy_logits(), &[]), 617);
        assert_eq!(s.sample(&[1.0, 3.0, -2.0, 3.0], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, f32::NAN], &[]), 1);
        assert_eq!(s.sample(&[], &[]), 0);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different() {
        let logits = vec![0.0f32; 1000];
        let config = |seed| SamplerConfig { temperature: 1.0, seed: Some(seed), ..Default::default() };
        let a = draws(&mut sampler(config(1)), &logits, 32);
        let b = draws(&mut sampler(config(1)), &logits, 32);
        let c = draws(&mut sampler(config(2)), &logits, 32);
        assert_eq!(a, b);
        // 32 uniform draws over 1000 tokens: equal sequences have probability 1e-96.
        assert_ne!(a, c);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let logits = bumpy_logits();
        for t in [0.1f32, 1.0, 5.0, 100.0] {
            let mut s = sampler(SamplerConfig { temperature: t, top_k: 1, seed: Some(3), ..Default::default() });
            assert!(draws(&mut s, &logits, 50).iter().all(|&id| id == 617), "t = {t}");
        }
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let logits = bumpy_logits();
        let mut s = sampler(SamplerConfig { temperature: 2.0, top_p: 1e-6, seed: Some(3), ..Default::default() });
        assert!(draws(&mut s, &logits, 50).iter().all(|&id| id == 617));
        // Ties resolve to the lowest id here too.
        assert!(draws(&mut s, &[0.0, 1.0, 1.0], 20).iter().all(|&id| id == 1));
    }

    #[test]
    fn two_token_distribution_matches_softmax() {
        // softmax([0, ln 3]) = [0.25, 0.75]. Over 4000 draws the standard error is 0.0068, so
        // ±0.03 is a 4.4-sigma band (and the seed is fixed, so this cannot flake).
        let mut s = sampler(SamplerConfig { temperature: 1.0, seed: Some(12345), ..Default::default() });
        let ones = draws(&mut s, &[0.0, 3f32.ln()], 4000).iter().filter(|&&id| id == 1).count();
        let frac = ones as f64 / 4000.0;
        assert!((frac - 0.75).abs() <= 0.03, "fraction of token 1: {frac}");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        // Probabilities ∝ [8, 4, 2, 1, 1] / 16 at T = 1.
        let logits: Vec<f32> = [8.0f32, 4.0, 2.0, 1.0, 1.0].iter().map(|p| p.ln()).collect();
        let mut k2 = sampler(SamplerConfig { temperature: 1.0, top_k: 2, seed: Some(9), ..Default::default() });
        let got = draws(&mut k2, &logits, 500);
        assert!(got.iter().all(|&id| id < 2) && got.contains(&0) && got.contains(&1));
        // top_p = 0.75 needs 8/16 + 4/16 exactly: tokens 0 and 1.
        let mut p = sampler(SamplerConfig { temperature: 1.0, top_p: 0.75, seed: Some(9), ..Default::default() });
        let got = draws(&mut p, &logits, 500);
        assert!(got.iter().all(|&id| id < 2) && got.contains(&0) && got.contains(&1));
        // min_p = 0.3: keep p >= 0.3 × 8/16, i.e. tokens 0 and 1.
        let mut m = sampler(SamplerConfig { temperature: 1.0, min_p: 0.3, seed: Some(9), ..Default::default() });
        let got = draws(&mut m, &logits, 500);
        assert!(got.iter().all(|&id| id < 2) && got.contains(&0) && got.contains(&1));
    }

    #[test]
    fn nucleus_over_a_large_vocabulary_spans_several_chunks() {
        // Flat logits: top_p = 0.5 of 49152 needs exactly half, past several growing chunks.
        let logits = vec![0.0f32; 49_152];
        let mut s = sampler(SamplerConfig { temperature: 1.0, top_p: 0.5, seed: Some(1), ..Default::default() });
        let got = draws(&mut s, &logits, 300);
        // Ties sort by id, so the nucleus is ids 0..24576.
        assert!(got.iter().all(|&id| id < 24_576));
        assert!(got.iter().any(|&id| id > 20_000));
    }

    #[test]
    fn repetition_penalty_changes_the_greedy_choice() {
        let logits = [2.0f32, 1.8, -0.5];
        let mut plain = sampler(SamplerConfig::default());
        assert_eq!(plain.sample(&logits, &[0, 0, 0]), 0);
        // 2.0 / 1.3 = 1.54 < 1.8: token 1 wins once token 0 has been seen.
        let mut s = sampler(SamplerConfig { repetition_penalty: 1.3, ..Default::default() });
        assert_eq!(s.sample(&logits, &[0, 0, 0]), 1);
        // Outside the window (last 2 tokens are 2, 2), token 0 is not penalised.
        let mut w = sampler(SamplerConfig { repetition_penalty: 1.3, penalty_last_n: 2, ..Default::default() });
        assert_eq!(w.sample(&logits, &[0, 2, 2]), 0);
    }

    #[test]
    fn penalty_arithmetic() {
        let config = SamplerConfig {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        let mut logits = vec![4.0f32, -1.0, 3.0, 0.0];
        let mut window = Vec::new();
        // Token 0 seen 3×, token 1 once, token 3 twice, id 99 is out of range (ignored).
        apply_penalties(&mut logits, &[0, 1, 0, 3, 99, 0, 3], &config, &mut window);
        // 4 / 2 − 3×0.25 − 0.5 = 0.75
        assert_eq!(logits[0], 0.75);
        // −1 × 2 − 1×0.25 − 0.5 = −2.75
        assert_eq!(logits[1], -2.75);
        // unseen: unchanged
        assert_eq!(logits[2], 3.0);
        // 0 × 2 − 2×0.25 − 0.5 = −1.0
        assert_eq!(logits[3], -1.0);

        // Presence and frequency alone (repetition off).
        let config = SamplerConfig { presence_penalty: 1.0, frequency_penalty: 0.5, ..Default::default() };
        let mut logits = vec![2.0f32, 2.0];
        apply_penalties(&mut logits, &[1, 1, 1, 1], &config, &mut window);
        assert_eq!(logits, [2.0, 2.0 - 4.0 * 0.5 - 1.0]);
    }

    #[test]
    fn invalid_configs_name_the_parameter() {
        let cases: [(SamplerConfig, &str); 8] = [
            (SamplerConfig { temperature: -0.1, ..Default::default() }, "temperature"),
            (SamplerConfig { temperature: f32::NAN, ..Default::default() }, "temperature"),
            (SamplerConfig { top_p: 0.0, ..Default::default() }, "topP"),
            (SamplerConfig { top_p: 1.5, ..Default::default() }, "topP"),
            (SamplerConfig { min_p: -0.5, ..Default::default() }, "minP"),
            (SamplerConfig { repetition_penalty: 0.0, ..Default::default() }, "repetitionPenalty"),
            (SamplerConfig { presence_penalty: f32::NAN, ..Default::default() }, "presencePenalty"),
            (SamplerConfig { frequency_penalty: f32::INFINITY, ..Default::default() }, "frequencyPenalty"),
        ];
        for (config, name) in cases {
            match Sampler::new(config) {
                Err(WorkerError::InvalidParameter { reason }) => {
                    assert!(reason.contains(name), "{reason:?} should name {name}");
                }
                other => panic!("expected an InvalidParameter error naming {name}, got {other:?}"),
            }
        }
    }

    #[test]
    fn json_round_trip_uses_camel_case() {
        let config = SamplerConfig {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            repetition_penalty: 1.1,
            presence_penalty: 0.2,
            frequency_penalty: 0.3,
            penalty_last_n: 128,
            seed: Some(42),
        };
        let json = serde_json::to_string(&config).expect("serialises");
        for key in ["temperature", "topK", "topP", "minP", "repetitionPenalty", "presencePenalty", "frequencyPenalty", "penaltyLastN", "seed"] {
            assert!(json.contains(&format!("\"{key}\"")), "{json} lacks {key}");
        }
        let back: SamplerConfig = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, config);
        // Missing fields take their defaults.
        let partial: SamplerConfig = serde_json::from_str(r#"{"temperature":0.8,"topK":20}"#).expect("parses");
        assert_eq!(partial, SamplerConfig { temperature: 0.8, top_k: 20, ..Default::default() });
    }
}
