# Helpers for the hutch-shell tests; source after ../functions.sh.
#
# start_sshd runs scripts/sshd-up.sh: a real sshd on a free loopback port
# with its own config and host key under $HUTCH_HOME/sshd, logging in as
# the account running the test (root here), every key forced to hutch-shell.

SSHD_BIN=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$SSHD_BIN" ] || skip "needs sshd (openssh-server; its service need not run)"
requires ssh -V
command -v ssh-keygen >/dev/null || skip "needs ssh-keygen"
export PATH="$HUTCH_BUILD/shell:$PATH"

# start_sshd: sets SSH_PORT and SSH_LOGIN.
start_sshd() {
	"$HUTCH_SRC/scripts/sshd-up.sh" --no-key >"$HUTCH_HOME/sshd-up.out" 2>&1 ||
		{ cat "$HUTCH_HOME/sshd-up.out" >&2; fail "scripts/sshd-up.sh failed"; }
	cleanup_fn "$HUTCH_SRC/scripts/sshd-up.sh" --stop
	SSH_PORT=$(cat "$HUTCH_HOME/sshd/port")
	SSH_LOGIN=$(id -un)
	grep -q "ssh -p $SSH_PORT" "$HUTCH_HOME/sshd-up.out" || fail "sshd-up.sh did not print the ssh command"
}

# make_key NAME: a new ed25519 key pair in $HUTCH_HOME/keys/NAME{,.pub}.
make_key() {
	mkdir -p "$HUTCH_HOME/keys"
	ssh-keygen -q -t ed25519 -N '' -C "$1@test" -f "$HUTCH_HOME/keys/$1"
}

# make_user NAME: a key and `hutch user add NAME`.
make_user() {
	make_key "$1"
	hutch user add "$1" --key "$HUTCH_HOME/keys/$1.pub" >/dev/null || fail "hutch user add $1"
}

# ssh_opts KEYNAME: the client options for a key.
ssh_opts() {
	echo -F /dev/null -i "$HUTCH_HOME/keys/$1" -p "$SSH_PORT" -o IdentitiesOnly=yes \
		-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o LogLevel=ERROR -o ConnectTimeout=20
}

# ssh_as and ssh_cmd give up after $SSH_TIMEOUT s (exit 124): no test hangs.
# ssh_as KEYNAME [SSH ARGS/COMMAND]...: ssh to hutch with that key.
ssh_as() {
	local k=$1; shift
	# shellcheck disable=SC2046
	timeout "${SSH_TIMEOUT:-120}" ssh $(ssh_opts "$k") "$@" "$SSH_LOGIN@127.0.0.1"
}

# ssh_cmd KEYNAME COMMAND: run COMMAND through hutch (one string, as typed).
ssh_cmd() {
	local k=$1; shift
	# shellcheck disable=SC2046
	timeout "${SSH_TIMEOUT:-120}" ssh $(ssh_opts "$k") "$SSH_LOGIN@127.0.0.1" "$@"
}

# audit_json: the audit log as a JSON array.
audit_json() {
	hutch audit show --json
}
