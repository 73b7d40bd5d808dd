#!/usr/bin/python3
"""Writes known patterns into an NBD export and flushes now and then, logging
each write before it is sent and each flush after it is acknowledged, until
it is killed or the server goes away. check mode reads the export back and
checks it against such a log. Used by kill9.sh.

Each region is REGION bytes at an offset that is not chunk-aligned, so writes
land in partial chunks; every 8-byte word of a region written with
generation g holds (region << 32 | g)."""
import random
import struct
import sys

import nbd

REGION = 256 * 1024
SKEW = 12 * 1024
NREGIONS = 200


def region_bytes(r, g):
    return struct.pack('<Q', r << 32 | g) * (REGION // 8)


def offset(r):
    return SKEW + r * REGION


def read_log(logpath):
    """Per region, the generations it may hold now, and the last one written.

    A flush pins a region to its last write; a crash (a 'C' line, written
    by the test after each kill) leaves it at its last flushed generation
    or any generation written since."""
    allowed, pending, last = {}, {}, {}
    with open(logpath) as log:
        for line in log:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == 'W' and len(parts) == 3:
                r, g = int(parts[1]), int(parts[2])
                pending.setdefault(r, []).append(g)
                last[r] = g
            elif parts[0] == 'F':
                for r, gs in pending.items():
                    allowed[r] = {gs[-1]}
                pending = {}
            elif parts[0] == 'C':
                for r, gs in pending.items():
                    allowed.setdefault(r, {0}).update(gs)
                pending = {}
    return allowed, last


def write(uri, logpath, seed):
    rnd = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    _, gen = read_log(logpath)
    with open(logpath, 'a', buffering=1) as log:
        while True:
            r = rnd.randrange(NREGIONS)
            g = gen.get(r, 0) + 1
            gen[r] = g
            log.write(f'W {r} {g}\n')
            h.pwrite(region_bytes(r, g), offset(r))
            if rnd.random() < 0.15:
                h.flush()
                log.write('F\n')


def check(uri, logpath):
    allowed, _ = read_log(logpath)
    h = nbd.NBD()
    h.connect_uri(uri)
    bad = 0
    for r in range(NREGIONS):
        data = h.pread(REGION, offset(r))
        words = set(struct.unpack(f'<{REGION // 8}Q', data))
        if len(words) != 1:
            print(f'region {r}: torn ({len(words)} different generations)')
            bad += 1
            continue
        word = words.pop()
        g = word & 0xffffffff
        ok = allowed.get(r, {0})
        if word != 0 and word >> 32 != r:
            print(f'region {r}: holds data of region {word >> 32}')
            bad += 1
        elif g not in ok:
            print(f'region {r}: generation {g}, expected one of {sorted(ok)}')
            bad += 1
    print(f'checked {NREGIONS} regions: {bad} bad')
    return 1 if bad else 0


if __name__ == '__main__':
    if sys.argv[1] == 'write':
        try:
            write(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        except nbd.Error:
            sys.exit(0)     # the server was killed under us: expected
    else:
        sys.exit(check(sys.argv[2], sys.argv[3]))
