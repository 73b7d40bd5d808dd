# The start every VM benchmark shares; source it from bench/*.sh with
# HELP_LAST set to the last line of the script's header comment:
# --help prints that header, HUTCH_BUILD is found (the first build*/ with
# hutch-vmd when unset), and tests/functions.sh gives a fresh HUTCH_HOME
# whose daemons are killed on exit.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
	sed -n "2,${HELP_LAST}p" "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
if [ -z "${HUTCH_BUILD:-}" ]; then
	for d in "$SRC"/build*/; do
		[ -x "$d/vmd/hutch-vmd" ] && [ -x "$d/cli/hutch" ] && { HUTCH_BUILD=${d%/}; break; }
	done
fi
[ -n "${HUTCH_BUILD:-}" ] || { echo "set HUTCH_BUILD to a meson build folder with vmd/hutch-vmd" >&2; exit 1; }
export HUTCH_BUILD
. "$SRC/tests/functions.sh"
. "$SRC/tests/vm/vm-functions.sh"
