#!/bin/bash
# Builds hutch and runs its tests with real clients, daemons and guests.
#
#   scripts/test.sh                 every test (needs root for FUSE and mounts)
#   scripts/test.sh --quick         without the slow suite
#   scripts/test.sh --sanitize      an ASan+UBSan build in build-asan, without the slow and vm suites
#   scripts/test.sh -- ARGS         ARGS go to `meson test` (e.g. --suite nbd)
#
# Ends with a line "N passed, N failed" (", N skipped" when any were).
set -u
cd "$(dirname "$0")/.."

build=${BUILD:-build}
setup_args=()
test_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) test_args+=(--no-suite slow) ;;
	--sanitize)
		build=${BUILD:-build-asan}
		setup_args+=(-Db_sanitize=address,undefined -Db_lundef=false)
		test_args+=(--no-suite slow --no-suite vm)
		;;
	--) shift; test_args+=("$@"); break ;;
	-h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done

scripts/deps.sh || { echo "cannot install the packages hutch needs"; echo "0 passed, 1 failed"; exit 1; }
if ! BUILD="$build" scripts/build.sh "${setup_args[@]}"; then
	echo "the build failed; see the errors above"
	echo "0 passed, 1 failed"
	exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
meson test -C "$build" --print-errorlogs --num-processes 2 "${test_args[@]}"
status=$?

# Count from meson's own log, so the line is true whatever meson prints.
read -r passed failed skipped < <(/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        r = json.loads(line).get('result')
        if r in ('OK', 'EXPECTEDFAIL'): p += 1
        elif r == 'SKIP': s += 1
        else: f += 1
except (OSError, ValueError):
    f += 1
print(p, f, s)
PY
)
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
