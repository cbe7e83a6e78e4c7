// Scope surprises: protecting 198.51.100.1:22 leaves an sshd that listens on [::]:22
// reachable over IPv6 and over every other local address. At start the server compares
// what listens on each protected port with what it protects and says, one line per gap.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { addrFrom16, addrTo16, hostPort } from '../wire/address.js';
import { ALL_ADDRESSES, type ProtectedDest } from './destinations.js';
import { allTcpSockets, TCP_LISTEN, type KernelSocket } from './seed.js';

const V4_ANY = addrTo16('0.0.0.0');
const V6_ANY = addrTo16('::');

/** Process names owning socket inodes, from /proc/<pid>/fd (best effort: only what we may read). */
function socketOwners(inodes: Set<number>): Map<number, string> {
  const owners = new Map<number, string>();
  if (inodes.size === 0) return owners;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (!m || !inodes.has(Number(m[1])) || owners.has(Number(m[1]))) continue;
      let name = `pid ${pid}`;
      try {
        name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim() || name;
      } catch {
        // gone
      }
      owners.set(Number(m[1]), name);
    }
  }
  return owners;
}

/**
 * One warning per listening socket on a protected port that is reachable by an address the
 * configuration does not protect. A socket on [::] also takes IPv4 (unless it is v6-only,
 * which /proc does not show): both families are checked for it.
 */
export function scopeWarnings(protect: ProtectedDest[], sockets: KernelSocket[] = allTcpSockets()): string[] {
  const ports = new Set(protect.map((d) => d.port));
  const listeners = sockets.filter((s) => s.state === TCP_LISTEN && ports.has(s.localPort));
  const owners = socketOwners(new Set(listeners.map((s) => s.inode).filter((i) => i > 0)));
  const warnings: string[] = [];
  const seen = new Set<string>();
  for (const s of listeners) {
    const onPort = protect.filter((d) => d.port === s.localPort);
    if (onPort.some((d) => d.address === ALL_ADDRESSES)) continue;
    const protectedAddrs = onPort.map((d) => addrTo16(d.address));
    const has = (a: Buffer) => protectedAddrs.some((p) => p.equals(a));
    const local = addrTo16(s.localAddr);
    const who = owners.get(s.inode) ?? 'a process';
    const where = `port ${s.localPort}: ${who} listens on ${hostPort(addrFrom16(addrTo16(s.localAddr)), s.localPort)}`;
    const gaps: string[] = [];
    if (local.equals(V6_ANY)) {
      // Beside a 0.0.0.0 listener on the port, this one is IPv6-only: both could not bind otherwise.
      const v6only = listeners.some((o) => o.localPort === s.localPort && addrTo16(o.localAddr).equals(V4_ANY));
      if (!has(V6_ANY)) gaps.push(`IPv6 is not protected${onPort.some((d) => d.address.includes(':')) ? ' on every address' : ''}: add '::'`);
      if (!has(V4_ANY) && !v6only) gaps.push(`IPv4 is not protected${onPort.some((d) => !d.address.includes(':')) ? ' on every address' : ''}: add '0.0.0.0'`);
    } else if (local.equals(V4_ANY)) {
      if (!has(V4_ANY)) gaps.push(`only ${onPort.map((d) => d.address).join(', ')} ${onPort.length > 1 ? 'are' : 'is'} protected, not every IPv4 address: add '0.0.0.0'`);
    } else if (!has(local) && !has(s.localAddr.includes(':') ? V6_ANY : V4_ANY)) {
      gaps.push(`${s.localAddr} is not protected: add it`);
    }
    for (const gap of gaps) {
      const line = `${where}; ${gap} or use --all-addresses`;
      if (!seen.has(line)) warnings.push(line);
      seen.add(line);
    }
  }
  return warnings;
}
