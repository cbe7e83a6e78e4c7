// Addresses as the maps and wire formats hold them: always 16 bytes, IPv4 stored as
// ::ffff:a.b.c.d. Parsing, formatting and CIDR matching for every floor above; nothing here
// knows about maps or packets.
import { isIP } from 'node:net';

/** Anything the encoders accept as an address: text, or the 16 bytes themselves. */
export type Addr = string | Buffer;

/** IPv4 -> ::ffff:a.b.c.d, IPv6 -> its 16 bytes. Throws on anything else. */
export function addrTo16(ip: string): Buffer {
  const kind = isIP(ip);
  if (kind === 4) {
    const out = Buffer.alloc(16);
    out[10] = 0xff;
    out[11] = 0xff;
    parseV4(ip).copy(out, 12);
    return out;
  }
  if (kind === 6) return parseV6(ip);
  throw new TypeError(`not an IP address: ${JSON.stringify(ip)}`);
}

/** 16 bytes -> text: IPv4-mapped as dotted quad, others as RFC 5952 IPv6. */
export function addrFrom16(b: Buffer): string {
  if (b.length !== 16) throw new RangeError(`address must be 16 bytes, got ${b.length}`);
  if (isV4Mapped(b)) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  // RFC 5952: compress the longest run of two or more zero groups (the first on a tie).
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** True for ::ffff:a.b.c.d. */
export function isV4Mapped(b: Buffer): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/** Text or 16 raw bytes -> 16 bytes (a copy, so callers may keep mutating theirs). */
export function addrBytes(a: Addr): Buffer {
  if (typeof a === 'string') return addrTo16(a);
  if (a.length !== 16) throw new RangeError(`address must be 16 bytes, got ${a.length}`);
  return Buffer.from(a);
}

/** Dotted quad (already validated by isIP) -> 4 bytes. */
export function parseV4(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new TypeError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  }
  return Buffer.from(parts);
}

/** IPv6 text with '::' compression and an optional trailing dotted quad -> 16 bytes. */
function parseV6(ip: string): Buffer {
  const bad = (): never => { throw new TypeError(`not an IPv6 address: ${JSON.stringify(ip)}`); };
  // A zone (fe80::1%eth0) does not belong in a 16-byte map key: drop it.
  const text = ip.split('%')[0]!;
  const halves = text.split('::');
  if (halves.length > 2) bad();
  const toGroups = (s: string): number[] => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    parts.forEach((p, i) => {
      if (p.includes('.')) {
        // Embedded IPv4 is only allowed as the last 32 bits.
        if (i !== parts.length - 1) bad();
        const v4 = parseV4(p);
        out.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) bad();
        out.push(parseInt(p, 16));
      }
    });
    return out;
  };
  const head = toGroups(halves[0]!);
  const tail = halves.length === 2 ? toGroups(halves[1]!) : [];
  let groups: number[];
  if (halves.length === 2) {
    const zeros = 8 - head.length - tail.length;
    if (zeros < 1) bad();
    groups = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) bad();
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, 2 * i));
  return out;
}

/**
 * An address or CIDR -> its 16-byte (IPv4-mapped) address and its prefix length in bits of
 * that form (IPv4 /24 -> 120). Host bits must be zero. The LPM key of always-allow and the
 * knock policies' fromNetworks both come from here.
 */
export function parseCidr(text: string): { addr: Buffer; prefixLen: number } {
  const [ip, len, extra] = text.split('/');
  const family = isIP(ip ?? '');
  if (family === 0 || extra !== undefined) throw new Error(`not an IPv4 or IPv6 address or CIDR: ${JSON.stringify(text)}`);
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (len !== undefined) {
    if (!/^\d{1,3}$/.test(len) || Number(len) > max) throw new Error(`${text}: prefix length must be 0..${max}`);
    bits = Number(len);
  }
  const addr = addrTo16(ip!);
  const prefixLen = family === 4 ? 96 + bits : bits;
  for (let bit = prefixLen; bit < 128; bit++)
    if (addr[bit >> 3]! & (0x80 >> (bit & 7))) throw new Error(`${text}: host bits are set (did you mean ${maskedText(addr, prefixLen, family, bits)}?)`);
  return { addr, prefixLen };
}

function maskedText(addr: Buffer, prefixLen: number, family: number, bits: number): string {
  const m = Buffer.from(addr);
  for (let bit = prefixLen; bit < 128; bit++) m[bit >> 3]! &= ~(0x80 >> (bit & 7));
  const text = family === 4 ? [...m.subarray(12)].join('.') : m.toString('hex').replace(/(.{4})(?!$)/g, '$1:');
  return `${text}/${bits}`;
}

/** A parsed CIDR, kept with the text it came from (for messages). */
export interface Network { addr: Buffer; prefixLen: number; text: string }

export function parseNetwork(text: string): Network {
  return { ...parseCidr(text), text };
}

/** True when the 16-byte address lies inside the network. */
export function inNetwork(addr16: Buffer, n: Network): boolean {
  const full = n.prefixLen >> 3;
  if (!addr16.subarray(0, full).equals(n.addr.subarray(0, full))) return false;
  const rest = n.prefixLen & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((addr16[full]! ^ n.addr[full]!) & mask) === 0;
}

/** "198.51.100.1:22", "[2001:db8::1]:22": an address and port as URLs and logs write them. */
export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
