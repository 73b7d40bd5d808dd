#!/bin/bash
# Description: thousands of mutated control requests (wrong types, odd values, bad names) each get one reply; the daemon survives.
. "$(dirname "$0")/../functions.sh"

start_storaged
hutch image create base 8M >/dev/null || fail "create"
hutch image snapshot base s >/dev/null || fail "snapshot"

"$PYTHON" - "$HUTCH_HOME/run/control.sock" "${FUZZ_SEED:-1}" <<'PY' || fail "fuzz run failed"
import json, random, socket, sys
rnd = random.Random(int(sys.argv[2]))
ops = {
    "ping": [], "store.stats": [], "image.list": ["usage"],
    "image.create": ["name", "size"], "image.info": ["name"], "image.rm": ["name"],
    "image.resize": ["name", "size"], "image.rename": ["old", "new"],
    "image.snapshot": ["name", "snap"], "image.fork": ["src", "dst"],
    "image.clone_range": ["src", "src_offset", "dst", "dst_offset", "length"],
}
names = ["base", "base@s", "x", "y@z", "", "a/b", "..", "-x", "n" * 129, "n" * 128,
         "base@", "@s", "ünï", "x.snap", "a@b@c", "f1", "f2"]
def value():
    return rnd.choice([
        rnd.choice(names), rnd.randint(-2**63, 2**64 - 1), rnd.choice([0, 1, 4096, 65536, 2**40, 2**50, 2**64 - 1]),
        -1, 1.5, True, False, None, [], {}, [1, "a"], {"k": "v"}, "1G", "\u0000", "x" * 5000])
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rb")
replies = 0
for i in range(3000):
    op = rnd.choice(list(ops) + ["nope", "", "image.", "store.gc2"])
    req = {"op": op}
    for a in ops.get(op, []) + rnd.sample(["name", "size", "junk", "op2"], rnd.randint(0, 2)):
        if rnd.random() < 0.85:
            req[a] = rnd.choice(names) if a in ("name", "old", "new", "snap", "src", "dst") and rnd.random() < 0.6 else value()
    if op in ("image.create", "image.resize") and rnd.random() < 0.5:
        req["size"] = rnd.choice([1, 4096, 1 << 20, 8 << 20])  # keep many valid
    line = json.dumps(req)
    if rnd.random() < 0.05:  # damage the text itself
        k = rnd.randrange(len(line)); line = line[:k] + rnd.choice(["", "\"", "}", "{", "\\", "\x01"]) + line[k + 1:]
    s.sendall(line.encode("utf-8", "surrogatepass") + b"\n")
    while True:
        r = f.readline()
        if not r:
            sys.exit("daemon closed the connection after request %d: %s" % (i, line[:200]))
        o = json.loads(r)
        if "ok" in o:
            break
    if not o["ok"] and ("errno" not in o or "error" not in o):
        sys.exit("error reply without errno/error: %r" % o)
    replies += 1
print("replies:", replies)
PY
kill -0 "$STORAGED_PID" || fail "daemon died"
hutch image list >/dev/null || fail "daemon unusable after the fuzz run"
stop_storaged
# In a sanitizer build, undefined behaviour in the control path is a failure.
grep -E "(storaged-control|storaged-main|ctl|config)\.c:[0-9]+:[0-9]+: runtime error" "$HUTCH_HOME/storaged.log" &&
	fail "undefined behaviour in the control path"
exit 0
