#!/usr/bin/env bash
# Our native CPU engine against llama.cpp on the same GGUF, same machine, same run
# (`make bench-peers`). Builds llama.cpp's llama-bench once (scripts/build-llama-cpp.sh, about
# 13 minutes on 2 cores, cached outside git), then for 1 and 2 threads runs
#   accel bench --prompt-tokens 128 --gen-tokens 64   (int16 and f32 activation paths)
#   llama-bench -p 128 -n 64
# and prints the ratios. Results: bench-results/peers-<UTC time>.json.
#
# Not identical work: llama-bench's decode (tg64) starts from an empty cache, ours decodes after
# the 128-token prompt (attention over 128–192 positions), so the ratio slightly favours llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-${ACCEL_CACHE:-$HOME/.cache/ipfs-accelerate}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
REPS=${REPS:-3}
THREADS=${THREADS:-"1 2"}
[ -f "$MODEL" ] || scripts/fetch-models.sh

llama_bench=$(scripts/build-llama-cpp.sh | tail -n 1)
cargo build --release -p worker --bin accel >&2

out=bench-results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=$(mktemp -d)
for t in $THREADS; do
  echo "[bench-peers] threads=$t: accel" >&2
  target/release/accel bench --model "$MODEL" --threads "$t" --reps "$REPS" --json > "$raw/accel-$t.json"
  echo "[bench-peers] threads=$t: llama.cpp" >&2
  "$llama_bench" -m "$MODEL" -t "$t" -p 128 -n 64 -r "$REPS" -o json 2>/dev/null > "$raw/llama-$t.json"
done

python3 - "$raw" "$out/peers-$stamp.json" "$MODEL" "$THREADS" <<'PY'
import json, os, platform, sys
raw, dest, model, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rows, report = [], {"model": model, "machine": {"cpu": cpu, "cores": os.cpu_count()}, "runs": []}
for t in threads:
    ours = json.load(open(f"{raw}/accel-{t}.json"))
    peer = json.load(open(f"{raw}/llama-{t}.json"))
    lc = {"prefill": next(r["avg_ts"] for r in peer if r["n_prompt"] > 0),
          "decode": next(r["avg_ts"] for r in peer if r["n_gen"] > 0),
          "build": peer[0].get("build_commit", "?")}
    report["runs"].append({"threads": int(t), "accel": ours, "llama_cpp": lc})
    for r in ours["results"]:
        p, d = r["prefill_tokens_per_s"]["median"], r["decode_tokens_per_s"]["median"]
        rows.append((t, r["activations"], p, lc["prefill"], p / lc["prefill"], d, lc["decode"], d / lc["decode"]))
json.dump(report, open(dest, "w"), indent=1)
print(f"\nSmolLM2 Q4_1 on {cpu} ({os.cpu_count()} cores), 128-token prompt, 64 greedy tokens, medians\n")
print("| threads | accel path | prefill tok/s | llama.cpp | ratio | decode tok/s | llama.cpp | ratio |")
print("|---|---|---|---|---|---|---|---|")
for t, a, p, lp, rp, d, ld, rd in rows:
    print(f"| {t} | {a} | {p:.1f} | {lp:.1f} | {rp:.2f}× | {d:.1f} | {ld:.1f} | {rd:.2f}× |")
print(f"\nwritten: {dest}")
PY
rm -rf "$raw"
