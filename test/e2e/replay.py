#!/usr/bin/python3
"""Replays a captured spak-tagged SYN from another host (run with Debian's /usr/bin/python3, scapy).

Reads the first pure SYN to --dst:--dport in --pcap, and sends, from this host's own address --src,
a SYN with the same sequence number, window and TCP options (byte for byte) to --dst:--to-port
(default: --dport). Prints one JSON line:
  {"captured": {...}, "sent": {...}, "answer": "none" | "synack" | "rst" | "other:<flags>"}
"answer" is what came back within --timeout seconds.
"""
import argparse
import json
import logging
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import Ether, IP, IPv6, TCP, conf, get_if_hwaddr, raw, rdpcap, srp1  # noqa: E402

SPAK_OPT_KIND = 253


def tcp_option_bytes(tcp):
    return raw(tcp)[20 : tcp.dataofs * 4]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--src", required=True, help="this host's own address")
    ap.add_argument("--dst", required=True, help="the server address in the captured SYN")
    ap.add_argument("--dst-mac", required=True)
    ap.add_argument("--dport", type=int, required=True, help="destination port of the captured SYN")
    ap.add_argument("--to-port", type=int, default=None, help="send to this port instead (a control)")
    ap.add_argument("--sport", type=int, default=None, help="source port (default: the captured one)")
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()

    v6 = ":" in a.dst
    syn = None
    for pkt in rdpcap(a.pcap):
        l3 = pkt.getlayer(IPv6 if v6 else IP)
        tcp = pkt.getlayer(TCP)
        if l3 is None or tcp is None:
            continue
        if l3.dst != a.dst or tcp.dport != a.dport:
            continue
        if (int(tcp.flags) & 0x12) != 0x02:  # SYN without ACK
            continue
        syn = pkt
        break
    if syn is None:
        print(json.dumps({"error": "no SYN to %s port %d in %s" % (a.dst, a.dport, a.pcap)}))
        return 2

    ctcp = syn[TCP]
    copts = tcp_option_bytes(ctcp)
    captured = {
        "src": syn[IPv6 if v6 else IP].src,
        "sport": ctcp.sport,
        "seq": ctcp.seq,
        "window": ctcp.window,
        "options_hex": copts.hex(),
        "has_spak_option": any(k == SPAK_OPT_KIND for k, _ in ctcp.options),
    }

    conf.verb = 0
    sport = a.sport if a.sport is not None else ctcp.sport
    dport = a.to_port if a.to_port is not None else a.dport
    l3 = IPv6(src=a.src, dst=a.dst) if v6 else IP(src=a.src, dst=a.dst)
    tcp = TCP(sport=sport, dport=dport, seq=ctcp.seq, flags="S", window=ctcp.window, options=ctcp.options)
    pkt = Ether(src=get_if_hwaddr(a.iface), dst=a.dst_mac) / l3 / tcp
    pkt = pkt.__class__(raw(pkt))  # freeze lengths and checksums
    sent = {
        "src": a.src,
        "sport": sport,
        "dport": dport,
        "seq": pkt[TCP].seq,
        "options_hex": tcp_option_bytes(pkt[TCP]).hex(),
    }
    if sent["options_hex"] != captured["options_hex"]:
        print(json.dumps({"error": "rebuilt options differ", "captured": captured, "sent": sent}))
        return 2

    ans = srp1(pkt, iface=a.iface, timeout=a.timeout, verbose=0)
    answer = "none"
    if ans is not None and ans.haslayer(TCP):
        flags = int(ans[TCP].flags)
        if flags & 0x12 == 0x12:
            answer = "synack"
        elif flags & 0x04:
            answer = "rst"
        else:
            answer = "other:%s" % ans[TCP].flags
    elif ans is not None:
        answer = "other:%s" % ans.summary()
    print(json.dumps({"captured": captured, "sent": sent, "answer": answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
