#!/usr/bin/python3
"""Sends pre-sealed knocks, each from the source address it names (spoofed, IPv4 raw socket).

--file: one knock a line, "<source> <payload hex>". Each is sent once, to --dst:--dport, the whole
list spread evenly over --seconds. Prints one JSON line: {"sent": n, "errors": n, "seconds": s}.
"""
import argparse
import json
import random
import socket
import struct
import sys
import time


def packet(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # the kernel fills id and checksum
    return ip + udp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    knocks = []
    with open(a.file) as f:
        for line in f:
            src, hexed = line.split()
            knocks.append(packet(src, a.dst, random.randint(1024, 65535), a.dport, bytes.fromhex(hexed)))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t0 = time.monotonic()
    step = a.seconds / max(1, len(knocks))
    sent = errors = 0
    for i, pkt in enumerate(knocks):
        wait = t0 + i * step - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            s.sendto(pkt, (a.dst, 0))
            sent += 1
        except OSError:
            errors += 1
    print(json.dumps({"sent": sent, "errors": errors, "seconds": round(time.monotonic() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
