#!/usr/bin/env bash
# Run every fuzz target of the module for FUZZTIME (make fuzz).
#
#   scripts/fuzz.sh [PACKAGE...]      default ./...; run from the module root
#
# Environment: GO (default go), FUZZTIME (default 5s), FUZZ_RETRIES (how
# often an engine failure is retried, default 1).
#
# Each target ends one of four ways:
#   ok              go test passed.
#   crasher         go test wrote a new file under the package's
#                   testdata/fuzz/TARGET/: a real failing input. Fails, with
#                   the path of the file and go test's output.
#   engine failure  go test failed, wrote no new file, and said one of the
#                   fuzzing engine's own errors (a worker hung or was killed,
#                   a deadline passed before it answered): what a loaded
#                   machine does. Retried; if every retry fails the same way
#                   it is a warning, not a failure.
#   other failure   anything else (the package does not build, a seed corpus
#                   entry fails, ...). Fails, with go test's output.
#
# Output is shown for every failure, never thrown away. The script runs
# every target and exits 1 if any failed.
set -uo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
FUZZ_RETRIES=${FUZZ_RETRIES:-1}
[ $# -eq 0 ] && set -- ./...

# Messages of the fuzzing engine itself (internal/fuzz), which name no
# failing input. A crasher is recognised by its file, never by text.
engine_re='fuzzing process hung or terminated unexpectedly|fuzzing process terminated by unexpected signal|communicating with fuzzing process|context deadline exceeded'

out=$(mktemp)
trap 'rm -f "$out"' EXIT

failed=()
warned=()

# corpus DIR TARGET lists the files of TARGET's corpus in testdata.
corpus() { find "$1/testdata/fuzz/$2" -type f 2>/dev/null | sort; }

# fuzz_one PKG DIR TARGET runs one target, retrying engine failures.
fuzz_one() {
	local pkg=$1 dir=$2 f=$3 attempt=0 before after new
	while :; do
		attempt=$((attempt + 1))
		echo "fuzz $pkg $f (${FUZZTIME}, attempt $attempt)"
		before=$(corpus "$dir" "$f")
		if "$GO" test -run '^$' -fuzz "^${f}\$" -fuzztime "$FUZZTIME" "$pkg" >"$out" 2>&1; then
			return 0
		fi
		after=$(corpus "$dir" "$f")
		new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed '/^$/d')
		if [ -n "$new" ]; then
			cat "$out"
			echo "FAIL: $f in $pkg found a failing input, written to:"
			printf '  %s\n' $new
			echo "  re-run it: $GO test -run '$f/$(basename "$(printf '%s\n' $new | head -n 1)")' $pkg"
			echo "  (once fixed, keep the file: it is a regression test)"
			failed+=("$f in $pkg: crasher $(printf '%s ' $new)")
			return 1
		fi
		if ! grep -Eq "$engine_re" "$out"; then
			cat "$out"
			echo "FAIL: $f in $pkg failed (no new failing input was written: see the output above)"
			failed+=("$f in $pkg")
			return 1
		fi
		cat "$out"
		local why
		why=$(grep -Eo "$engine_re" "$out" | head -n 1)
		if [ "$attempt" -le "$FUZZ_RETRIES" ]; then
			echo "fuzz: $f in $pkg: engine failure ($why), no failing input written; retrying"
			continue
		fi
		echo "WARNING: $f in $pkg: the fuzzing engine failed $attempt times ($why) without writing a failing input;"
		echo "  that is machine load, not a bug found: not counted as a failure"
		warned+=("$f in $pkg: $why")
		return 0
	done
}

pkgs=$("$GO" list -f '{{.ImportPath}} {{.Dir}}' "$@") || exit 1
while read -r pkg dir; do
	[ -n "$pkg" ] || continue
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		fuzz_one "$pkg" "$dir" "$f"
	done
done <<<"$pkgs"

if [ ${#warned[@]} -gt 0 ]; then
	echo "fuzz: engine failures (warnings):"
	printf '  %s\n' "${warned[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: all targets passed"
