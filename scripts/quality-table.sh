#!/usr/bin/env bash
# What each precision costs: packs SmolLM2 (keep, q8, q4, q3, q2, mixed) and MiniLM (f32, f16,
# q8, q4), then measures perplexity on tests/fixtures/eval_text.txt (MODELS.md's convention) and
# the mean cosine of MiniLM's embeddings to the f32 model's on tests/fixtures/minilm_eval_sentences.txt
# (the fixture's three sentences plus ten of ours). Prints the Markdown tables of the README.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ACCEL_CACHE:-$HOME/.cache/ipfs-accelerate}
ACTIVATIONS=${ACTIVATIONS:-f32}
cargo build --release -p worker --bin accel >&2
accel=target/release/accel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

total_bytes() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_bytes"])' "$1"; }

smol="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
minilm="$CACHE/minilm"
rows=""
for p in keep q8 q4 q3 q2 mixed; do
  $accel pack "$smol" --out "$work/smol-$p" --name smollm2-135m --precision "$p" >&2
  bytes=$(total_bytes "$work/smol-$p/manifest.json")
  ppl=$($accel eval --model "$work/smol-$p" --text tests/fixtures/eval_text.txt --activations "$ACTIVATIONS" --json)
  rows+="$p $bytes $ppl"$'\n'
done
# f16 size for the reduction column: 2 bytes per parameter.
params=$(python3 -c 'import json,sys,math; m=json.load(open(sys.argv[1])); print(sum(math.prod(t["shape"]) for t in m["tensors"]))' "$work/smol-keep/manifest.json")
python3 - "$params" <<PY
import json, sys
params = int(sys.argv[1])
rows = [l.split(" ", 2) for l in """$rows""".strip().splitlines()]
keep = json.loads(rows[0][2])["perplexity"]
print("| SmolLM2-135M | bytes | vs f16 | perplexity | vs keep |")
print("|---|---|---|---|---|")
for name, size, js in rows:
    p = json.loads(js)["perplexity"]
    print(f"| {name} | {int(size)/2**20:.1f} MiB | {100*(1-int(size)/(2*params)):.0f}% smaller | {p:.3f} | {100*(p/keep-1):+.1f}% |")
PY

echo
echo "| MiniLM-L6 | bytes | vs f32 | mean cosine to f32 | worst |"
echo "|---|---|---|---|---|"
f32_bytes=""
for p in f32 f16 q8 q4; do
  $accel pack "$minilm" --out "$work/minilm-$p" --name minilm-l6 --precision "$p" >&2
  bytes=$(total_bytes "$work/minilm-$p/manifest.json")
  f32_bytes=${f32_bytes:-$bytes}
  $accel eval --model "$work/minilm-$p" --reference "$minilm" --text tests/fixtures/minilm_eval_sentences.txt --json |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
b, f = int(sys.argv[2]), int(sys.argv[3])
mean, worst = r["mean_cosine"], r["min_cosine"]
print(f"| {sys.argv[1]} | {b/2**20:.1f} MiB | {100*(1-b/f):.0f}% smaller | {mean:.5f} | {worst:.5f} |")' "$p" "$bytes" "$f32_bytes"
done
