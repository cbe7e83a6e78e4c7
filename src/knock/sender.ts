/**
 * Sending a knock: one UDP datagram with node:dgram, IPv4 or IPv6, no root, no eBPF.
 * Also the `--open` parser and the wait for a TCP port to answer.
 */
import { lookup } from 'node:dns/promises';
import { createSocket } from 'node:dgram';
import { isIP, Socket } from 'node:net';
import type { Bundle } from './bundle.js';
import { KnockSealer, type Access } from './datagram.js';
import { SPAK_KNOCK_MAX_OPEN } from '../wire/knock.js';

/** "tcp/22,udp/51820" -> entries. Throws with a message naming the bad part. */
export function parseOpen(spec: string): Access[] {
  const out: Access[] = [];
  for (const part of spec.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const m = /^(tcp|udp)\/(\d{1,5})$/i.exec(part);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) throw new Error(`bad --open entry "${part}": expected tcp/PORT or udp/PORT, PORT 1-65535`);
    out.push({ proto: m[1]!.toLowerCase() as Access['proto'], port });
  }
  if (out.length > SPAK_KNOCK_MAX_OPEN) throw new Error(`--open lists ${out.length} entries: at most ${SPAK_KNOCK_MAX_OPEN}`);
  return out;
}

export const formatOpen = (open: Access[]): string => open.map((a) => `${a.proto}/${a.port}`).join(',');

export interface KnockOptions {
  host: string;
  port: number;
  bundle: Bundle;
  open?: Access[];
  /**
   * The address the knock names: the server accepts it only from there (unless the client's policy
   * has nat). Absent: the local address the system sends from on the route to the server.
   */
  address?: string;
  durationS?: number;
}

export interface KnockSent { address: string; port: number; bytes: number; clientId: number; named: string }

/** Resolves the host (the knock carries the address it is sent to), seals and sends one datagram. */
export async function sendKnock(o: KnockOptions): Promise<KnockSent> {
  if (o.address !== undefined && isIP(o.address) === 0) throw new Error(`bad --address "${o.address}": not an IP address`);
  const host = o.host.replace(/^\[(.*)\]$/, '$1');
  const { address, family } = isIP(host) ? { address: host, family: isIP(host) } : await lookup(host);
  const sealer = new KnockSealer(o.bundle.clientKey, o.bundle.serverKey);
  const sock = createSocket(family === 6 ? 'udp6' : 'udp4');
  let named: string;
  let bytes: number;
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      // A connected UDP socket: the kernel picks the route and the source address, which we read back.
      sock.connect(o.port, address, () => { sock.removeListener('error', reject); resolve(); });
    });
    named = o.address ?? sock.address().address.replace(/%.*$/, '');
    const d = await sealer.seal({ serverAddr: address, allowAddr: named, durationS: o.durationS ?? 0, open: o.open ?? [] });
    bytes = d.length;
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.send(d, (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    sock.close();
  }
  return { address, port: o.port, bytes, clientId: sealer.clientId, named };
}

/** Tries TCP connects until one succeeds or `timeoutMs` passes; each attempt is bounded too. */
export async function waitForTcp(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const left = deadline - Date.now();
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      const done = (v: boolean): void => { s.destroy(); resolve(v); };
      s.setTimeout(Math.min(1000, left), () => done(false));
      s.once('connect', () => done(true));
      s.once('error', () => done(false));
      s.connect(port, host.replace(/^\[(.*)\]$/, '$1'));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, deadline - Date.now()))));
  }
  return false;
}
