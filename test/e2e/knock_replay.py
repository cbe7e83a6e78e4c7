#!/usr/bin/python3
"""Replays a captured knock datagram from another host (run with Debian's /usr/bin/python3, scapy).

Reads the first UDP datagram to --dst:--dport in --pcap and sends its payload, byte for byte and
from the same source port, from this host's own address --src to --dst:--dport (or --to-port; --count times).
Prints one JSON line: {"captured": {"src", "sport", "len"}, "sent": {"src", "count"}}.
"""
import argparse
import json
import logging
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import IP, UDP, Ether, IPv6, Raw, conf, get_if_hwaddr, rdpcap, sendp  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--src", required=True, help="this host's own address")
    ap.add_argument("--dst", required=True, help="the server address the knock was sent to")
    ap.add_argument("--dst-mac", required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--to-port", type=int, default=None, help="send to this port (default: --dport)")
    a = ap.parse_args()

    v6 = ":" in a.dst
    knock = None
    for pkt in rdpcap(a.pcap):
        l3 = pkt.getlayer(IPv6 if v6 else IP)
        udp = pkt.getlayer(UDP)
        if l3 is None or udp is None or l3.dst != a.dst or udp.dport != a.dport:
            continue
        knock = pkt
        break
    if knock is None:
        print(json.dumps({"error": "no datagram to %s port %d in %s" % (a.dst, a.dport, a.pcap)}))
        return 2
    payload = bytes(knock[UDP].payload)
    captured = {"src": knock[IPv6 if v6 else IP].src, "sport": knock[UDP].sport, "len": len(payload)}

    conf.verb = 0
    l3 = IPv6(src=a.src, dst=a.dst) if v6 else IP(src=a.src, dst=a.dst)
    pkt = Ether(src=get_if_hwaddr(a.iface), dst=a.dst_mac) / l3 / UDP(sport=captured["sport"], dport=a.to_port or a.dport) / Raw(payload)
    sendp(pkt, iface=a.iface, count=a.count, verbose=0)
    print(json.dumps({"captured": captured, "sent": {"src": a.src, "count": a.count}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
