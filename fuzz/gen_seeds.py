#!/usr/bin/env python3
"""Write hand-made seed inputs (from the NBD spec, doc/proto.md) into
corpus/. Real captured client traffic lives next to them as cap-*.
Re-running is idempotent. Layouts are documented in each target's header."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
OPTS = 0x49484156454F5054
REQ, EXTREQ = 0x25609513, 0x21E41C71

def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# ---- handshake: [config byte][split byte] + client stream -------------
def opt(code, payload=b""):
    return struct.pack(">QII", OPTS, code, len(payload)) + payload
def name(s):
    s = s.encode(); return struct.pack(">I", len(s)) + s
def info(n, reqs):
    return name(n) + struct.pack(">H", len(reqs)) + b"".join(struct.pack(">H", r) for r in reqs)
def meta(n, qs):
    return name(n) + struct.pack(">I", len(qs)) + b"".join(name(q) for q in qs)
FLAGS = struct.pack(">I", 3)
SR, LIST, INFO, GO, ABORT, EXPORT, LISTMETA, SETMETA, EXT, TLS = 8, 3, 6, 7, 2, 1, 9, 10, 11, 5

hs = {
    # qemu-img/nbdinfo style GO with extended headers and base:allocation
    "go-ext-meta": FLAGS + opt(EXT) + opt(SETMETA, meta("disk", ["base:allocation"])) + opt(GO, info("disk", [3, 1])),
    "go-sr-meta": FLAGS + opt(SR) + opt(SETMETA, meta("disk", ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:bitmap0"])) + opt(GO, info("disk", [3])),
    "go-default": FLAGS + opt(SR) + opt(GO, info("", [3])),
    "list": FLAGS + opt(LIST) + opt(ABORT),
    "info-then-go": FLAGS + opt(INFO, info("ro", [1, 2, 3])) + opt(GO, info("ro", [])),
    "listmeta-all": FLAGS + opt(SR) + opt(LISTMETA, meta("disk", [])) + opt(LISTMETA, meta("disk", ["qemu:", "base:"])) + opt(ABORT),
    "abort": FLAGS + opt(ABORT),
    "export-name": FLAGS + opt(EXPORT, b"disk"),
    "export-name-oldclient": struct.pack(">I", 0) + opt(EXPORT, b"ro"),
    "starttls-unknown": FLAGS + opt(TLS) + opt(42, b"xyz") + opt(SR, b"x") + opt(ABORT),
    "go-unknown": FLAGS + opt(GO, info("nope", [3])) + opt(INFO, b"\0\0") + opt(ABORT),
    "go-trailing-request": FLAGS + opt(EXT) + opt(GO, info("disk", [3])) + struct.pack(">IHHQQQ", EXTREQ, 0, 0, 1, 0, 512),
}
for k, v in hs.items():
    put("nbd_handshake", "spec-" + k, b"\x00\x00" + v)
    put("nbd_handshake", "spec-split-" + k, b"\x85\x07" + v)  # 1000-byte buffer, split

# ---- request: [mode][3 x 16-byte session] + request stream ------------
def session(structured, size, tflags, maxp, nmeta):
    return struct.pack(">?QHIB", structured, size, tflags, maxp, nmeta)[:16]
# arbitrary reads little-endian ints; byte order here only changes values.
S = session(1, 1 << 30, 0x1FFF, 32 << 20, 3) + session(0, 65536, 0x3, 1 << 20, 0) + session(1, 1 << 20, 0x10ED, 4096, 1)
def creq(flags, cmd, cookie, off, ln): return struct.pack(">IHHQQI", REQ, flags, cmd, cookie, off, ln)
def xreq(flags, cmd, cookie, off, ln): return struct.pack(">IHHQQQ", EXTREQ, flags, cmd, cookie, off, ln)
compact = creq(0, 0, 1, 0, 4096) + creq(1, 1, 2, 4096, 8) + b"A" * 8 + creq(0, 3, 3, 0, 0) + creq(8, 7, 4, 0, 1 << 20) + creq(2, 6, 5, 0, 65536) + creq(0, 4, 6, 512, 512) + creq(0, 5, 7, 0, 4096) + creq(0, 2, 8, 0, 0)
extended = xreq(0, 0, 1, 0, 4096) + xreq(0, 1, 2, 0, 8) + b"B" * 8 + xreq(0x20, 7, 3, 0, 16) + struct.pack(">QII", 1 << 20, 0, 1) + xreq(0x21, 1, 4, 0, 4) + b"CCCC" + xreq(0x10, 6, 5, 0, 4096) + xreq(0, 2, 6, 0, 0)
put("nbd_request", "spec-compact", b"\x00" + S + compact)
put("nbd_request", "spec-extended", b"\x01" + S + extended)
put("nbd_request", "spec-write-huge", b"\x00" + S + creq(0, 1, 9, 0, 0xFFFFFFFF))
put("nbd_request", "spec-ext-huge", b"\x01" + S + xreq(0x20, 0, 9, 1 << 62, 1 << 40))
