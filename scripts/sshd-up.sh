#!/bin/bash
# Starts an sshd for hutch on a loopback port, with its own config and host
# key under $HUTCH_HOME/sshd; the host's own sshd is never touched. Adds the
# invoking user's public key (if there is one) as a hutch user, and prints
# the `ssh` command that lands in that user's VM.
set -eu

usage() {
	cat <<EOF
Usage: scripts/sshd-up.sh [--port N] [--login ACCOUNT] [--key FILE.pub | --no-key] [--stop]
Start an sshd for hutch on 127.0.0.1 with its own config and host key under
\$HUTCH_HOME/sshd (HUTCH_HOME=${HUTCH_HOME:-/var/lib/hutch}); the host's sshd is left alone.

  --port N         listen on 127.0.0.1:N (default: \$HUTCH_SSH_PORT, else a free port)
  --login ACCOUNT  the unix account people log in as (default: hutch when that
                   account exists, else the account running this script)
  --key FILE.pub   add this public key for the invoking user (default: their
                   ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub)
  --no-key         do not add the invoking user's public key
  --stop           stop this sshd

Each key in \$HUTCH_HOME/ssh/authorized_keys (written by \`hutch user ...\`) is
forced to hutch-shell, which carries the session into the user's VM.
hutch-storaged and hutch-vmd must run for a login to reach a VM.
EOF
}

port=${HUTCH_SSH_PORT:-} login="" add_key=1 stop=0 keyfile="" given_key=""
while [ $# -gt 0 ]; do
	case "$1" in
	--port) port=$2; shift 2 ;;
	--login) login=$2; shift 2 ;;
	--no-key) add_key=0; shift ;;
	--key) keyfile=$2; given_key=1; shift 2 ;;
	--stop) stop=1; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "sshd-up.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done

HUTCH_HOME=${HUTCH_HOME:-/var/lib/hutch}
HUTCH_HOME=$(cd "$HUTCH_HOME" && pwd) || { echo "sshd-up.sh: no directory $HUTCH_HOME" >&2; exit 1; }
export HUTCH_HOME
dir=$HUTCH_HOME/sshd
pidfile=$dir/sshd.pid

if [ "$stop" = 1 ]; then
	pid=$(cat "$pidfile" 2>/dev/null || true)
	if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
		echo "stopped the hutch sshd (pid $pid)"
	fi
	rm -f "$pidfile"
	exit 0
fi

SSHD=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$SSHD" ] || { echo "sshd-up.sh: no sshd; install openssh-server (its service need not run)" >&2; exit 1; }
command -v hutch >/dev/null || { echo "sshd-up.sh: hutch is not on PATH (build it, or add the build's cli/ to PATH)" >&2; exit 1; }

mkdir -p "$dir"
chmod 0755 "$dir"
[ -f "$dir/ssh_host_ed25519_key" ] ||
	ssh-keygen -q -t ed25519 -N '' -C "hutch sshd" -f "$dir/ssh_host_ed25519_key"

if [ -z "$login" ]; then
	if id hutch >/dev/null 2>&1; then login=hutch; else login=$(id -un); fi
fi
id "$login" >/dev/null 2>&1 || { echo "sshd-up.sh: no account '$login'" >&2; exit 1; }

# The port of the last run, so the printed ssh command keeps working.
[ -n "$port" ] || [ ! -s "$dir/port" ] || port=$(cat "$dir/port")
if [ -z "$port" ]; then
	port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

# The keys file exists even before the first `hutch user add`.
mkdir -p "$HUTCH_HOME/ssh"
[ -f "$HUTCH_HOME/ssh/authorized_keys" ] || : >"$HUTCH_HOME/ssh/authorized_keys"

root_line=""
[ "$(id -u "$login")" = 0 ] && root_line="PermitRootLogin forced-commands-only"
cat >"$dir/sshd_config" <<EOF
# hutch's own sshd (scripts/sshd-up.sh); the host's sshd_config is not read.
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
PidFile $pidfile
AllowUsers $login
$root_line
AuthorizedKeysFile $HUTCH_HOME/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The state directory may sit under /tmp (world-writable parents).
StrictModes no
# Every key line says restrict,pty; refuse these for any other line too.
AllowAgentForwarding no
AllowTcpForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PermitUserRC no
PermitUserEnvironment no
# ssh -o SetEnv=HUTCH_VM=NAME picks one of the user's VMs (scp, sftp).
AcceptEnv HUTCH_VM
Subsystem sftp /usr/lib/openssh/sftp-server
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
EOF

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	kill "$(cat "$pidfile")" 2>/dev/null || true
	sleep 0.3
fi
# sshd needs its privilege separation directory (the host's own sshd makes it).
[ -d /run/sshd ] || mkdir -p -m 0755 /run/sshd 2>/dev/null || true
"$SSHD" -t -f "$dir/sshd_config" || { echo "sshd-up.sh: sshd refuses $dir/sshd_config" >&2; exit 1; }
"$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
[ -s "$pidfile" ] || { echo "sshd-up.sh: sshd did not start; see $dir/sshd.log" >&2; tail -5 "$dir/sshd.log" >&2; exit 1; }
echo "$port" >"$dir/port"

who=""
[ "$add_key" = 1 ] || keyfile=""
if [ "$add_key" = 1 ]; then
	inv=${SUDO_USER:-$(id -un)}
	inv_home=$(getent passwd "$inv" | cut -d: -f6)
	for k in id_ed25519 id_ecdsa id_rsa; do
		[ -z "$keyfile" ] || break
		if [ -f "$inv_home/.ssh/$k.pub" ]; then keyfile=$inv_home/.ssh/$k.pub; fi
	done
	[ -z "$keyfile" ] || [ -f "$keyfile" ] || { echo "sshd-up.sh: no key file $keyfile" >&2; exit 1; }
	# A hutch user name: lower case, letters, digits, '_' and '-'.
	who=$(printf '%s' "$inv" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_-' '-')
	case "$who" in [a-z]*) ;; *) who="u$who" ;; esac
	if [ -n "$keyfile" ]; then
		fp=$(ssh-keygen -lf "$keyfile" | awk '{print $2}')
		if ! hutch user list --json | grep -qF "\"$fp\""; then
			if hutch user list --json | grep -q "\"name\": *\"$who\""; then
				hutch user key add "$who" "$keyfile" >/dev/null
			else
				hutch user add "$who" --key "$keyfile" >/dev/null
			fi
		fi
	fi
fi

echo "hutch sshd listening on 127.0.0.1:$port (config $dir/sshd_config, log $dir/sshd.log, pid $(cat "$pidfile"))"
if [ -n "$keyfile" ]; then
	echo "your key $keyfile is hutch user '$who'; land in your VM with:"
	if [ -n "$given_key" ]; then
		echo "  ssh -p $port -i ${keyfile%.pub} $login@127.0.0.1"
	else
		echo "  ssh -p $port $login@127.0.0.1"
	fi
else
	echo "add someone with \`hutch user add NAME --key FILE.pub\`, then they land in their VM with:"
	echo "  ssh -p $port -i THEIR_KEY $login@127.0.0.1"
fi
