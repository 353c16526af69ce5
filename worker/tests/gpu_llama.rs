//! SmolLM2-135M (Q4_1 GGUF: Q4_1 projections, Q8_0 tied embedding / LM head, F32 norms) on the
//! GPU backend against the CPU backend and the fixture: the first 8 greedy tokens exactly, and
//! first-step logits within 5e-2 of the CPU's over the whole vocabulary. Also prints the decode
//! rate (lavapipe natively). Skips loudly without an adapter (see gpu_kernels.rs).
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

mod common;

use common::{fixture, ids, smollm2_gguf};
use worker::formats::gguf::GgufFile;
use worker::futures::block_on;
use worker::gpu::llama::Output;
use worker::gpu::GpuLlama;
use worker::models::llama::Llama;
use worker::sampler::Want;
use worker::tensor::{Activations, SharedBytes};

fn cpu_model() -> Llama {
    let bytes = std::fs::read(smollm2_gguf()).expect("read the GGUF");
    let file = GgufFile::parse(&bytes, "smollm2").expect("parse");
    let mut model = Llama::from_gguf(&file, SharedBytes::from_vec(bytes)).expect("load");
    // The GPU keeps activations in f32: compare with the CPU's f32 path.
    model.activations = Activations::F32;
    model
}

#[test]
fn smollm2_on_the_gpu_matches_the_cpu_and_the_fixture() {
    let Some(ctx) = common::gpu::gpu() else { return };
    let model = cpu_model();
    let mut gpu = block_on(GpuLlama::load(ctx, &model, 64)).expect("GPU load");
    eprintln!("GPU load: {:?}", gpu.report);

    let f = fixture("smollm2_once_upon.json");
    let prompt = ids(&f["prompt_ids"]);
    let cpu_logits = model.forward(&mut model.new_state(64), &prompt, false).unwrap();
    let gpu_logits = block_on(gpu.forward_logits(&prompt)).unwrap();
    let (at, worst) = cpu_logits.iter().zip(&gpu_logits).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0f32), |w, (i, d)| if d > w.1 || d.is_nan() { (i, d) } else { w });
    eprintln!("first-step logits: worst |Δ| gpu vs cpu = {worst:.2e} at token {at} (cpu {}, gpu {})", cpu_logits[at], gpu_logits[at]);
    assert!(worst <= 5e-2, "token {at}: gpu {} vs cpu {}", gpu_logits[at], cpu_logits[at]);

    // Greedy decoding with argmax on the GPU (8 bytes read back per step).
    gpu.reset();
    let want = ids(&f["greedy_ids"]);
    let mut got = vec![];
    let Output::Argmax { mut token, .. } = block_on(gpu.forward(&prompt, Want::Token)).unwrap() else { panic!("asked for argmax") };
    let start = std::time::Instant::now();
    for _ in 0..8 {
        got.push(token);
        let Output::Argmax { token: next, .. } = block_on(gpu.forward(&[token], Want::Token)).unwrap() else { panic!("asked for argmax") };
        token = next;
    }
    let rate = 8.0 / start.elapsed().as_secs_f64();
    eprintln!("GPU decode: {rate:.2} tokens/s ({})", gpu.report.adapter);
    assert_eq!(got, want[..8], "first 8 greedy tokens");
}

#[test]
fn bad_input_is_refused_by_name_and_changes_nothing() {
    let Some(ctx) = common::gpu::gpu() else { return };
    let model = cpu_model();
    let mut gpu = block_on(GpuLlama::load(ctx, &model, 8)).expect("GPU load");
    assert_eq!(block_on(gpu.forward(&[49_152], Want::Token)).unwrap_err().name(), "TokenizerError");
    assert_eq!(block_on(gpu.forward(&[1; 9], Want::Token)).unwrap_err().name(), "ContextOverflowError");
    assert_eq!(block_on(gpu.forward(&[], Want::Token)).unwrap_err().name(), "ProtocolError");
    assert!(gpu.is_empty(), "refused calls leave the cache empty");
}

/// Top-k sampling picks its candidates on the GPU (8 bytes each read back, not the logits):
/// the same tokens as sampling the same GPU's full logits on the CPU, seed for seed.
#[test]
fn top_k_sampling_on_the_gpu_draws_what_the_logits_draw() {
    use std::ops::ControlFlow;
    use worker::futures::LocalBoxFuture;
    use worker::generate::{generate_on, GenerateParams, Next, Sequence};
    use worker::sampler::SamplerConfig;

    /// The GPU model, always asked for the logits.
    struct LogitsOnly<'a>(&'a mut GpuLlama);
    impl Sequence for LogitsOnly<'_> {
        fn forward_next<'s>(&'s mut self, tokens: &'s [u32], _want: Want) -> LocalBoxFuture<'s, Result<Next, worker::WorkerError>> {
            self.0.forward_next(tokens, Want::Logits)
        }
        fn fits(&self, tokens: usize) -> bool {
            self.0.fits(tokens)
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn context(&self) -> usize {
            self.0.context()
        }
    }

    let Some(ctx) = common::gpu::gpu() else { return };
    let text = worker::loader::load_text_model(&smollm2_gguf()).expect("load");
    let mut gpu = block_on(GpuLlama::load(ctx, &cpu_model(), 64)).expect("GPU load");
    let prompt = text.encode_prompt("Once upon a time", false, None).unwrap();
    let params = GenerateParams { max_tokens: 10, sampler: SamplerConfig { temperature: 0.9, top_k: 40, top_p: 0.95, seed: Some(5), ..SamplerConfig::default() }, ..GenerateParams::default() };
    assert_eq!(params.sampler.wants(), Want::TopK(40));
    let on_top_k = generate_on(&mut gpu, &text.tokenizer, &prompt, &params, |_| ControlFlow::Continue(())).unwrap();
    gpu.reset();
    let on_logits = generate_on(&mut LogitsOnly(&mut gpu), &text.tokenizer, &prompt, &params, |_| ControlFlow::Continue(())).unwrap();
    eprintln!("sampled on the GPU's top-k: {:?} {:?}", on_top_k.token_ids, on_top_k.text);
    assert_eq!(on_top_k.token_ids, on_logits.token_ids);
    assert_eq!(on_top_k.token_ids.len(), 10);
}
