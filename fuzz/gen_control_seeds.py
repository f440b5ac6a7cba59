#!/usr/bin/env python3
"""Writes the hand-made seeds of the control-plane targets (keyval,
qmp_stream) into corpus/<target>/. Re-run after editing; files are
overwritten, nothing else is touched.

keyval: byte 0 = mode (0: --nbd-server, 1: --object, 2: --export,
3: --blockdev implied key; 4: whole argv split at NUL), rest = text.
qmp_stream: byte 0 bit 0 = pretty, byte 1 = split seed (0: one read),
rest = what a QMP client sends.
"""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

NBD, OBJ, EXP, BLK, ARGV = range(5)
keyval = {
    "blk-file": (BLK, "file,node-name=f,filename=disk.img,cache.direct=on,aio=io_uring,locking=off"),
    "blk-null": (BLK, "null-co,node-name=n0,size=1.5G,read-zeroes=on,latency-ns=0x10"),
    "blk-raw-nested": (BLK, "driver=raw,node-name=r,offset=4k,size=1M,file.driver=file,"
                            "file.filename=a,,b.img,file.cache.no-flush=yes"),
    "blk-raw-ref": (BLK, "raw,node-name=disk,file=f,read-only=on,detect-zeroes=unmap,discard=unmap"),
    "blk-json": (BLK, '{"driver":"file","node-name":"f","filename":"disk.img","cache":{"direct":true}}'),
    "blk-json-nested": (BLK, '{"driver":"raw","node-name":"r","file":{"driver":"null-co","size":1048576}}'),
    "obj-iothread": (OBJ, "iothread,id=io0,poll-max-ns=0x8000,poll-grow=2,aio-max-batch=010,cpu=1"),
    "obj-json": (OBJ, '{"qom-type":"iothread","id":"io1","poll-max-ns":0}'),
    "obj-secret": (OBJ, "secret,id=sec0,data=letmein"),
    "exp-nbd": (EXP, "nbd,id=e0,node-name=disk,name=disk,writable=on,description=a,,b"),
    "exp-iothreads": (EXP, "type=nbd,id=e1,node-name=disk,iothread.0=io0,iothread.1=io1,"
                           "fixed-iothread=off,allocation-depth=on,bitmaps.0=bitmap0"),
    "exp-json": (EXP, '{"type":"nbd","id":"e0","node-name":"disk","name":"disk","writable":true,'
                      '"allocation-depth":true,"bitmaps":["bitmap0"]}'),
    "nbd-unix": (NBD, "addr.type=unix,addr.path=qsd.sock"),
    "nbd-inet": (NBD, "addr.type=inet,addr.host=127.0.0.1,addr.port=10809,max-connections=4,"
                      "handshake-max-seconds=0"),
    "nbd-json": (NBD, '{"addr":{"type":"unix","path":"qsd.sock"},"max-connections":0}'),
    "err-mixed-list": (NBD, "a.0=x,a.1=y,a.b=z"),
    "err-gap": (NBD, "a.0=x,a.2=y"),
    "err-inconsistent": (NBD, "a=1,a.b=2"),
    "err-json-trailing": (BLK, '{"driver":"file"} {}'),
    "err-json-dup": (BLK, '{"driver":"file","driver":"raw"}'),
    "escapes": (BLK, "null-co,node-name=x,,y,,,size=,,"),
}
for name, (mode, text) in keyval.items():
    write("keyval", name, bytes([mode]) + text.encode())

argvs = {
    "argv-qsd": [
        "--blockdev", "driver=file,filename=disk.qcow2,node-name=f",
        "--blockdev", "driver=raw,file=f,node-name=disk",
        "--nbd-server", "addr.type=unix,addr.path=qsd.sock",
        "--export", '{"type":"nbd","id":"e0","node-name":"disk","name":"disk","writable":true}',
    ],
    "argv-monitor": [
        "--chardev", "socket,id=mon0,path=qmp.sock,server=on,wait=off",
        "--monitor", "chardev=mon0,pretty=on",
        "--object", "iothread,id=io0",
        "--pidfile", "qsd.pid", "--daemonize", "-T", "nbd_*",
    ],
    "argv-inline-abbrev": [
        "--block=null-co,node-name=n", "--nbd=addr.type=inet,addr.host=::,addr.port=0",
        "--exp", "nbd,id=e,node-name=n", "-Tfoo", "--",
    ],
    "argv-tcp-chardev": [
        "--chardev", "socket,id=c,host=127.0.0.1,port=4444,server,nowait",
        "--monitor", "c",
    ],
    "argv-help": ["--object", "iothread,id=x", "-h"],
}
for name, argv in argvs.items():
    write("keyval", name, bytes([ARGV]) + b"\0".join(a.encode() for a in argv))

def cmd(execute, arguments=None, id=None):
    m = {"execute": execute}
    if arguments is not None:
        m["arguments"] = arguments
    if id is not None:
        m["id"] = id
    return json.dumps(m).encode() + b"\r\n"

caps = cmd("qmp_capabilities")
session = b"".join([
    caps,
    cmd("query-version", id="v1"),
    cmd("blockdev-add", {"driver": "file", "node-name": "f", "filename": "disk.img"}, id=1),
    cmd("blockdev-add", {"driver": "null-co", "node-name": "n", "size": 1073741824}, id=2),
    cmd("blockdev-add", {"driver": "raw", "node-name": "disk", "file": "f"}, id=3),
    cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "qsd.sock"}}}, id=4),
    cmd("block-export-add", {"type": "nbd", "id": "e0", "node-name": "disk", "name": "disk",
                             "writable": True, "allocation-depth": True}, id=5),
    cmd("query-block-exports"),
    cmd("block-export-del", {"id": "e0", "mode": "hard"}),
    cmd("nbd-server-stop"),
    cmd("quit"),
])
qmp = {
    "cap-session": (0, 0, session),
    "cap-session-split": (0, 7, session),
    "cap-session-pretty": (1, 0, session),
    "oob": (0, 0, cmd("qmp_capabilities", {"enable": ["oob"]}) +
            b'{"exec-oob": "query-version", "id": 9}\n{"execute": "x", "exec-oob": "y"}\n'),
    "before-caps": (0, 0, cmd("query-version") + cmd("qmp_capabilities", {"enable": ["x"]}) + caps + caps),
    "malformed": (0, 0, caps + b'{"execute": "query-version"\n}}]]\n{"execute": 1}\n[1, 2]\n"str"\n'
                  b"{'execute': 'echo', 'arguments': {'a': 'it\\'s'}}\n"
                  b'{"execute": "q", "arguments": 5, "id": []}\n{"execute": "q", "extra": 0}\n'
                  b'{"a": 1, "a": 2}\nnul\x00l\n\xff{"execute": "echo", "arguments": {"x": tru}}\n'
                  b'{"execute": "echo", "arguments": {"x": 01}}\n{"execute"\x01: 1}\n'),
    "echo-values": (0, 0, caps + b'{"execute": "echo", "id": {"n": -0.0}, "arguments": {'
                    b'"f": 1.5e300, "g": 1e400, "h": -2.5e-310, "i": -9223372036854775808, '
                    b'"u": 18446744073709551615, "big": 123456789012345678901234567890, '
                    b'"s": "\\u00e9\\ud83d\\ude00\\t\\/", "sq": \'x\\\'y\', "nul": "\\u0000\xc0\x80", '
                    b'"n": null, "b": [true, false, [], {}], "utf8": "\xc3\xa9\xf0\x9f\x98\x80"}}\n'),
    "bad-unicode": (0, 0, caps + b'{"execute": "echo", "arguments": {"a": "\\ud800", '
                    b'"b": "\\uFFFF", "c": "\xed\xa0\x80", "d": "\xef\xbf\xbe"}}\n'),
    "deep": (0, 3, caps + b'{"execute": "echo", "arguments": {"a": ' + b"[" * 200 + b"]" * 200 + b"}}\n"
             + b"[" * 1030 + b"\n"),
    "unterminated": (0, 0, caps + b'{"execute": "query-version", "arguments": {"a": "abc'),
}
for name, (flags, seed, data) in qmp.items():
    write("qmp_stream", name, bytes([flags, seed]) + data)
