#!/bin/sh
# Runs the cmocka unit tests, the fuzz targets over their committed corpora
# plus a short fuzzing smoke (FUZZ_SMOKE seconds each), and the integration
# tests against the real binary; the last line is "N passed, N failed" over
# all three.
# usage: tests/run.sh [unit|fuzz|integration]
BUILD=${BUILD:-build}
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
what=${1:-all}
passed=0
failed=0
rc=0

if [ "$what" = all ] || [ "$what" = unit ]; then
	# the binaries of the sources here (not a stale one of a removed test)
	for src in tests/unit/test_*.c; do
		t="$BUILD/tests/$(basename "$src" .c)"
		[ -x "$t" ] || { echo "unit $(basename "$t"): not built"; failed=$((failed + 1)); rc=1; continue; }
		out=$("$t" 2>&1)
		r=$?
		p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
		f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
		p=${p:-0}
		f=${f:-0}
		if [ $r -ne 0 ] && [ "$f" = 0 ]; then f=1; fi	# crashed
		[ "$f" != 0 ] && { printf '%s\n' "$out"; rc=1; }
		echo "unit $(basename "$t"): $p passed, $f failed"
		passed=$((passed + p))
		failed=$((failed + f))
	done
fi
if [ "$what" = all ] || [ "$what" = fuzz ]; then
	# one pass or failure per target: replay of its corpus, then fuzzing
	out=$(mktemp)
	FUZZ_BUILD=$FUZZ_BUILD ./tests/fuzz/run.sh "${FUZZ_SMOKE:-3}" | tee "$out"
	line=$(tail -n 1 "$out")
	rm -f "$out"
	p=$(echo "$line" | sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
	f=$(echo "$line" | sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
	[ -z "$p" ] && { p=0; f=1; }
	passed=$((passed + p))
	failed=$((failed + f))
fi
if [ "$what" = all ] || [ "$what" = integration ]; then
	# Sanitizer builds: workers run under seccomp, which refuses the
	# ptrace LeakSanitizer needs at exit, so leaks are checked by the unit
	# tests; every other finding aborts and the harness fails the test.
	export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:verify_asan_link_order=0}"
	export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
	out=$(mktemp)
	case $BUILD in /*) bin=$BUILD/licproxy ;; *) bin=$PWD/$BUILD/licproxy ;; esac
	LICPROXY="$bin" /usr/bin/python3 tests/integration/run.py | tee "$out"
	line=$(tail -n 1 "$out")
	rm -f "$out"
	p=$(echo "$line" | sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
	f=$(echo "$line" | sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
	[ -z "$p" ] && { p=0; f=1; }
	passed=$((passed + p))
	failed=$((failed + f))
fi
[ "$failed" != 0 ] && rc=1
echo "$passed passed, $failed failed"
exit $rc
