//! `accel` — the native command-line face of the engine (see BRIEF.md, "Public interfaces").
//!
//! ```text
//! accel generate --model M --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
//!                [--top-p P] [--seed S] [--backend cpu|gpu] [--chat] [--json] [--threads N]
//!                [--activations int16|f32] [--context N] [--sliding-window [--attention-sinks 4]]
//! accel logits   --model M --prompt TEXT [--top N] [--chat] [--backend cpu|gpu] --json
//! accel embed    --model M [--json] TEXT...
//! accel pack     INPUT --out DIR [--precision P] [--precision-config FILE] [--shard-mb N] [--name NAME]
//! accel eval     --model M --text FILE [--json] [--reference R]
//! accel bench    --model M [--prompt-tokens 128] [--gen-tokens 64] [--reps 3] [--threads N]
//!                (an embedding model: [--batch 16] [--reps 3] → sentences/s)
//!                [--activations int16,f32] [--backend cpu|gpu [--profile]] [--json]
//! ```
//! Errors print one line, `error: <Name>: <message>`, and exit 1 (2 for usage errors).

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::run(std::env::args().skip(1).collect()));
}

/// `cargo test --target wasm32-unknown-unknown` also builds binaries; the CLI is native-only.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::path::PathBuf;

    use serde_json::json;
    #[cfg(feature = "gpu")]
    use worker::futures::block_on;
    use worker::generate::{generate, GenerateParams};
    use worker::eval::{embedding_agreement, perplexity};
    use worker::loader::{is_embedding_model, load_embedder, load_text_model, pack_path, read_file, TextModel, DEFAULT_SYSTEM_PROMPT};
    use worker::pack::Precision;
    use worker::tensor::Activations;
    use worker::WorkerError;

    const USAGE: &str = "\
accel — ipfs-accelerate-web's native engine

USAGE:
    accel generate --model M --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
                   [--top-p P] [--seed S] [--backend cpu|gpu] [--chat] [--json] [--threads N]
                   [--activations int16|f32] [--context N] [--sliding-window [--attention-sinks N]]
    accel logits   --model M --prompt TEXT [--top N] [--chat] [--json] [--activations int16|f32]
                   [--backend cpu|gpu]
    accel embed    --model M [--json] TEXT...
    accel bench    --model M [--prompt-tokens N] [--gen-tokens N] [--reps N] [--threads N]
                   [--activations int16,f32] [--backend cpu|gpu [--profile]] [--json]
    accel pack     INPUT --out DIR [--precision keep|f32|f16|q8|q4|q3|q2|mixed]
                   [--precision-config FILE] [--shard-mb 32] [--name NAME] [--json]
    accel eval     --model M --text FILE [--json] [--activations int16|f32] [--reference R]

M is a GGUF file, a Hugging Face directory (config.json + model.safetensors + tokenizer.json)
or a packed directory (manifest.json + shards/). `eval` reports perplexity for a text model
({\"tokens\": N, \"perplexity\": P}), or for an embedding model the mean cosine of its embeddings
of FILE's lines to those of --reference R.

--activations int16 (default): activations quantized to 16 bits per block for exact integer
    products with Q4_0/Q4_1/Q8_0 weights (logits within ~1e-3 of f32); f32: the exact path.
--backend gpu: wgpu (Vulkan natively; needs a build with --features gpu), f32 activations,
    greedy tokens chosen on the GPU.
--context N (default 2048): KV-cache positions. --sliding-window: when the cache is full, drop
    the oldest tokens after the first --attention-sinks N (default 4) instead of stopping.
";

    /// A usage error (exit 2) or an engine error (exit 1).
    enum Failure {
        Usage(String),
        Engine(WorkerError),
    }

    impl From<WorkerError> for Failure {
        fn from(e: WorkerError) -> Self {
            Failure::Engine(e)
        }
    }

    pub fn run(args: Vec<String>) -> i32 {
        let Some(command) = args.first().cloned() else {
            print!("{USAGE}");
            return 0;
        };
        let outcome = match command.as_str() {
            "help" | "--help" | "-h" => {
                print!("{USAGE}");
                return 0;
            }
            "--version" | "-V" => {
                println!("accel {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            _ => Args::parse(&args[1..]).and_then(|a| match command.as_str() {
                "generate" => cmd_generate(&a),
                "logits" => cmd_logits(&a),
                "embed" => cmd_embed(&a),
                "bench" => cmd_bench(&a),
                "pack" => cmd_pack(&a),
                "eval" => cmd_eval(&a),
                other => Err(Failure::Usage(format!("`{other}` is not an accel command; run `accel help`"))),
            }),
        };
        match outcome {
            Ok(()) => 0,
            Err(Failure::Usage(msg)) => {
                eprintln!("error: UsageError: {msg}");
                2
            }
            Err(Failure::Engine(e)) => {
                eprintln!("error: {}: {e}", e.name());
                1
            }
        }
    }

    /// `--flag value` options, boolean `--flags`, and positional words.
    struct Args {
        options: Vec<(String, String)>,
        flags: Vec<String>,
        positional: Vec<String>,
    }

    const BOOLEAN_FLAGS: &[&str] = &["json", "chat", "sliding-window", "profile"];

    impl Args {
        fn parse(raw: &[String]) -> Result<Args, Failure> {
            let mut args = Args { options: vec![], flags: vec![], positional: vec![] };
            let mut it = raw.iter();
            while let Some(word) = it.next() {
                match word.strip_prefix("--") {
                    Some(name) if BOOLEAN_FLAGS.contains(&name) => args.flags.push(name.to_owned()),
                    Some(name) => {
                        let value = it.next().ok_or_else(|| Failure::Usage(format!("--{name} needs a value")))?;
                        args.options.push((name.to_owned(), value.clone()));
                    }
                    None => args.positional.push(word.clone()),
                }
            }
            Ok(args)
        }

        fn get(&self, name: &str) -> Option<&str> {
            self.options.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }

        fn flag(&self, name: &str) -> bool {
            self.flags.iter().any(|f| f == name)
        }

        fn require(&self, name: &str) -> Result<&str, Failure> {
            self.get(name).ok_or_else(|| Failure::Usage(format!("--{name} is required")))
        }

        fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Failure> {
            match self.get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| Failure::Usage(format!("--{name} {v:?} is not a valid number"))),
            }
        }

        fn model(&self) -> Result<PathBuf, Failure> {
            self.require("model").map(PathBuf::from)
        }

        /// Threads for the big matrix products (default: all cores).
        fn apply_threads(&self) -> Result<(), Failure> {
            if let Some(n) = self.get("threads") {
                let n: usize = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| Failure::Usage(format!("--threads {n:?} must be a positive integer")))?;
                // Only fails if a pool already exists; the CLI builds it once, first.
                let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
            }
            Ok(())
        }

        fn check_backend(&self) -> Result<(), Failure> {
            self.backend().map(|_| ())
        }

        /// `--backend cpu|gpu|auto` (default cpu). `gpu` needs a build with `--features gpu`.
        fn backend(&self) -> Result<Backend, Failure> {
            match self.get("backend").unwrap_or("cpu") {
                "cpu" | "auto" => Ok(Backend::Cpu),
                "gpu" if cfg!(feature = "gpu") => Ok(Backend::Gpu),
                "gpu" => Err(Failure::Engine(WorkerError::BackendUnavailable {
                    backend: "gpu".into(),
                    reason: "this accel was built without the `gpu` feature; rebuild with `cargo build --release -p worker --features gpu`, or use --backend cpu".into(),
                })),
                other => Err(Failure::Usage(format!("--backend {other:?}: expected cpu or gpu"))),
            }
        }

        /// `--activations int16|f32` (`bench` takes a comma list), else `default`.
        fn activations(&self, default: &str) -> Result<Vec<Activations>, Failure> {
            let list = self.get("activations").unwrap_or(default);
            list.split(',')
                .map(|name| Activations::parse(name.trim()).ok_or_else(|| Failure::Usage(format!("--activations {name:?}: expected int16 (integer products, the default) or f32 (exact)"))))
                .collect()
        }

        fn generate_params(&self) -> Result<GenerateParams, Failure> {
            let mut p = GenerateParams { max_tokens: self.number("max-tokens", 128)?, ..GenerateParams::default() };
            p.sampler.temperature = self.number("temperature", 0.0)?;
            p.sampler.top_k = self.number("top-k", 0)?;
            p.sampler.top_p = self.number("top-p", 1.0)?;
            p.sampler.repetition_penalty = self.number("repetition-penalty", 1.0)?;
            if let Some(seed) = self.get("seed") {
                p.sampler.seed = Some(seed.parse().map_err(|_| Failure::Usage(format!("--seed {seed:?} is not an integer")))?);
            }
            if let Some(stop) = self.get("stop") {
                p.stop_sequences.push(stop.replace("\\n", "\n"));
            }
            Ok(p)
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Backend {
        Cpu,
        Gpu,
    }

    /// The model's weights, KV cache for `context` positions and every pipeline on the GPU.
    #[cfg(feature = "gpu")]
    fn load_gpu(m: &TextModel, context: usize) -> Result<worker::gpu::GpuLlama, Failure> {
        let ctx = worker::gpu::GpuContext::new()?;
        let gpu = block_on(worker::gpu::GpuLlama::load(ctx, &m.model, context))?;
        let r = &gpu.report;
        eprintln!("[gpu: {}; loaded in {:.0} ms: {} pipelines created in {:.0} ms, warm-up passes {:.0} ms]", r.adapter, r.load_ms, r.pipelines, r.pipeline_ms, r.warmup_ms);
        Ok(gpu)
    }

    /// Runs `generate` on the chosen backend.
    fn generate_with(
        backend: Backend,
        m: &TextModel,
        state: &mut worker::models::llama::LlamaState,
        ids: &[u32],
        params: &GenerateParams,
        on_token: impl FnMut(&worker::generate::TokenEvent) -> std::ops::ControlFlow<()>,
    ) -> Result<worker::generate::Generation, Failure> {
        match backend {
            Backend::Cpu => Ok(generate(&m.model, &m.tokenizer, state, ids, params, on_token)?),
            #[cfg(feature = "gpu")]
            Backend::Gpu => {
                let mut gpu = load_gpu(m, state.context())?;
                Ok(worker::generate::generate_on(&mut gpu, &m.tokenizer, ids, params, on_token)?)
            }
            #[cfg(not(feature = "gpu"))]
            Backend::Gpu => unreachable!("Args::backend refuses gpu without the feature"),
        }
    }

    fn load(args: &Args) -> Result<(TextModel, usize), Failure> {
        args.apply_threads()?;
        args.check_backend()?;
        let activations = args.activations("int16")?;
        let mut model = load_text_model(&args.model()?)?;
        model.model.activations = activations.first().copied().unwrap_or_default();
        let context = args.number("context", 2048usize)?;
        Ok((model, context))
    }

    fn prompt_ids(args: &Args, model: &TextModel) -> Result<Vec<u32>, Failure> {
        let prompt = args.require("prompt")?;
        let system = args.get("system").or(args.flag("chat").then_some(DEFAULT_SYSTEM_PROMPT));
        Ok(model.encode_prompt(prompt, args.flag("chat"), system)?)
    }

    fn cmd_generate(args: &Args) -> Result<(), Failure> {
        let (m, context) = load(args)?;
        let ids = prompt_ids(args, &m)?;
        let params = args.generate_params()?;
        let mut state = m.model.new_state(context);
        if args.flag("sliding-window") {
            state = state.slide(args.number("attention-sinks", 4usize)?);
        }
        let json = args.flag("json");
        let backend = args.backend()?;
        if backend == Backend::Gpu && args.flag("sliding-window") {
            return Err(WorkerError::InvalidParameter { reason: "--sliding-window is not implemented on the gpu backend yet; use --backend cpu".into() }.into());
        }
        let out = generate_with(backend, &m, &mut state, &ids, &params, |event| {
            if !json {
                use std::io::Write;
                print!("{}", event.text);
                let _ = std::io::stdout().flush();
            }
            std::ops::ControlFlow::Continue(())
        })?;
        if json {
            println!(
                "{}",
                json!({
                    "prompt_token_ids": out.prompt_token_ids,
                    "token_ids": out.token_ids,
                    "text": out.text,
                    "stop_reason": out.stop_reason,
                    "timings": out.timings,
                })
            );
        } else {
            println!();
            eprintln!(
                "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token {:.0} ms]",
                out.prompt_token_ids.len(),
                out.token_ids.len(),
                out.timings.prefill_tokens_per_s,
                out.timings.decode_tokens_per_s,
                out.timings.time_to_first_token_ms
            );
        }
        Ok(())
    }

    fn cmd_logits(args: &Args) -> Result<(), Failure> {
        let (m, context) = load(args)?;
        let ids = prompt_ids(args, &m)?;
        let top_n: usize = args.number("top", 10)?;
        let logits = match args.backend()? {
            Backend::Cpu => m.model.forward(&mut m.model.new_state(context), &ids, false)?,
            #[cfg(feature = "gpu")]
            Backend::Gpu => block_on(load_gpu(&m, context)?.forward_logits(&ids))?,
            #[cfg(not(feature = "gpu"))]
            Backend::Gpu => unreachable!("Args::backend refuses gpu without the feature"),
        };
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<_> = order.iter().take(top_n).map(|&i| json!([i, logits[i]])).collect();
        println!("{}", json!({ "prompt_token_ids": ids, "top": top }));
        Ok(())
    }

    fn cmd_embed(args: &Args) -> Result<(), Failure> {
        args.apply_threads()?;
        let path = args.model()?;
        if args.positional.is_empty() {
            return Err(Failure::Usage("give at least one TEXT to embed".into()));
        }
        let embedder = load_embedder(&path)?;
        let texts: Vec<&str> = args.positional.iter().map(String::as_str).collect();
        let embeddings = embedder.embed(&texts)?;
        let dim = embeddings.first().map_or(0, Vec::len);
        if args.flag("json") {
            println!("{}", json!({ "dim": dim, "embeddings": embeddings }));
        } else {
            for (text, e) in texts.iter().zip(&embeddings) {
                let head: Vec<String> = e.iter().take(6).map(|v| format!("{v:.4}")).collect();
                println!("{text:?}: [{} …] ({dim} dims)", head.join(", "));
            }
        }
        Ok(())
    }

    /// `accel pack INPUT --out DIR [--precision P] [--precision-config FILE] [--shard-mb N] [--name NAME]`
    fn cmd_pack(args: &Args) -> Result<(), Failure> {
        let [input] = &args.positional[..] else {
            return Err(Failure::Usage("give exactly one INPUT: a .gguf file, an HF directory or a packed directory".into()));
        };
        let out = PathBuf::from(args.require("out")?);
        let config = match args.get("precision-config") {
            Some(path) => Some(read_file(std::path::Path::new(path))?),
            None => None,
        };
        let default_precision = if config.is_some() { "mixed" } else { "keep" };
        let precision = Precision::parse(args.get("precision").unwrap_or(default_precision), config.as_deref())?;
        let shard_mb: usize = args.number("shard-mb", 32)?;
        if shard_mb == 0 {
            return Err(WorkerError::InvalidParameter { reason: "--shard-mb must be at least 1 (MiB per shard)".into() }.into());
        }
        let name = args.get("name");
        // Refuse a conflicting --out before spending time on the model.
        if let Some(name) = name {
            worker::pack::check_output(&out, name)?;
        }
        let pack = pack_path(std::path::Path::new(input), &precision, shard_mb << 20, name)?;
        worker::pack::write(&pack, &out)?;
        let m = &pack.manifest;
        if args.flag("json") {
            println!("{}", json!({ "name": m.name, "out": out.display().to_string(), "precision": m.precision, "total_bytes": m.total_bytes, "shards": m.shards.len(), "components": m.components.len(), "tensors": m.tensors.len() }));
        } else {
            println!("packed {} ({}) → {}: {} tensors in {} components, {} shards, {:.1} MiB", m.name, m.precision, out.display(), m.tensors.len(), m.components.len(), m.shards.len(), m.total_bytes as f64 / (1 << 20) as f64);
        }
        Ok(())
    }

    /// `accel eval --model M --text FILE [--json] [--reference R]`: perplexity for a text model;
    /// for an embedding model, the mean cosine to `--reference`'s embeddings, one sentence per line.
    fn cmd_eval(args: &Args) -> Result<(), Failure> {
        args.apply_threads()?;
        let path = args.model()?;
        let text_path = args.require("text")?;
        let text = std::fs::read_to_string(text_path).map_err(|e| WorkerError::Io { path: text_path.to_owned(), reason: e.to_string() })?;
        let result = if is_embedding_model(&path)? {
            let reference = args.get("reference").ok_or_else(|| Failure::Usage("an embedding model is scored against --reference R (e.g. the f32 original)".into()))?;
            let sentences: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let agreement = embedding_agreement(&load_embedder(&path)?, &load_embedder(std::path::Path::new(reference))?, &sentences)?;
            serde_json::to_value(agreement).unwrap_or_default()
        } else {
            if args.backend()? == Backend::Gpu {
                return Err(WorkerError::InvalidParameter { reason: "accel eval runs on the cpu backend only (all-token logits are not on the gpu backend yet)".into() }.into());
            }
            // load() applies --activations.
            let (m, _) = load(args)?;
            serde_json::to_value(perplexity(&m.model, &m.tokenizer, &text, 128)?).unwrap_or_default()
        };
        if args.flag("json") {
            println!("{result}");
        } else {
            println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
        }
        Ok(())
    }

    /// Prefill and decode speed: a `--prompt-tokens` prompt (default 128, cut from a fixed
    /// text), then `--gen-tokens` (default 64) greedy tokens, `--reps` times; medians reported.
    fn cmd_bench(args: &Args) -> Result<(), Failure> {
        let path = args.model()?;
        if is_embedding_model(&path)? {
            return bench_embeddings(args);
        }
        let load_start = std::time::Instant::now();
        let (m, _) = load(args)?;
        let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
        let prompt_tokens: usize = args.number("prompt-tokens", 128)?;
        let gen_tokens: usize = args.number("gen-tokens", 64)?;
        let reps: usize = args.number::<usize>("reps", 3)?.max(1);
        let mut ids = m.tokenizer.encode(BENCH_TEXT, false)?;
        if ids.is_empty() || prompt_tokens == 0 {
            return Err(Failure::Usage("--prompt-tokens must be positive".into()));
        }
        while ids.len() < prompt_tokens {
            ids.extend_from_within(..);
        }
        ids.truncate(prompt_tokens);
        let params = GenerateParams { max_tokens: gen_tokens, ..GenerateParams::default() };
        #[cfg(feature = "gpu")]
        if args.backend()? == Backend::Gpu {
            return bench_gpu(args, &m, &ids, &params, reps, load_ms, &path);
        }
        let mut model = m.model;
        let mut results = vec![];
        for activations in args.activations("int16,f32")? {
            model.activations = activations;
            let (mut prefill, mut decode, mut ttft) = (vec![], vec![], vec![]);
            for _ in 0..reps {
                let mut state = model.new_state(prompt_tokens + gen_tokens + 1);
                // Run past EOS: a benchmark measures a fixed number of steps.
                let mut tok = (*m.tokenizer).clone();
                tok.eos_ids.clear();
                let out = generate(&model, &tok, &mut state, &ids, &params, |_| std::ops::ControlFlow::Continue(()))?;
                prefill.push(out.timings.prefill_tokens_per_s);
                decode.push(out.timings.decode_tokens_per_s);
                ttft.push(out.timings.time_to_first_token_ms);
            }
            results.push(json!({
                "activations": activations.name(),
                "prefill_tokens_per_s": summary(prefill),
                "decode_tokens_per_s": summary(decode),
                "time_to_first_token_ms": summary(ttft),
            }));
        }
        print_bench(args, json!({
            "engine": "accel-cpu",
            "model": path.display().to_string(),
            "threads": rayon::current_num_threads(),
            "simd": worker::quant::kernel_set(),
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens,
            "reps": reps,
            "load_ms": load_ms,
            "peak_rss_bytes": peak_rss_bytes(),
            "results": results,
        }))
    }

    /// `accel bench --backend gpu`: the same measurement on the GPU backend (f32 activations,
    /// greedy argmax on the GPU), plus the adapter and the pipeline compile time.
    #[cfg(feature = "gpu")]
    fn bench_gpu(args: &Args, m: &TextModel, ids: &[u32], params: &GenerateParams, reps: usize, load_ms: f64, path: &std::path::Path) -> Result<(), Failure> {
        let mut gpu = load_gpu(m, ids.len() + params.max_tokens + 1)?;
        let mut tok = (*m.tokenizer).clone();
        tok.eos_ids.clear();
        let (mut prefill, mut decode, mut ttft) = (vec![], vec![], vec![]);
        for _ in 0..reps {
            gpu.reset();
            let out = worker::generate::generate_on(&mut gpu, &tok, ids, params, |_| std::ops::ControlFlow::Continue(()))?;
            prefill.push(out.timings.prefill_tokens_per_s);
            decode.push(out.timings.decode_tokens_per_s);
            ttft.push(out.timings.time_to_first_token_ms);
        }
        let r = gpu.report.clone();
        // --profile: each decode dispatch alone, summed per pipeline variant (where a step goes).
        let profile = if args.flag("profile") { Some(block_on(gpu.profile_decode())?.into_iter().map(|(k, ms)| json!([k, ms])).collect::<Vec<_>>()) } else { None };
        print_bench(args, json!({
            "decode_profile_ms": profile,
            "engine": "accel-gpu",
            "model": path.display().to_string(),
            "adapter": r.adapter,
            "prompt_tokens": ids.len(),
            "gen_tokens": params.max_tokens,
            "reps": reps,
            "load_ms": load_ms + r.load_ms,
            "gpu_load_ms": r.load_ms,
            "pipeline_compile_ms": r.pipeline_ms,
            "pipeline_warmup_ms": r.warmup_ms,
            "pipelines": r.pipelines,
            "gpu_weight_bytes": r.weight_bytes,
            "peak_rss_bytes": peak_rss_bytes(),
            "results": [{
                "activations": "f32",
                "prefill_tokens_per_s": summary(prefill),
                "decode_tokens_per_s": summary(decode),
                "time_to_first_token_ms": summary(ttft),
            }],
        }))
    }

    /// `accel bench` on an embedding model: sentences per second over a batch of the fixture
    /// sentences (`--batch N`, default 16), `--reps` times.
    fn bench_embeddings(args: &Args) -> Result<(), Failure> {
        args.apply_threads()?;
        let path = args.model()?;
        let load_start = std::time::Instant::now();
        let embedder = load_embedder(&path)?;
        let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
        let batch: usize = args.number::<usize>("batch", 16)?.max(1);
        let reps: usize = args.number::<usize>("reps", 3)?.max(1);
        let sentences: Vec<&str> = BENCH_SENTENCES.lines().filter(|l| !l.trim().is_empty()).cycle().take(batch).collect();
        let mut rates = vec![];
        for _ in 0..reps {
            let start = std::time::Instant::now();
            embedder.embed(&sentences)?;
            rates.push(batch as f64 / start.elapsed().as_secs_f64());
        }
        print_bench(args, json!({
            "engine": "accel-cpu",
            "model": path.display().to_string(),
            "threads": rayon::current_num_threads(),
            "simd": worker::quant::kernel_set(),
            "batch": batch,
            "reps": reps,
            "load_ms": load_ms,
            "peak_rss_bytes": peak_rss_bytes(),
            "embeddings_per_s": summary(rates),
        }))
    }

    fn print_bench(args: &Args, result: serde_json::Value) -> Result<(), Failure> {
        if args.flag("json") {
            println!("{result}");
        } else {
            println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
        }
        Ok(())
    }

    /// `{samples, median, min, max}` of a measurement.
    fn summary(mut samples: Vec<f64>) -> serde_json::Value {
        let (lo, hi) = (min(&samples), max(&samples));
        let raw = samples.clone();
        json!({ "samples": raw, "median": median(&mut samples), "min": lo, "max": hi })
    }

    /// The process's peak resident set (VmHWM), where /proc says it (Linux).
    fn peak_rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    const BENCH_TEXT: &str = include_str!("../../../tests/fixtures/eval_text.txt");
    const BENCH_SENTENCES: &str = include_str!("../../../tests/fixtures/minilm_eval_sentences.txt");
}
