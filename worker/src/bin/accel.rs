//! `accel` — the native command-line face of the engine (see BRIEF.md, "Public interfaces").
//!
//! Commands arrive with the issues that build them: `pack` with the packed format, `generate`,
//! `logits`, `embed` and `bench` with the engine. Until then they exit with a clear message
//! instead of pretending.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::run(std::env::args().skip(1).collect()));
}

/// `cargo test --target wasm32-unknown-unknown` also builds binaries; the CLI is native-only.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    const USAGE: &str = "\
accel — ipfs-accelerate-web's native engine

USAGE:
    accel <COMMAND> [ARGS]

COMMANDS:
    pack       pack a GGUF or HF model into content-addressed shards
    generate   generate text from a prompt
    logits     print next-token logits after a prompt
    embed      print sentence embeddings
    bench      measure prefill and decode speed
    help       print this message
    --version  print the version
";

    /// Commands named by the public interface whose implementation has not landed yet, with
    /// the issue that delivers each.
    const PENDING: &[(&str, &str)] = &[
        ("pack", "the packed-format issue (#4)"),
        ("generate", "the engine issue (#3)"),
        ("logits", "the engine issue (#3)"),
        ("embed", "the engine issue (#3)"),
        ("bench", "the engine issue (#3)"),
    ];

    pub fn run(args: Vec<String>) -> i32 {
        match args.first().map(String::as_str) {
            None | Some("help" | "--help" | "-h") => {
                print!("{USAGE}");
                0
            }
            Some("--version" | "-V") => {
                println!("accel {}", env!("CARGO_PKG_VERSION"));
                0
            }
            Some(command) => {
                match PENDING.iter().find(|(name, _)| *name == command) {
                    Some((_, issue)) => eprintln!("error: NotImplemented: `accel {command}` is not built yet; it arrives with {issue}"),
                    None => eprintln!("error: UnknownCommand: `{command}` is not an accel command; run `accel help`"),
                }
                2
            }
        }
    }
}
