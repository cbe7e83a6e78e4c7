#!/usr/bin/python3
"""Crafted packets for the adversarial e2e tests (run with Debian's /usr/bin/python3, scapy).

  attack.py syn   --iface I --src A --dst B --dst-mac M --dport P [--vlan-tags N] [--frag-size S]
                  [--payload N] [--sport P] [--seq N] [--timeout T]
      Sends one SYN from A (this host's own address) to B:P, optionally inside N stacked 802.1Q
      VLAN-ID-0 tags, optionally (IPv6) as fragments of at most S bytes each, and reports what
      came back to A within T seconds: {"answer": "none" | "synack" | "rst" | "other:<flags>"}.
  attack.py ping6 --iface I --src A --dst B --dst-mac M [--size N] [--timeout T]
      Sends an ICMPv6 echo request with N bytes of data in fragments (ping -6 -s N) and reports
      whether an echo reply came back: {"answer": "reply" | "none"}.
  attack.py spoof --iface I --src A --dst B --dst-mac M --sport P --dport P --flags F --seq N [--ack N]
      Sends one TCP segment with a forged source (A: another host's address): {"sent": 1}.
Prints one JSON line; exit 0 unless the arguments are wrong.
"""
import argparse
import json
import logging
import random
import sys
import time

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import (  # noqa: E402
    IP,
    TCP,
    AsyncSniffer,
    Dot1Q,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    Ether,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
    conf,
    fragment6,
    get_if_hwaddr,
    raw,
    sendp,
)


def l3(a):
    return IPv6(src=a.src, dst=a.dst) if ":" in a.dst else IP(src=a.src, dst=a.dst)


def classify(pkt):
    flags = int(pkt[TCP].flags)
    if flags & 0x12 == 0x12:
        return "synack"
    if flags & 0x04:
        return "rst"
    return "other:%s" % pkt[TCP].flags


def cmd_syn(a):
    conf.verb = 0
    sport = a.sport if a.sport is not None else random.randint(20000, 60000)
    seq = a.seq if a.seq is not None else random.randint(1, 2**32 - 1)
    mac = get_if_hwaddr(a.iface)
    tcp = TCP(sport=sport, dport=a.dport, flags="S", seq=seq, window=64240, options=[("MSS", 1460)])
    payload = Raw(b"x" * a.payload) if a.payload else None
    v6 = ":" in a.dst
    ip = l3(a)
    frames = []
    if a.frag_size:
        if not v6:
            print(json.dumps({"error": "--frag-size is for IPv6"}))
            return 2
        pkt = ip / IPv6ExtHdrFragment() / tcp
        if payload is not None:
            pkt = pkt / payload
        pkt = pkt.__class__(raw(pkt))  # checksums over the whole datagram
        frags = fragment6(pkt, a.frag_size)
        if len(frags) < 2:
            print(json.dumps({"error": "not fragmented: give a larger --payload or smaller --frag-size"}))
            return 2
        frames = [Ether(src=mac, dst=a.dst_mac) / f for f in frags]
    else:
        inner = ip / tcp
        if payload is not None:
            inner = inner / payload
        eth = Ether(src=mac, dst=a.dst_mac)
        for _ in range(a.vlan_tags):
            eth = eth / Dot1Q(vlan=0)
        frames = [eth / inner]

    def mine(p):
        if not p.haslayer(TCP):
            return False
        l = p.getlayer(IPv6 if v6 else IP)
        return l is not None and l.src == a.dst and p[TCP].sport == a.dport and p[TCP].dport == sport

    got = []
    sniffer = AsyncSniffer(iface=a.iface, lfilter=mine, prn=got.append, store=False)
    sniffer.start()
    time.sleep(0.5)  # AsyncSniffer opens its socket in a thread
    sendp(frames, iface=a.iface, verbose=0)
    deadline = time.time() + a.timeout
    while time.time() < deadline and not got:
        time.sleep(0.1)
    sniffer.stop()
    answer = classify(got[0]) if got else "none"
    print(json.dumps({"answer": answer, "frames": len(frames), "sport": sport, "seq": seq}))
    return 0


def cmd_ping6(a):
    conf.verb = 0
    ident = random.randint(1, 65535)
    pkt = IPv6(src=a.src, dst=a.dst) / IPv6ExtHdrFragment() / ICMPv6EchoRequest(id=ident, seq=1, data=b"p" * a.size)
    pkt = pkt.__class__(raw(pkt))
    frames = [Ether(src=get_if_hwaddr(a.iface), dst=a.dst_mac) / f for f in fragment6(pkt, 1280)]

    def mine(p):
        if not p.haslayer(IPv6) or p[IPv6].src != a.dst:
            return False
        if p.haslayer(ICMPv6EchoReply):
            return True
        # The reply to a 3000-byte request comes in fragments: the first one names ICMPv6.
        return p.haslayer(IPv6ExtHdrFragment) and p[IPv6ExtHdrFragment].nh == 58

    got = []
    sniffer = AsyncSniffer(iface=a.iface, lfilter=mine, prn=got.append, store=False)
    sniffer.start()
    time.sleep(0.5)
    sendp(frames, iface=a.iface, verbose=0)
    deadline = time.time() + a.timeout
    while time.time() < deadline and not got:
        time.sleep(0.1)
    sniffer.stop()
    print(json.dumps({"answer": "reply" if got else "none", "frames": len(frames)}))
    return 0


def cmd_spoof(a):
    conf.verb = 0
    tcp = TCP(sport=a.sport, dport=a.dport, flags=a.flags, seq=a.seq, ack=a.ack, window=502)
    frame = Ether(src=get_if_hwaddr(a.iface), dst=a.dst_mac) / l3(a) / tcp
    sendp(frame, iface=a.iface, verbose=0)
    print(json.dumps({"sent": 1, "flags": a.flags, "seq": a.seq}))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("syn", "spoof"):
        p = sub.add_parser(name)
        p.add_argument("--iface", default="eth0")
        p.add_argument("--src", required=True)
        p.add_argument("--dst", required=True)
        p.add_argument("--dst-mac", required=True)
        p.add_argument("--dport", type=int, required=True)
        p.add_argument("--sport", type=int, default=None)
        p.add_argument("--seq", type=int, default=None)
    s = sub.choices["syn"]
    s.add_argument("--vlan-tags", type=int, default=0)
    s.add_argument("--frag-size", type=int, default=0)
    s.add_argument("--payload", type=int, default=0)
    s.add_argument("--timeout", type=float, default=3.0)
    f = sub.choices["spoof"]
    f.add_argument("--flags", required=True)
    f.add_argument("--ack", type=int, default=0)
    g = sub.add_parser("ping6")
    g.add_argument("--iface", default="eth0")
    g.add_argument("--src", required=True)
    g.add_argument("--dst", required=True)
    g.add_argument("--dst-mac", required=True)
    g.add_argument("--size", type=int, default=3000)
    g.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()
    if a.cmd == "ping6":
        return cmd_ping6(a)
    if a.cmd == "spoof" and (a.sport is None or a.seq is None):
        ap.error("spoof needs --sport and --seq")
    return cmd_syn(a) if a.cmd == "syn" else cmd_spoof(a)


if __name__ == "__main__":
    sys.exit(main())
