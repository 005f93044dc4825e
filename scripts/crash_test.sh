#!/usr/bin/env bash
# Kill-and-resume test of `resnet train` (docs/Reliability.md, "Crash safety").
#
#   scripts/crash_test.sh [KILLS] [--skip-build]
#
# 1. Trains a tiny ResNet-8 run straight through (the reference): 96 Fashion-MNIST images, batch 32,
#    40 epochs = 120 steps, a checkpoint every epoch (3 steps).
# 2. Runs the same command with --resume again and again, each time SIGKILLed, KILLS times
#    (default 20): odd attempts after a random delay (scaled by the reference run's time to its
#    first checkpoint, so that kills land after checkpoints exist on a loaded machine too), even
#    ones at a random moment inside a checkpoint write. Checkpoint writes are slowed by the
#    RESIDUAL_TEST_SLOW_WRITE_MS hook (a half-written temporary, then a complete one not yet
#    renamed, 150 ms each). After every kill: no partial checkpoint.safetensors; if one exists it
#    loads (`resnet eval`), and its step never goes backwards.
# 3. Resumes to the end: model.safetensors and the checkpoint's tensors must equal the reference's
#    byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=20; build=1
for a in "$@"; do case $a in --skip-build) build=0 ;; *) kills=$a ;; esac; done
[ $build = 1 ] && swift build -c release --product resnet 2>&1 | grep -E "error|Build complete" || true
resnet=$PWD/.build/release/resnet
[ -x "$resnet" ] || { echo "crash_test.sh: $resnet is not built" >&2; exit 2; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
cd "$dir"
args=(train --model resnet8 --train-subset 96 --test-subset 50 --batch-size 32 --epochs 40 --threads 2 --seed 11)

# The `step` of a checkpoint's progress record (0 if there is no checkpoint): the last "step" key of
# the header, since the record's keys are sorted and the top-level one follows the curve points'.
ckpt_step() {
  [ -f "$1" ] || { echo 0; return; }
  local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  head -c $((8 + n)) "$1" | grep -ao 'step\\":[0-9]*' | tail -1 | grep -o '[0-9]*$'
}
# A safetensors file's tensor bytes (everything after the header).
tensors() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }

now() { date +%s.%N; }
echo "== reference run (uninterrupted)"
t0=$(now)
"$resnet" "${args[@]}" --out ref > ref.log 2>&1 &
ref=$!
# Time to the first checkpoint (start-up, data loading, one epoch): the random kill delays are
# scaled by it, so that on a loaded machine kills still land after checkpoints exist.
while kill -0 $ref 2>/dev/null && [ ! -f ref/checkpoint.safetensors ]; do sleep 0.05; done
first=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
wait $ref || { cat ref.log; exit 1; }
echo "   $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s; first checkpoint after ${first} s"

echo "== $kills kills (checkpoint writes slowed to 2 x 150 ms): odd ones after a random delay of"
echo "   0.3 s to (first checkpoint + 3 s), even ones at a random point inside a checkpoint write"
killed=0 inside=0 none=0 loaded=0 last=0 attempts=0 failures=0
while [ $killed -lt "$kills" ]; do
  attempts=$((attempts + 1))
  RESIDUAL_TEST_SLOW_WRITE_MS=150 "$resnet" "${args[@]}" --out run --resume > "attempt$attempts.log" 2>&1 &
  pid=$!
  if [ $((attempts % 2)) = 1 ]; then
    delay=$(awk -v r=$RANDOM -v f="$first" 'BEGIN { printf "%.3f", 0.3 + (f + 2.7) * r / 32767 }')
    sleep "$delay"
  else
    # Wait for this process's temporary checkpoint file, then kill 0-280 ms into the write.
    t1=$(now)
    while kill -0 $pid 2>/dev/null && ! ls -a run 2>/dev/null | grep -q "^\.checkpoint\.safetensors\.tmp-$pid-"; do
      sleep 0.01
    done
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", 0.28 * r / 32767 }')"
    delay=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
  fi
  if ! kill -KILL $pid 2>/dev/null; then
    wait $pid || { echo "   attempt $attempts failed on its own:"; cat "attempt$attempts.log"; exit 1; }
    echo "   attempt $attempts finished before its kill (${delay}s): the run is complete"
    break
  fi
  wait $pid 2>/dev/null || true
  killed=$((killed + 1))
  tmp=$(ls -a run 2>/dev/null | grep -c '^\.checkpoint\.safetensors\.tmp-' || true)
  where="between writes"
  # A temporary file from this attempt's pid means the kill landed inside a write.
  if ls -a run 2>/dev/null | grep -q "^\.checkpoint\.safetensors\.tmp-$pid-"; then inside=$((inside + 1)); where="inside a checkpoint write"; fi
  if [ -f run/checkpoint.safetensors ]; then
    step=$(ckpt_step run/checkpoint.safetensors)
    if "$resnet" eval --checkpoint run/checkpoint.safetensors --test-subset 50 --json > eval.log 2>&1; then
      loaded=$((loaded + 1))
    else
      echo "   FAIL: the checkpoint does not load after kill $killed:"; cat eval.log; failures=$((failures + 1))
    fi
    if [ "$step" -lt "$last" ]; then echo "   FAIL: checkpoint step went back from $last to $step"; failures=$((failures + 1)); fi
    last=$step
  else
    none=$((none + 1)); step=none
  fi
  printf "   kill %2d after %ss, %s; checkpoint step %s, %d stale temporary file(s)\n" $killed "$delay" "$where" "$step" "$tmp"
done

echo "== resume to the end"
"$resnet" "${args[@]}" --out run --resume > final.log 2>&1 || { cat final.log; exit 1; }
grep -E "^Resuming|^No checkpoint" final.log | sed 's/^/   /'
same_model=no; same_ckpt=no
cmp -s ref/model.safetensors run/model.safetensors && same_model=yes
cmp -s <(tensors ref/checkpoint.safetensors) <(tensors run/checkpoint.safetensors) && same_ckpt=yes
stale=$(ls -a run | grep -c '\.tmp-' || true)
echo "== $killed kills ($inside inside a checkpoint write, $none before the first checkpoint existed), $loaded checkpoints loaded after a kill, $failures failures"
echo "== final weights identical to the uninterrupted run: $same_model; checkpoint tensors identical: $same_ckpt; stale temporary files left: $stale"
[ $failures = 0 ] && [ $same_model = yes ] && [ $same_ckpt = yes ] && [ "$stale" = 0 ]
