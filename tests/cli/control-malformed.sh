#!/bin/bash
# Description: malformed control messages get error replies; the connection stays usable and the daemon lives.
. "$(dirname "$0")/../functions.sh"

start_storaged

# All on one connection: each bad line gets an error, then a ping still works.
out=$(ctl_raw \
	'this is not json' \
	'{"op":' \
	'[1,2,3]' \
	'"just a string"' \
	'{"no_op":1}' \
	'{"op":42}' \
	'{"op":"no.such.op"}' \
	'{"op":"image.create"}' \
	'{"op":"image.create","name":"x"}' \
	'{"op":"image.create","name":"x","size":"big"}' \
	'{"op":"image.create","name":"x","size":-5}' \
	'{"op":"image.create","name":7,"size":1}' \
	'{"op":"image.create","name":"x","size":1.5}' \
	'{"op":"image.list","usage":"yes"}' \
	'{"op":"image.info","name":"ghost"}' \
	'{"op":"image.rm","name":"ghost@snap"}' \
	'{"op":"image.rename","old":"ghost","new":"spirit"}' \
	'{"op":"image.fork","src":"ghost","dst":"g2"}' \
	'{"op":"image.snapshot","name":"ghost","snap":"s"}' \
	'{"op":"image.resize","name":"ghost","size":1024}' \
	'{"op":"ping"} trailing' \
	'{"op":"ping"}') || fail "connection dropped: $out"

n=$(grep -c '"ok":false' <<<"$out")
assert_eq "$n" 21 "error replies"
assert_eq "$(tail -n 1 <<<"$out" | grep -c '"ok":true')" 1 "ping after errors"
assert_contains "$out" '"errno":"EINVAL","error":"malformed JSON' "malformed JSON"
assert_contains "$out" 'must be a JSON object' "non-object"
assert_contains "$out" '"errno":"EOPNOTSUPP","error":"unknown op' "unknown op"
assert_contains "$out" 'missing argument \\"name\\"' "missing argument"
assert_contains "$out" 'argument \\"size\\" must be a non-negative integer' "mistyped argument"
assert_contains "$out" '"errno":"ENOENT","error":"no image named .ghost.' "unknown image"

# An over-long line (over 1 MiB) is refused and the connection still works.
out=$(/usr/bin/python3 - "$HUTCH_HOME/run/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')
s.sendall(b'{"op":"ping","pad":"' + b'x' * (2 << 20) + b'"}\n')
print(f.readline().decode(), end='')
s.sendall(b'{"op":"ping"}\n')
print(f.readline().decode(), end='')
PY
) || fail "long line: $out"
assert_contains "$(head -n1 <<<"$out")" '"ok":false.*longer than' "long line refused"
assert_contains "$(tail -n1 <<<"$out")" '"ok":true' "ping after long line"

# An over-long last line without a newline, then end of stream: one error
# reply, then the server closes (it must not keep answering the cut line).
out=$(timeout 20 /usr/bin/python3 - "$HUTCH_HOME/run/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'x' * (2 << 20)); s.shutdown(socket.SHUT_WR)
data = b''
while len(data) < (1 << 20):
    d = s.recv(65536)
    if not d:
        break
    data += d
print(data.count(b'\n'))
PY
) || fail "over-long line at end of stream: no end"
assert_eq "$out" 1 "replies to an over-long line at end of stream"

# A request dribbled one byte at a time, two requests in one write, CRLF
# line ends, and a last request without a newline before the client closes
# its side: each gets its reply.
out=$(/usr/bin/python3 - "$HUTCH_HOME/run/control.sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')
for b in b'{"op":"ping"}\n':
    s.sendall(bytes([b])); time.sleep(0.002)
print(f.readline().decode(), end='')
s.sendall(b'{"op":"ping"}\n{"op":"image.info","name":"ghost"}\r\n')
print(f.readline().decode(), end='')
print(f.readline().decode(), end='')
s.sendall(b'{"op":"ping"}')
s.shutdown(socket.SHUT_WR)
print(f.readline().decode(), end='')
PY
) || fail "framing: $out"
assert_eq "$(grep -c '"ok":true' <<<"$out")" 3 "pings answered: $out"
assert_eq "$(grep -c '"errno":"ENOENT"' <<<"$out")" 1 "CRLF request answered"

# Binary garbage and an abrupt close do not hurt the daemon.
head -c 100000 /dev/urandom | /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); s.close()' \
	"$HUTCH_HOME/run/control.sock"
# Many connections opened and dropped mid-request.
for i in $(seq 50); do
	/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"{\"op\":\"image.li"); s.close()' \
		"$HUTCH_HOME/run/control.sock"
done
kill -0 "$STORAGED_PID" || fail "daemon died"
hutch image list >/dev/null || fail "daemon unusable after garbage"
exit 0
