#!/usr/bin/python3
"""Knock-port adversary for test/e2e/knock-flood.test.ts (run with Debian's /usr/bin/python3, scapy).

Takes the first UDP datagram to --dport in --pcap (a knock the test captured) and, by --mode:

  ext     sends its payload once per --variants entry, wrapped in IPv6 extension headers:
          dstN (a hop-by-hop header, then N-1 destination options headers), fragdst (a fragment
          header naming a destination options header, in two fragments), dst1 the control.
  garbage sends knock-shaped garbage (version 1, the captured client id, random rest, so the
          tag fails) from --src, --pps for --seconds.
  replay  sends the payload byte for byte from --sources addresses (--src plus 0..n-1 in the
          last 16 bits), round robin, --pps for --seconds.

Frames are built with scapy once and sent through one AF_PACKET socket. Prints one JSON line:
{"sent": n, "seconds": s}.
"""
import argparse
import json
import logging
import os
import socket
import sys
import time

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import (IP, UDP, Ether, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,  # noqa: E402
                       IPv6ExtHdrHopByHop, Raw, fragment6, get_if_hwaddr, rdpcap)
from scapy.utils6 import in6_ptop  # noqa: E402


def captured_payload(pcap, dport):
    for pkt in rdpcap(pcap):
        udp = pkt.getlayer(UDP)
        if udp is not None and udp.dport == dport:
            return bytes(udp.payload), udp.sport
    raise SystemExit(json.dumps({"error": "no datagram to port %d in %s" % (dport, pcap)}))


def l3(src, dst):
    return IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)


def ext_frames(a, eth, payload, sport):
    frames = []
    for v in a.variants.split(","):
        if v.startswith("dst"):
            n = int(v[3:])
            chain = IPv6ExtHdrHopByHop()
            for _ in range(n - 1):
                chain = chain / IPv6ExtHdrDestOpt()
            frames.append(bytes(eth / IPv6(src=a.src, dst=a.dst) / chain / UDP(sport=sport, dport=a.dport) / Raw(payload)))
        elif v == "fragdst":
            whole = IPv6(src=a.src, dst=a.dst) / IPv6ExtHdrFragment(id=0x5a5a) / IPv6ExtHdrDestOpt() / UDP(sport=sport, dport=a.dport) / Raw(payload)
            for f in fragment6(whole, 120):
                frames.append(bytes(eth / f))
        else:
            raise SystemExit(json.dumps({"error": "unknown variant " + v}))
    return frames


def garbage_frames(a, eth, payload, sport):
    frames = []
    for _ in range(256):
        body = bytearray(os.urandom(len(payload)))
        body[0:8] = payload[0:8]  # version, reserved, the client's id
        frames.append(bytes(eth / l3(a.src, a.dst) / UDP(sport=sport, dport=a.dport) / Raw(bytes(body))))
    return frames


def replay_frames(a, eth, payload, sport):
    base = bytearray(socket.inet_pton(socket.AF_INET6, a.src))
    frames = []
    for i in range(a.sources):
        addr = bytearray(base)
        addr[14] = (i >> 8) & 0xff
        addr[15] = i & 0xff
        src = in6_ptop(socket.inet_ntop(socket.AF_INET6, bytes(addr)))
        frames.append(bytes(eth / IPv6(src=src, dst=a.dst) / UDP(sport=sport, dport=a.dport) / Raw(payload)))
    return frames


def send_paced(sock, frames, pps, seconds):
    sent = 0
    start = time.monotonic()
    end = start + seconds
    batch = max(1, pps // 100)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * pps) + batch
        while sent < due:
            try:
                sock.send(frames[sent % len(frames)])
            except OSError:
                pass
            sent += 1
        time.sleep(0.01)
    return sent, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["ext", "garbage", "replay"], required=True)
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dst-mac", required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--variants", default="dst5,dst6,dst7,dst8,fragdst")
    ap.add_argument("--sources", type=int, default=2048)
    ap.add_argument("--pps", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()

    payload, sport = captured_payload(a.pcap, a.dport)
    eth = Ether(src=get_if_hwaddr(a.iface), dst=a.dst_mac)
    build = {"ext": ext_frames, "garbage": garbage_frames, "replay": replay_frames}[a.mode]
    frames = build(a, eth, payload, sport)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((a.iface, 0))
    if a.mode == "ext":
        for f in frames:
            sock.send(f)
            time.sleep(0.05)
        print(json.dumps({"sent": len(frames), "seconds": 0}))
        return 0
    sent, took = send_paced(sock, frames, a.pps, a.seconds)
    print(json.dumps({"sent": sent, "seconds": round(took, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
