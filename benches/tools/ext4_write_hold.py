#!/usr/bin/python3
"""How long ext4 holds each buffered write, per writer.

Pairs `ext4:ext4_da_write_begin` with the next `ext4_da_write_end` of the
same thread in `perf script` output and prints, per writer (the thread
name up to its first `-` or `:`, at most 8 characters, so every
`iou-wrk-N` counts as `iou`) and inode with at least 1000 writes: writes per second, the begin -> end time (mean, p50, p99) and the
sum of those times over the span ("busy", above 100 % when the writer's
threads overlap).

    perf record -a -e ext4:ext4_da_write_begin -e ext4:ext4_da_write_end \
        -o /dev/shm/hold.data -- <the benchmark>
    perf script -i /dev/shm/hold.data -F comm,tid,cpu,time,event,trace \
        | benches/tools/ext4_write_hold.py

Write perf's data to a tmpfs (`/dev/shm`): on ext4 perf traces its own
writes and the trace feeds itself.
"""
import sys, re, collections
pat = re.compile(r'^\s*(\S.*?)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+ext4:ext4_da_write_(begin|end):.*?ino (\d+)')
open_ = {}
holds = collections.defaultdict(list)
span = {}
for line in sys.stdin:
    m = pat.match(line)
    if not m:
        continue
    comm, tid, ts, kind, ino = m.group(1), m.group(2), float(m.group(3)), m.group(4), m.group(5)
    key = comm.split('-')[0].split(':')[0][:8]
    if kind == 'begin':
        open_[tid] = (ts, key, ino)
    elif tid in open_:
        t0, k, i = open_.pop(tid)
        holds[(k, i)].append(ts - t0)
        s = span.setdefault((k, i), [t0, ts])
        s[0] = min(s[0], t0); s[1] = max(s[1], ts)
for (k, i), h in sorted(holds.items(), key=lambda x: -len(x[1])):
    if len(h) < 1000:
        continue
    h.sort()
    sp = span[(k, i)][1] - span[(k, i)][0]
    print(f"{k:10s} ino {i:>9s}: {len(h)/sp:9.0f} writes/s  hold mean {1e6*sum(h)/len(h):6.1f} p50 {1e6*h[len(h)//2]:6.1f} p99 {1e6*h[int(len(h)*.99)]:7.1f} us  busy {sum(h)/sp*100:5.1f} %  (n={len(h)}, span {sp:.1f} s)")
