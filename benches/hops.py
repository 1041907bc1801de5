#!/usr/bin/env python3
"""Where a proxy's added time to first token goes, hop by hop, from a packet capture.

benches/RESULTS.md (round 11) splits the added time of scenario 3 (64-chunk streams through a
proxy to tailor's simulator) into the proxy's two hops, read off the loopback interface:

    tcpdump -i lo -nn -tt "tcp and (port PROXY or port SIM) and greater 60" > capture.txt &
    cargo bench --bench streams -- paced http://127.0.0.1:PROXY 64 6
    python3 benches/hops.py capture.txt PROXY SIM

For each stream: request side (the client's request in, to the proxy's request out to the
upstream), upstream (to the upstream's first bytes back), response side (the upstream's bytes
that arrived before the proxy's first bytes to the client, to those). Requests are paired with
the proxy's upstream requests in order, which holds while streams start apart (the streams
client spreads them). Prints p25 / p50 / p75 in microseconds.
"""
import re
import statistics
import sys

PACKET = re.compile(r"(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): .* length (\d+)")


def main(path, proxy, upstream):
    waiting, by_upstream, by_client, streams = [], {}, {}, []
    for line in open(path):
        m = PACKET.match(line)
        if not m or int(m[4]) == 0:
            continue
        t, src, dst, size = float(m[1]), int(m[2]), int(m[3]), int(m[4])
        if dst == proxy and size > 300:  # a request (the stream's body makes it that large)
            s = {"in": t, "back": [], "out": None}
            waiting.append(s)
            streams.append(s)
            by_client[src] = s
        elif dst == upstream and size > 300 and waiting:
            s = waiting.pop(0)
            s["sent"] = t
            by_upstream[src] = s
        elif src == upstream and dst in by_upstream:
            by_upstream[dst]["back"].append(t)
        elif src == proxy and dst in by_client and by_client[dst]["out"] is None:
            by_client[dst]["out"] = t
    hops = {"request side": [], "upstream": [], "response side": [], "request to first bytes out": []}
    for s in streams:
        if "sent" not in s or not s["back"] or s["out"] is None:
            continue
        before = [b for b in s["back"] if b <= s["out"]]
        if not before:
            continue
        hops["request side"].append(s["sent"] - s["in"])
        hops["upstream"].append(s["back"][0] - s["sent"])
        hops["response side"].append(s["out"] - before[-1])
        hops["request to first bytes out"].append(s["out"] - s["in"])
    for name, v in hops.items():
        q = statistics.quantiles([x * 1e6 for x in v], n=4)
        print(f"{name}: p25 {q[0]:.0f} p50 {q[1]:.0f} p75 {q[2]:.0f} us ({len(v)} streams)")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
