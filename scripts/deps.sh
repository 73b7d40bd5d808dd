#!/bin/bash
# Installs the Debian 12 packages hutch needs to build, run and test, when
# any is missing. With --print, only lists them.
set -eu

BUILD_PKGS="meson ninja-build pkg-config gcc clang liburing-dev libfuse3-dev libnbd-dev
	libxxhash-dev libinih-dev libjson-c-dev libssl-dev"
RUN_PKGS="fuse3 qemu-utils qemu-system-x86 libnbd-bin e2fsprogs cpio xz-utils
	openssh-client openssh-server util-linux procps"
TEST_PKGS="nbdkit fio python3 python3-libnbd jq socat xfsprogs asciinema bc iproute2"

pkgs="$BUILD_PKGS $RUN_PKGS $TEST_PKGS"
if [ "${1:-}" = "--print" ]; then
	echo $pkgs
	exit 0
fi

missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
