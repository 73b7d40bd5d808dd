#!/bin/bash
# Configures (once) and builds hutch in build/ (or $BUILD), warnings fatal.
# Extra arguments go to `meson setup` the first time.
set -eu
cd "$(dirname "$0")/.."
build=${BUILD:-build}
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" -Dwerror=true "$@" >/dev/null
fi
ninja -C "$build" >/dev/null || ninja -C "$build"
