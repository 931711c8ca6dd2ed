#!/usr/bin/env bash
# Push the same generated manifest tree (5,000 objects, ~20 MB of YAML) with berth,
# `flux push artifact` and `oras push` to the same plain-HTTP registry on loopback; print
# median wall time and peak RSS of each, and the ratios, as a Markdown table.
#
#   bench/push-compare.sh REGISTRY_HOST:PORT [RUNS]
#
# Every run pushes into a fresh repository so every tool uploads every blob (no tool gets
# to skip what an earlier run left behind). A final berth re-push into a used repository
# shows that unchanged content uploads no blob.
set -euo pipefail
registry=${1:?usage: bench/push-compare.sh REGISTRY_HOST:PORT [RUNS]}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${BERTH_PEERS:-$HOME/.cache/berth-peers}
flux=${FLUX:-$(ls -d "$peers"/flux/*/ | sort -V | tail -1)flux}
oras=${ORAS:-$(ls -d "$peers"/oras/*/ | sort -V | tail -1)oras}
berth=${BERTH:-$root/target/release/berth}
[ -x "$berth" ] || (cd "$root" && cargo build --release -p berth >&2)
for tool in "$flux" "$oras" "$berth"; do [ -x "$tool" ] || { echo "missing $tool" >&2; exit 1; }; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree=$work/tree
python3 - "$tree" <<'PY'
import os, sys, random
root = sys.argv[1]
random.seed(42)
filler = "x" * 3900  # ~4 KB per object -> ~20 MB for 5,000 objects
for i in range(5000):
    d = os.path.join(root, f"team-{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"config-{i:04d}.yaml"), "w") as f:
        f.write(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: config-{i:04d}\n  namespace: team-{i % 50:02d}\n"
            f"data:\n  payload: \"{filler}{random.random()}\"\n  seed: \"{random.random()}\"\n"
        )
PY
size=$(du -sb "$tree" | cut -f1)
count=$(find "$tree" -type f | wc -l)
echo "tree: $count files, $size bytes" >&2

stamp=$(date +%s)
measure() { # name run command...
  local name=$1 run=$2; shift 2
  local start end
  # Wall time from the clock in nanoseconds (time's %e has 10 ms steps, too coarse here);
  # peak RSS and CPU from /usr/bin/time.
  start=$(date +%s%N)
  if ! /usr/bin/time -f "%M %U %S" -o "$work/time" "$@" >/dev/null 2>"$work/err"; then
    echo "$name run $run failed:" >&2; cat "$work/err" >&2; exit 1
  fi
  end=$(date +%s%N)
  echo "$name $(( (end - start) / 1000 ))e-6 $(tail -1 "$work/time")" >> "$work/results"
}
for run in $(seq 1 "$runs"); do
  measure berth "$run" "$berth" push --insecure "oci://$registry/bench/berth-$stamp-$run:v1" "$tree"
  measure flux "$run" "$flux" push artifact "oci://$registry/bench/flux-$stamp-$run:v1" \
    --path="$tree" --source=bench --revision="run-$run"
  (cd "$tree" && measure oras "$run" "$oras" push --plain-http "$registry/bench/oras-$stamp-$run:v1" .)
done
repush=$("$berth" push --insecure "oci://$registry/bench/berth-$stamp-1:again" "$tree" 2>&1 >/dev/null | tail -1)

python3 - "$work/results" "$count" "$size" "$runs" "$repush" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 5:
        rows[parts[0]].append((float(parts[1]), int(parts[2]), float(parts[3]) + float(parts[4])))
count, size, runs, repush = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
med = {
    k: (statistics.median(t for t, _, _ in v), max(m for _, m, _ in v) / 1024, statistics.median(c for _, _, c in v))
    for k, v in rows.items()
}
print(f"Tree: {count} files, {size / 1e6:.1f} MB; {runs} runs per tool, fresh repository per run.\n")
print("| tool | median wall time (s) | median CPU time (s) | peak RSS (MiB) | wall vs flux | CPU vs flux | RSS vs flux |")
print("|------|------:|------:|------:|------:|------:|------:|")
for k in ("berth", "flux", "oras"):
    if k in med:
        t, m, c = med[k]
        ft, fm, fc = med.get("flux", (t, m, c))
        print(f"| {k} | {t:.3f} | {c:.2f} | {m:.1f} | {t / ft:.2f}x | {c / fc:.2f}x | {m / fm:.2f}x |")
print(f"\nberth re-push of unchanged content: `{repush}`")
PY
