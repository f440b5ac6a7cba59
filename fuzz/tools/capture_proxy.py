#!/usr/bin/env python3
"""Unix-socket proxy that records client->server bytes per connection
(conn-NNN files). Usage: capture_proxy.py LISTEN.sock TARGET.sock OUTDIR.
Used to capture the cap-* seeds; see fuzz/README.md."""
import socket, threading, sys, os, itertools
listen, target, outdir = sys.argv[1:4]
if os.path.exists(listen): os.unlink(listen)
srv = socket.socket(socket.AF_UNIX); srv.bind(listen); srv.listen(8)
ctr = itertools.count()
def pump(a, b, log):
    while True:
        d = a.recv(65536)
        if not d: break
        if log is not None: log.write(d); log.flush()
        b.sendall(d)
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
while True:
    c, _ = srv.accept()
    s = socket.socket(socket.AF_UNIX); s.connect(target)
    log = open(os.path.join(outdir, "conn-%03d" % next(ctr)), "wb")
    threading.Thread(target=pump, args=(c, s, log), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, None), daemon=True).start()
