#!/bin/sh
# Runs every fuzz target: first over each file of its committed corpus
# (tests/fuzz/corpus/TARGET/, so a fixed crash stays fixed), then fuzzing
# from that corpus for SECONDS. A crash, leak, timeout or out-of-memory
# fails the target; its input is kept in $FUZZ_BUILD/artifacts/TARGET/.
# The last line is "fuzz: N passed, N failed" (one per target).
# usage: tests/fuzz/run.sh SECONDS [TARGET...]
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
secs=${1:-3}
[ $# -gt 0 ] && shift
targets=${*:-$(ls tests/fuzz/fuzz_*.c | sed 's,.*/,,; s,\.c$,,')}
passed=0
failed=0

# -timeout: one input may take at most this long (a hang is a failure).
opts="-timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

one() {	# target: 0 when both the replay and the fuzzing pass
	bin=$FUZZ_BUILD/$1
	seeds=tests/fuzz/corpus/$1
	work=$FUZZ_BUILD/corpus/$1
	art=$FUZZ_BUILD/artifacts/$1
	log=$FUZZ_BUILD/logs/$1.log
	mkdir -p "$work" "$art" "$(dirname "$log")"
	[ -x "$bin" ] || { echo "fuzz $1: not built"; return 1; }
	[ -n "$(ls "$seeds" 2>/dev/null)" ] ||
		{ echo "fuzz $1: no corpus in $seeds"; return 1; }
	# Listing the files (not the directory) runs each once and exits.
	if ! "$bin" $opts -artifact_prefix="$art/" "$seeds"/* >"$log" 2>&1; then
		tail -n 40 "$log"
		echo "fuzz $1: replay of $seeds FAILED (log $log)"
		return 1
	fi
	n=$(ls "$seeds" | wc -l)
	# New inputs go to the first directory, the committed corpus is read.
	if ! "$bin" $opts -max_total_time="$secs" -artifact_prefix="$art/" \
	    "$work" "$seeds" >"$log" 2>&1; then
		tail -n 40 "$log"
		echo "fuzz $1: FAILED after fuzzing (log $log, input in $art/)"
		return 1
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	echo "fuzz $1: $n corpus inputs ok; ${secs}s: ${execs:-?} execs" \
	    "(${rate:-?}/s), no crash, leak or timeout"
	return 0
}

for t in $targets; do
	if one "$t"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
