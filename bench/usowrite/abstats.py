#!/usr/bin/env python3
"""abstats.py JSON...: medians of the netns harness's map646 values per GRO
condition and variant, for runs of 4 rounds made with abwrap.sh (rounds 0 and
3 ran binary a, 1 and 2 binary b), and b/a ratios of adjacent rounds (1/0, 2/3)."""
import json, statistics as st, sys

variant = {0: 'a', 1: 'b', 2: 'b', 3: 'a'}
keys = ['udp64', 'udp64_reached', 'cpu_udp64', 'udp_rcvbuf_drop', 'rtt50_udp', 'tcp1', 'rtt50', 'rtt50_1s']
vals, pairs = {}, {}
for f in sys.argv[1:]:
    d = json.load(open(f))
    for name, v in d['values'].items():
        cond, setup = name.split('/')
        if setup != 'map646':
            continue
        fork = d['values'].get(cond + '/tayga-fork', {}).get('udp64')
        for r in range(d['rounds']):
            o = vals.setdefault((cond, variant[r % 4]), {})
            for k in keys:
                x = v.get(k, [None] * d['rounds'])[r]
                if x is not None:
                    o.setdefault(k, []).append(x)
            if fork and fork[r] and v['udp64'][r] is not None:
                o.setdefault('udp64/fork', []).append(v['udp64'][r] / fork[r])
        for k in keys:
            xs = v.get(k)
            if not xs or None in xs[:4]:
                continue
            p = pairs.setdefault((cond, k), [])
            for b, a in ((1, 0), (2, 3)):
                if b < len(xs) and xs[a]:
                    p.append(xs[b] / xs[a])
for (cond, var), o in sorted(vals.items()):
    print(cond, var)
    for k, xs in sorted(o.items()):
        print('  %-16s median %9.2f  n=%d' % (k, st.median(xs), len(xs)))
for (cond, k), xs in sorted(pairs.items()):
    print('%s %s b/a adjacent pairs: median %.2f (%.2f-%.2f, n=%d)' % (cond, k, st.median(xs), min(xs), max(xs), len(xs)))
