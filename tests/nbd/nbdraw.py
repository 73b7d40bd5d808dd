#!/usr/bin/python3
# A raw-socket NBD client for the protocol tests: it sends what real
# clients would not (bad magic, unknown options, oversized or overflowing
# requests, half requests) and checks the server's answer.
# Usage: nbdraw.py SOCKET CASE [EXPORT]; exits 0 when the server behaved.
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9
REQMAGIC = 0x25609513
SIMPLE = 0x67446698
STRUCT = 0x668e33ef
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO, OPT_SR, OPT_SET_META = 1, 2, 3, 7, 8, 10
REP_ACK, REP_INFO = 1, 3
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN = 2**31 + 1, 2**31 + 3, 2**31 + 6
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_ZERO, CMD_BS = 5, 6, 7
EPERM, EINVAL, ENOSPC, EOVERFLOW = 1, 22, 28, 75


def die(msg):
    print("nbdraw: " + msg, file=sys.stderr)
    sys.exit(1)


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def recv(self, n):
        b = b""
        while len(b) < n:
            d = self.s.recv(n - len(b))
            if not d:
                die("server closed the connection while %d bytes were expected" % n)
            b += d
        return b

    def closed_by_server(self):
        """True if the server hangs up (EOF or reset) within the timeout."""
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def greeting(self):
        magic, opt, flags = struct.unpack(">QQH", self.recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            die("bad greeting")
        return flags

    def client_flags(self, f=3):
        self.s.sendall(struct.pack(">I", f))

    def option(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def opt_reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        if magic != REPMAGIC:
            die("bad option reply magic %x" % magic)
        return opt, typ, self.recv(ln)

    def replies_until_final(self):
        out = []
        while True:
            opt, typ, data = self.opt_reply()
            out.append((typ, data))
            if typ == REP_ACK or typ >= 2**31:
                return out

    def go(self, name, structured=True, meta=True):
        self.greeting()
        self.client_flags()
        if structured:
            self.option(OPT_SR)
            if self.opt_reply()[1] != REP_ACK:
                die("structured replies refused")
            if meta:
                n = name.encode()
                q = b"base:allocation"
                self.option(OPT_SET_META, struct.pack(">I", len(n)) + n +
                            struct.pack(">II", 1, len(q)) + q)
                self.replies_until_final()
        n = name.encode()
        self.option(OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
        size = None
        for typ, data in self.replies_until_final():
            if typ >= 2**31:
                die("GO failed: %x %r" % (typ, data))
            if typ == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                size = struct.unpack(">Q", data[2:10])[0]
        self.structured = structured
        return size

    def request(self, cmd, off, ln, flags=0, cookie=1, payload=b""):
        self.s.sendall(struct.pack(">IHHQQI", REQMAGIC, flags, cmd, cookie, off, ln) + payload)

    def reply(self):
        """Returns (cookie, error, data) of one complete reply."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            return cookie, err, None
        if magic != STRUCT:
            die("bad reply magic %x" % magic)
        flags, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
        data = self.recv(ln)
        if typ & 0x8000:
            return cookie, struct.unpack(">I", data[:4])[0], None
        if not flags & 1:
            die("multi-chunk replies are not expected from this server")
        return cookie, 0, data


def expect_err(c, want, what):
    cookie, err, _ = c.reply()
    if err != want:
        die("%s: error %d, want %d" % (what, err, want))


def case_bad_magic(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags()
    c.s.sendall(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    if not c.closed_by_server():
        die("server kept a client that sent a bad option magic")


def case_bad_client_flags(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags(0x80000001)
    if not c.closed_by_server():
        die("server kept a client with unknown client flags")


def case_unknown_option(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags()
    c.option(0x7777, b"junk")
    opt, typ, _ = c.opt_reply()
    if opt != 0x7777 or typ != ERR_UNSUP:
        die("unknown option: reply %x for %x, want ERR_UNSUP" % (typ, opt))
    # still usable afterwards
    c.option(OPT_LIST)
    reps = c.replies_until_final()
    if reps[-1][0] != REP_ACK:
        die("LIST after an unknown option failed")
    names = [d[4:4 + struct.unpack(">I", d[:4])[0]].decode() for t, d in reps if t == 2]
    if name not in names:
        die("LIST does not show %s: %r" % (name, names))
    c.option(OPT_ABORT)
    if c.opt_reply()[1] != REP_ACK:
        die("ABORT not acknowledged")
    if not c.closed_by_server():
        die("server did not close after ABORT")


def case_malformed_options(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags()
    # GO whose name length points past the option's end
    c.option(OPT_GO, struct.pack(">I", 1000) + b"abc")
    if c.opt_reply()[1] != ERR_INVALID:
        die("GO with a bad name length: want ERR_INVALID")
    # LIST with data
    c.option(OPT_LIST, b"x")
    if c.opt_reply()[1] != ERR_INVALID:
        die("LIST with data: want ERR_INVALID")
    # SET_META_CONTEXT before STRUCTURED_REPLY
    n = name.encode()
    c.option(OPT_SET_META, struct.pack(">I", len(n)) + n + struct.pack(">I", 0))
    if c.opt_reply()[1] != ERR_INVALID:
        die("SET_META_CONTEXT before STRUCTURED_REPLY: want ERR_INVALID")
    # unknown export
    c.option(OPT_GO, struct.pack(">I", 7) + b"nothere" + struct.pack(">H", 0))
    if c.opt_reply()[1] != ERR_UNKNOWN:
        die("GO of an unknown export: want ERR_UNKNOWN")
    # option too long: the server hangs up rather than buffer it
    c.s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 1 << 30))
    if not c.closed_by_server():
        die("server kept a client announcing a 1 GiB option")


def case_export_name_unknown(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags()
    c.option(OPT_EXPORT_NAME, b"nothere")
    if not c.closed_by_server():
        die("EXPORT_NAME of an unknown export must close the connection")


def case_requests(path, name):
    """Bad requests get the error the spec asks for; the connection lives on."""
    for structured in (False, True):
        c = Conn(path)
        size = c.go(name, structured=structured)
        c.request(99, 0, 512)
        expect_err(c, EINVAL, "unknown command")
        c.request(CMD_READ, 0, 512, flags=0x100)
        expect_err(c, EINVAL, "unknown flag")
        c.request(CMD_READ, size, 1)
        expect_err(c, EINVAL, "read past the end")
        c.request(CMD_READ, 2**64 - 512, 1024)
        expect_err(c, EINVAL, "read whose end overflows")
        c.request(CMD_READ, 0, 0)
        expect_err(c, EINVAL, "zero-length read")
        c.request(CMD_READ, 0, 64 << 20)
        expect_err(c, EOVERFLOW if structured else EINVAL, "64 MiB read")
        c.request(CMD_WRITE, size - 512, 1024, payload=b"x" * 1024)
        expect_err(c, ENOSPC, "write past the end")
        c.request(CMD_WRITE, 2**64 - 512, 1024, payload=b"y" * 1024)
        expect_err(c, ENOSPC, "write whose end overflows")
        c.request(CMD_TRIM, 2**63, 2**32 - 1)
        expect_err(c, ENOSPC, "trim past the end")
        c.request(CMD_FLUSH, 5, 0)
        expect_err(c, EINVAL, "flush with an offset")
        c.request(CMD_BS, 0, 4096)
        expect_err(c, 0 if structured else EINVAL, "block status")
        # still serving: write then read back
        c.request(CMD_WRITE, 4096, 512, payload=b"\x5a" * 512, cookie=7)
        cookie, err, _ = c.reply()
        if err or cookie != 7:
            die("write after bad requests: err %d cookie %d" % (err, cookie))
        c.request(CMD_READ, 4096, 512, cookie=8)
        cookie, err, data = c.reply()
        if not structured:
            data = c.recv(512)
        if err or cookie != 8 or data[-512:] != b"\x5a" * 512:
            die("read back after bad requests failed")
        c.request(CMD_DISC, 0, 0)
        if not c.closed_by_server():
            die("server did not close after DISC")


def case_readonly(path, name):
    c = Conn(path)
    c.go(name)
    c.request(CMD_WRITE, 0, 512, payload=b"z" * 512)
    expect_err(c, EPERM, "write to a read-only export")
    c.request(CMD_ZERO, 0, 512)
    expect_err(c, EPERM, "zero on a read-only export")
    c.request(CMD_READ, 0, 512)
    cookie, err, data = c.reply()
    if err:
        die("read of a read-only export failed: %d" % err)


def case_huge_write(path, name):
    c = Conn(path)
    c.go(name)
    c.request(CMD_WRITE, 0, 0xfffffff0)
    try:
        c.s.sendall(b"a" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass    # the server may hang up before the client is done sending
    cookie, err, _ = c.reply()
    if err == 0:
        die("a 4 GiB write was accepted")
    if not c.closed_by_server():
        die("server kept reading a 4 GiB write payload")


def case_bad_request_magic(path, name):
    c = Conn(path)
    c.go(name)
    c.s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, CMD_READ, 1, 0, 512))
    if not c.closed_by_server():
        die("server kept a client that sent a bad request magic")


def case_half_handshake(path, name):
    c = Conn(path)
    c.greeting()
    c.s.sendall(b"\x00\x00")
    c.s.close()


def case_half_option(path, name):
    c = Conn(path)
    c.greeting()
    c.client_flags()
    c.s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"abc")
    c.s.close()


def case_half_request(path, name):
    c = Conn(path)
    c.go(name)
    c.s.sendall(struct.pack(">IHHQ", REQMAGIC, 0, CMD_READ, 1))
    c.s.close()


def case_half_payload(path, name):
    c = Conn(path)
    c.go(name)
    c.request(CMD_WRITE, 0, 1 << 20, payload=b"q" * 1000)
    c.s.close()


def case_no_read(path, name, count=2000):
    """Floods 1 MiB reads and never reads a reply; returns the connection."""
    c = Conn(path)
    c.go(name)
    c.s.setblocking(False)
    sent = 0
    req = [struct.pack(">IHHQQI", REQMAGIC, 0, CMD_READ, i, 0, 1 << 20) for i in range(count)]
    buf = b"".join(req)
    deadline = time.time() + 5
    while buf and time.time() < deadline:
        try:
            n = c.s.send(buf)
            buf = buf[n:]
            sent += n
        except BlockingIOError:
            time.sleep(0.05)
    return c, sent // 28


def stalled(path, stage):
    c = Conn(path)
    c.s.settimeout(45)
    c.greeting()
    if stage >= 1:
        c.client_flags()
    if stage >= 2:
        c.s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"abc")
    t = time.time()
    if not c.closed_by_server():
        die("server kept a client silent mid-handshake (stage %d) for 45 s" % stage)
    return time.time() - t


def case_stall(path, name):
    """Three clients go silent at different points of the handshake: each is dropped."""
    import threading
    out = []
    ts = [threading.Thread(target=lambda s=s: out.append(stalled(path, s))) for s in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if len(out) != 3:
        die("a stalled client was not dropped")
    print("dropped after %s s" % ", ".join("%.0f" % x for x in sorted(out)))


def case_held_writes(path, name):
    """Large writes being stored do not stop the connection's reading: with
    two 1 MiB writes held in the backend (nbd-testserver --hold-writes), a
    read sent after them is answered."""
    hold = os.environ["HUTCH_HOLD"]
    c = Conn(path)
    c.go(name)
    open(hold, "w").close()
    mib = 1 << 20
    hdr = lambda cmd, cookie, off, ln: struct.pack(">IHHQQI", REQMAGIC, 0, cmd, cookie, off, ln)
    try:
        c.s.sendall(hdr(CMD_WRITE, 1, 0, mib) + b"\xa1" * mib + hdr(CMD_WRITE, 2, mib, mib) + b"\xb2" * mib +
                    hdr(CMD_READ, 3, 4 * mib, 4096))
        cookie, err, _ = c.reply()
    except socket.timeout:
        die("the server stopped reading while two writes were held: a read sent after them got no reply")
    if cookie != 3 or err:
        die("first reply: cookie %d error %d, want the read's (3) while the writes are held" % (cookie, err))
    os.unlink(hold)
    done = sorted(c.reply()[:2] for _ in range(2))
    if done != [(1, 0), (2, 0)]:
        die("writes after release: %r" % done)
    c.request(CMD_READ, 0, 2 * mib, cookie=4)
    _, err, data = c.reply()
    if err or data[8:] != b"\xa1" * mib + b"\xb2" * mib:	# after the chunk's offset
        die("the held writes did not land")


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    path, case = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "disk"
    if case == "no_read":
        # hold the flood open for the given number of seconds
        c, n = case_no_read(path, name)
        print(n, flush=True)
        time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 3)
        sys.exit(0)
    CASES[case](path, name)
