// Connections that exist when protection starts must keep working (an operator may
// be protecting the very SSH port they are connected through). They are read from
// the kernel's socket tables in /proc/net/tcp{,6} of our network namespace.
import { readFileSync } from 'node:fs';
import type { BpfMap } from '../bpf/libbpf.js';
import { monotonicSeconds } from '../bpf/clock.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { encodeFlow, encodeFlowKey, SPAK_FLOW_OPEN } from '../wire/layout.js';
import { ALL_ADDRESSES, protocolOf, type ProtectedDest } from './destinations.js';

export interface KernelSocket {
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  state: number;
  /** The socket's inode (0 for time-wait sockets): finds the process that owns it. */
  inode: number;
}

export const TCP_ESTABLISHED = 0x01;
export const TCP_TIME_WAIT = 0x06;
export const TCP_CLOSE = 0x07;
export const TCP_LISTEN = 0x0a;

// TCP states worth a flow: everything that can still receive segments.
const LIVE_STATES = new Set([
  0x01, // ESTABLISHED
  0x03, // SYN_RECV
  0x04, // FIN_WAIT1
  0x05, // FIN_WAIT2
  0x08, // CLOSE_WAIT
  0x09, // LAST_ACK
  0x0b, // CLOSING
]);

/** /proc prints addresses as host-order (little-endian) 32-bit words in hex. */
function procAddr(hex: string): string {
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) bytes.writeUInt32LE(parseInt(hex.slice(w * 8, w * 8 + 8), 16) >>> 0, w * 4);
  if (bytes.length === 4) return [...bytes].join('.');
  return addrFrom16(bytes); // IPv4-mapped as a dotted quad, the rest as RFC 5952 text
}

/** Parses the text of /proc/net/tcp or /proc/net/tcp6. */
export function parseProcNetTcp(text: string): KernelSocket[] {
  const out: KernelSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [local, remote, st] = [f[1]!, f[2]!, f[3]!];
    const [la, lp] = local.split(':');
    const [ra, rp] = remote.split(':');
    if (!la || !lp || !ra || !rp) continue;
    out.push({
      localAddr: procAddr(la),
      localPort: parseInt(lp, 16),
      remoteAddr: procAddr(ra),
      remotePort: parseInt(rp, 16),
      state: parseInt(st, 16),
      inode: Number(f[9] ?? 0) || 0,
    });
  }
  return out;
}

/** Every TCP socket of this network namespace, IPv4 and IPv6, in any state. */
export function allTcpSockets(files: readonly string[] = ['/proc/self/net/tcp', '/proc/self/net/tcp6']): KernelSocket[] {
  const all: KernelSocket[] = [];
  for (const file of files) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel or namespace
    }
    all.push(...parseProcNetTcp(text));
  }
  return all;
}

/** Live TCP sockets of this network namespace: the ones that can still receive segments. */
export function liveTcpSockets(): KernelSocket[] {
  return allTcpSockets().filter((s) => LIVE_STATES.has(s.state));
}

/** Does (address, TCP port) fall under one of the protected TCP destinations? (Which sockets seeding keeps.) */
export function coverage(protect: ProtectedDest[]): (address: string, port: number) => boolean {
  const v4Any = addrTo16('0.0.0.0');
  const v6Any = addrTo16('::');
  const entries = protect.filter((d) => protocolOf(d) === 'tcp').map((d) => ({ port: d.port, all: d.address === ALL_ADDRESSES, addr: d.address === ALL_ADDRESSES ? null : addrTo16(d.address) }));
  return (address, port) => {
    const local = addrTo16(address);
    const wildcard = address.includes('.') || local.subarray(0, 12).equals(v4Any.subarray(0, 12)) ? v4Any : v6Any;
    return entries.some((e) => e.port === port && (e.all || e.addr!.equals(local) || e.addr!.equals(wildcard)));
  };
}

/** Records the kernel's live connections to protected TCP destinations as open flows; returns how many. */
export function seedFlows(flows: BpfMap, protect: ProtectedDest[]): number {
  const covers = coverage(protect);
  const nowS = monotonicSeconds();
  let n = 0;
  for (const s of liveTcpSockets()) {
    if (!covers(s.localAddr, s.localPort)) continue;
    const key = encodeFlowKey({ saddr: s.remoteAddr, daddr: s.localAddr, sport: s.remotePort, dport: s.localPort });
    flows.update(key, encodeFlow({ seenS: nowS, state: SPAK_FLOW_OPEN }));
    n++;
  }
  return n;
}
