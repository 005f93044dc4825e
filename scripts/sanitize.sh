#!/usr/bin/env bash
# Runs the test suite under ThreadSanitizer and/or AddressSanitizer (see docs/Reliability.md).
#
#   scripts/sanitize.sh [thread|address|all] [swift test options, e.g. --filter REGEX]
#
# Release builds (`-c release`): debug numeric code is 10-100x slower, and the sanitizers'
# instrumentation is added either way. Each sanitizer builds into its own scratch directory
# (.build-tsan, .build-asan) so the normal .build stays untouched. Fails if a test fails or if the
# sanitizer reports anything (TSan keeps going after a report and exits 0 from `swift test`, so the
# log is checked). The kernels run on 2+ threads: the default thread count is the number of cores,
# and ParallelTests checks that parallelFor's blocks really overlap.
#
# Environment: RESIDUAL_SANITIZE_NICE (default 10) is the nice level; logs go to
# .build-{tsan,asan}/sanitize.log.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}; shift || true
nice_level=${RESIDUAL_SANITIZE_NICE:-10}

run() {
  local san=$1 scratch=$2 pattern=$3; shift 3
  local log=$scratch/sanitize.log
  mkdir -p "$scratch"
  echo "== $san sanitizer: build (release, $scratch)"
  local t0=$SECONDS
  nice -n "$nice_level" swift build -c release --build-tests --sanitize="$san" --scratch-path "$scratch" 2>&1 \
    | grep -E "error|warning: .*sanitiz|Compiling|Build complete" | grep -v "^\[.*Compiling" || true
  local t1=$SECONDS
  echo "== $san sanitizer: test $*"
  set +e
  # ASan: leak checking stays on (LeakSanitizer). TSan: report every race, keep going, then fail.
  # scripts/lsan.supp lists leaks inside the toolchain's Foundation and XCTest, not ours.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0} \
  TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1} \
    nice -n "$nice_level" swift test -c release --sanitize="$san" --scratch-path "$scratch" --skip-build "$@" > "$log" 2>&1
  local status=$?
  set -e
  local t2=$SECONDS
  local reports; reports=$(grep -cE "$pattern" "$log" || true)
  grep -E "Test run with|Executed [0-9]+ tests|✘|error:" "$log" | grep -v "Executed 0 tests" | tail -15 || true
  echo "== $san sanitizer: build $((t1 - t0)) s, tests $((t2 - t1)) s, swift test exit $status, $reports sanitizer report(s) (log: $log)"
  if [ "$reports" -gt 0 ]; then grep -A30 -m3 -E "$pattern" "$log"; return 1; fi
  return $status
}

status=0
case $which in
  thread) run thread .build-tsan "WARNING: ThreadSanitizer" "$@" || status=1 ;;
  address) run address .build-asan "ERROR: (AddressSanitizer|LeakSanitizer)" "$@" || status=1 ;;
  all)
    run thread .build-tsan "WARNING: ThreadSanitizer" "$@" || status=1
    run address .build-asan "ERROR: (AddressSanitizer|LeakSanitizer)" "$@" || status=1 ;;
  *) echo "usage: scripts/sanitize.sh [thread|address|all] [swift test options]" >&2; exit 2 ;;
esac
exit $status
