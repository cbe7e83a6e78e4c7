/**
 * Ethernet frame builder and parser for the eBPF tests (BPF_PROG_TEST_RUN) and the
 * benchmarks. Builds TCP, UDP and ICMP/ICMPv6 over IPv4/IPv6 with correct
 * checksums, optional VLAN tag and IPv4/IPv6 fragmentation fields, and parses
 * frames back so tests can check what the client program emits byte by byte.
 */
import { isIP } from 'node:net';
import { addrFrom16, addrTo16, parseV4 } from '../../src/wire/address.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../../src/wire/layout.js';

export { IPPROTO_TCP, IPPROTO_UDP };

export const ETH_HLEN = 14;
export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const IPPROTO_ICMP = 1;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export interface TcpFlags {
  fin?: boolean; syn?: boolean; rst?: boolean; psh?: boolean;
  ack?: boolean; urg?: boolean; ece?: boolean; cwr?: boolean;
}

const FLAG_BITS: [keyof TcpFlags, number][] = [
  ['fin', TCP_FIN], ['syn', TCP_SYN], ['rst', TCP_RST], ['psh', TCP_PSH],
  ['ack', TCP_ACK], ['urg', TCP_URG], ['ece', TCP_ECE], ['cwr', TCP_CWR],
];

export function tcpFlagBits(f: TcpFlags): number {
  return FLAG_BITS.reduce((bits, [name, bit]) => (f[name] ? bits | bit : bits), 0);
}

export function tcpFlagsFrom(bits: number): Required<TcpFlags> {
  const out = {} as Required<TcpFlags>;
  for (const [name, bit] of FLAG_BITS) out[name] = (bits & bit) !== 0;
  return out;
}

/** Everything below L4. */
export interface IpParams {
  family: 4 | 6;
  saddr: string;
  daddr: string;
  /** TTL (IPv4) or hop limit (IPv6); 64 by default. */
  ttl?: number;
  /** IPv4 TOS or IPv6 traffic class. */
  tos?: number;
  /** IPv6 flow label. */
  flowLabel?: number;
  /** IPv4 identification (ignored for IPv6). */
  ipId?: number;
  /** IPv4 DF bit; set by default (as Linux does for TCP) unless fragment fields are given. */
  dontFragment?: boolean;
  /** IPv4 fragment offset in bytes (a multiple of 8). */
  fragOffset?: number;
  /** IPv4 MF bit. */
  moreFragments?: boolean;
  /** IPv6: insert a fragment extension header; offset in bytes (a multiple of 8). */
  ipv6Fragment?: { offset: number; more: boolean; id: number };
  /** 802.1Q VLAN id: adds a tag after the MAC addresses. */
  vlan?: number;
  srcMac?: string | Buffer;
  dstMac?: string | Buffer;
}

export interface TcpParams extends IpParams {
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags: TcpFlags;
  window?: number;
  urgent?: number;
  /** Raw option bytes; length must be a multiple of 4 (see padOptions). */
  options?: Buffer;
  payload?: Buffer;
  /** Data offset override (32-bit words) for malformed headers; computed by default. */
  doff?: number;
}

export interface UdpParams extends IpParams {
  sport: number;
  dport: number;
  payload?: Buffer;
}

export interface IcmpParams extends IpParams {
  /** Default: echo request (8 for ICMP, 128 for ICMPv6). */
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  payload?: Buffer;
}

/** The Internet checksum (RFC 1071) over the concatenation of parts. */
export function inetChecksum(...parts: Buffer[]): number {
  const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Pseudo-header for the TCP/UDP/ICMPv6 checksum. */
export function pseudoHeader(family: 4 | 6, saddr: string, daddr: string, proto: number, l4Len: number): Buffer {
  if (family === 4) {
    const b = Buffer.alloc(12);
    parseV4(saddr).copy(b, 0);
    parseV4(daddr).copy(b, 4);
    b[9] = proto;
    b.writeUInt16BE(l4Len, 10);
    return b;
  }
  const b = Buffer.alloc(40);
  addrTo16(saddr).copy(b, 0);
  addrTo16(daddr).copy(b, 16);
  b.writeUInt32BE(l4Len, 32);
  b[39] = proto;
  return b;
}

/** Pads TCP options to a multiple of 4 with NOPs (kind 1). */
export function padOptions(opts: Buffer): Buffer {
  const pad = (4 - (opts.length % 4)) % 4;
  return Buffer.concat([opts, Buffer.alloc(pad, 1)]);
}

/** The 20 option bytes Linux puts on a SYN: MSS, SACK permitted, timestamps, NOP, window scale. */
export function linuxSynOptions(o: { mss?: number; tsval?: number; tsecr?: number; wscale?: number } = {}): Buffer {
  const b = Buffer.from([
    0x02, 0x04, 0, 0, // MSS
    0x04, 0x02, // SACK permitted
    0x08, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, // timestamps
    0x01, // NOP
    0x03, 0x03, 0, // window scale
  ]);
  b.writeUInt16BE(o.mss ?? 1460, 2);
  b.writeUInt32BE((o.tsval ?? 0x11223344) >>> 0, 8);
  b.writeUInt32BE((o.tsecr ?? 0) >>> 0, 12);
  b[19] = o.wscale ?? 7;
  return b;
}

export function buildTcp(p: TcpParams): Buffer {
  const options = p.options ?? Buffer.alloc(0);
  if (options.length % 4 !== 0) throw new RangeError(`TCP options must be a multiple of 4 bytes (got ${options.length}); use padOptions`);
  if (options.length > 40) throw new RangeError(`TCP options cannot exceed 40 bytes (got ${options.length})`);
  const payload = p.payload ?? Buffer.alloc(0);
  const hlen = 20 + options.length;
  const seg = Buffer.alloc(hlen + payload.length);
  seg.writeUInt16BE(p.sport, 0);
  seg.writeUInt16BE(p.dport, 2);
  seg.writeUInt32BE(p.seq >>> 0, 4);
  seg.writeUInt32BE((p.ack ?? 0) >>> 0, 8);
  seg[12] = ((p.doff ?? hlen / 4) & 0xf) << 4;
  seg[13] = tcpFlagBits(p.flags);
  seg.writeUInt16BE(p.window ?? 64240, 14);
  seg.writeUInt16BE(p.urgent ?? 0, 18);
  options.copy(seg, 20);
  payload.copy(seg, hlen);
  seg.writeUInt16BE(inetChecksum(pseudoHeader(p.family, p.saddr, p.daddr, IPPROTO_TCP, seg.length), seg), 16);
  return buildIp(p, IPPROTO_TCP, seg);
}

export function buildUdp(p: UdpParams): Buffer {
  const payload = p.payload ?? Buffer.alloc(0);
  const dgram = Buffer.alloc(8 + payload.length);
  dgram.writeUInt16BE(p.sport, 0);
  dgram.writeUInt16BE(p.dport, 2);
  dgram.writeUInt16BE(dgram.length, 4);
  payload.copy(dgram, 8);
  // A computed 0 is sent as 0xffff: 0 means "no checksum" (RFC 768).
  const sum = inetChecksum(pseudoHeader(p.family, p.saddr, p.daddr, IPPROTO_UDP, dgram.length), dgram);
  dgram.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return buildIp(p, IPPROTO_UDP, dgram);
}

/** ICMP echo over IPv4, ICMPv6 echo over IPv6 (type/code overridable). */
export function buildIcmp(p: IcmpParams): Buffer {
  const payload = p.payload ?? Buffer.alloc(0);
  const v6 = p.family === 6;
  const msg = Buffer.alloc(8 + payload.length);
  msg[0] = p.type ?? (v6 ? 128 : 8);
  msg[1] = p.code ?? 0;
  msg.writeUInt16BE(p.id ?? 0, 4);
  msg.writeUInt16BE(p.seq ?? 0, 6);
  payload.copy(msg, 8);
  // ICMPv6 covers a pseudo-header, ICMP does not.
  const sum = v6
    ? inetChecksum(pseudoHeader(6, p.saddr, p.daddr, IPPROTO_ICMPV6, msg.length), msg)
    : inetChecksum(msg);
  msg.writeUInt16BE(sum, 2);
  return buildIp(p, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, msg);
}

/** Wraps an L4 segment in IPv4/IPv6 and Ethernet. */
export function buildIp(p: IpParams, proto: number, l4: Buffer): Buffer {
  if (isIP(p.saddr) !== p.family || isIP(p.daddr) !== p.family) {
    throw new TypeError(`addresses ${p.saddr} -> ${p.daddr} are not IPv${p.family}`);
  }
  const l3 = p.family === 4 ? ipv4Header(p, proto, l4.length) : ipv6Header(p, proto, l4.length);
  return Buffer.concat([ethHeader(p, p.family === 4 ? ETH_P_IP : ETH_P_IPV6), l3, l4]);
}

function ipv4Header(p: IpParams, proto: number, l4Len: number): Buffer {
  if (p.ipv6Fragment) throw new TypeError('ipv6Fragment on an IPv4 packet');
  const off = p.fragOffset ?? 0;
  if (off % 8 !== 0) throw new RangeError(`fragment offset ${off} is not a multiple of 8`);
  const fragmented = off !== 0 || p.moreFragments === true;
  const df = p.dontFragment ?? !fragmented;
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h[1] = p.tos ?? 0;
  h.writeUInt16BE(20 + l4Len, 2);
  h.writeUInt16BE(p.ipId ?? 0, 4);
  h.writeUInt16BE((df ? 0x4000 : 0) | (p.moreFragments ? 0x2000 : 0) | (off / 8), 6);
  h[8] = p.ttl ?? 64;
  h[9] = proto;
  parseV4(p.saddr).copy(h, 12);
  parseV4(p.daddr).copy(h, 16);
  h.writeUInt16BE(inetChecksum(h), 10);
  return h;
}

function ipv6Header(p: IpParams, proto: number, l4Len: number): Buffer {
  if (p.fragOffset !== undefined || p.moreFragments !== undefined) {
    throw new TypeError('IPv4 fragment fields on an IPv6 packet (use ipv6Fragment)');
  }
  const frag = p.ipv6Fragment;
  const h = Buffer.alloc(frag ? 48 : 40);
  h.writeUInt32BE(((6 << 28) | ((p.tos ?? 0) << 20) | ((p.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(h.length - 40 + l4Len, 4);
  h[6] = frag ? IPPROTO_FRAGMENT : proto;
  h[7] = p.ttl ?? 64;
  addrTo16(p.saddr).copy(h, 8);
  addrTo16(p.daddr).copy(h, 24);
  if (frag) {
    if (frag.offset % 8 !== 0) throw new RangeError(`fragment offset ${frag.offset} is not a multiple of 8`);
    h[40] = proto;
    h.writeUInt16BE(frag.offset | (frag.more ? 1 : 0), 42); // offset/8 << 3 == offset
    h.writeUInt32BE(frag.id >>> 0, 44);
  }
  return h;
}

function macBytes(m: string | Buffer | undefined, dflt: string): Buffer {
  if (Buffer.isBuffer(m)) return m;
  const b = Buffer.from((m ?? dflt).split(':').map((x) => parseInt(x, 16)));
  if (b.length !== 6) throw new TypeError(`bad MAC address ${m}`);
  return b;
}

function ethHeader(p: IpParams, ethertype: number): Buffer {
  const vlan = p.vlan !== undefined;
  const h = Buffer.alloc(vlan ? 18 : 14);
  macBytes(p.dstMac, '02:00:00:00:00:02').copy(h, 0);
  macBytes(p.srcMac, '02:00:00:00:00:01').copy(h, 6);
  if (vlan) {
    h.writeUInt16BE(ETH_P_8021Q, 12);
    h.writeUInt16BE(p.vlan! & 0xfff, 14);
  }
  h.writeUInt16BE(ethertype, h.length - 2);
  return h;
}

/* ---- parsing ---- */

export interface ParsedTcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: Required<TcpFlags>;
  flagBits: number;
  /** Data offset in 32-bit words. */
  doff: number;
  window: number;
  checksum: number;
  urgent: number;
  options: Buffer;
  payload: Buffer;
  checksumOk: boolean;
}

export interface ParsedUdp {
  sport: number;
  dport: number;
  length: number;
  checksum: number;
  payload: Buffer;
  checksumOk: boolean;
}

export interface ParsedIcmp {
  type: number;
  code: number;
  checksum: number;
  /** Echo identifier and sequence (the second 32-bit word). */
  id: number;
  seq: number;
  payload: Buffer;
  checksumOk: boolean;
}

export interface ParsedFrame {
  dstMac: string;
  srcMac: string;
  vlan?: number;
  family: 4 | 6;
  saddr: string;
  daddr: string;
  ttl: number;
  /** Final protocol / next header after extension headers. */
  protocol: number;
  l3Offset: number;
  l4Offset: number;
  /** IPv4 IHL * 4, IPv6 40 plus extension headers. */
  ipHeaderLen: number;
  /** Whole IP packet length per header: IPv4 total length, IPv6 40 + payload length. */
  ipTotalLen: number;
  /** Bytes after the fixed header per header: IPv4 total - IHL*4, IPv6 payload length. */
  payloadLen: number;
  /** IPv4 header checksum verifies; always true for IPv6 (no header checksum). */
  ipChecksumOk: boolean;
  ipId?: number;
  dontFragment?: boolean;
  /** Present when the packet is a fragment (IPv4 MF/offset, or an IPv6 fragment header). */
  fragment?: { offset: number; more: boolean; id: number };
  /** The L4 bytes (up to the IP length; Ethernet padding is excluded). */
  l4: Buffer;
  /** Parsed only when the L4 header is in this packet (not a later fragment). */
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
}

function truncated(what: string): never {
  throw new RangeError(`truncated frame: ${what}`);
}

const macText = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** Parses an Ethernet frame carrying IPv4/IPv6. Throws on truncated or non-IP frames. */
export function parseFrame(buf: Buffer): ParsedFrame {
  if (buf.length < ETH_HLEN) truncated('ethernet');
  let off = 12;
  let ethertype = buf.readUInt16BE(off);
  let vlan: number | undefined;
  while (ethertype === ETH_P_8021Q || ethertype === ETH_P_8021AD) {
    if (buf.length < off + 6) truncated('vlan');
    vlan = buf.readUInt16BE(off + 2) & 0xfff; // the innermost tag wins
    off += 4;
    ethertype = buf.readUInt16BE(off);
  }
  const l3 = off + 2;
  const base = { dstMac: macText(buf.subarray(0, 6)), srcMac: macText(buf.subarray(6, 12)), l3Offset: l3 };
  let f: ParsedFrame;
  if (ethertype === ETH_P_IP) f = { ...base, ...parseIpv4(buf, l3) };
  else if (ethertype === ETH_P_IPV6) f = { ...base, ...parseIpv6(buf, l3) };
  else throw new TypeError(`not IP: ethertype 0x${ethertype.toString(16)}`);
  if (vlan !== undefined) f.vlan = vlan;
  if (!f.fragment || f.fragment.offset === 0) parseL4(f);
  return f;
}

type L3Part = Omit<ParsedFrame, 'dstMac' | 'srcMac' | 'l3Offset'>;

function parseIpv4(buf: Buffer, l3: number): L3Part {
  if (buf.length < l3 + 20) truncated('IPv4 header');
  const ihl = (buf[l3]! & 0xf) * 4;
  if (buf[l3]! >> 4 !== 4 || ihl < 20) throw new RangeError('bad IPv4 version/IHL');
  const total = buf.readUInt16BE(l3 + 2);
  if (total < ihl || buf.length < l3 + total) truncated('IPv4 total length');
  const fragWord = buf.readUInt16BE(l3 + 6);
  const id = buf.readUInt16BE(l3 + 4);
  const more = (fragWord & 0x2000) !== 0;
  const offset = (fragWord & 0x1fff) * 8;
  const out: L3Part = {
    family: 4,
    saddr: buf.subarray(l3 + 12, l3 + 16).join('.'),
    daddr: buf.subarray(l3 + 16, l3 + 20).join('.'),
    ttl: buf[l3 + 8]!,
    protocol: buf[l3 + 9]!,
    l4Offset: l3 + ihl,
    ipHeaderLen: ihl,
    ipTotalLen: total,
    payloadLen: total - ihl,
    ipChecksumOk: inetChecksum(buf.subarray(l3, l3 + ihl)) === 0,
    ipId: id,
    dontFragment: (fragWord & 0x4000) !== 0,
    l4: Buffer.from(buf.subarray(l3 + ihl, l3 + total)),
  };
  if (more || offset) out.fragment = { offset, more, id };
  return out;
}

function parseIpv6(buf: Buffer, l3: number): L3Part {
  if (buf.length < l3 + 40) truncated('IPv6 header');
  if (buf[l3]! >> 4 !== 6) throw new RangeError('bad IPv6 version');
  const plen = buf.readUInt16BE(l3 + 4);
  const end = l3 + 40 + plen;
  if (buf.length < end) truncated('IPv6 payload length');
  let next = buf[l3 + 6]!;
  let off = l3 + 40;
  let fragment: ParsedFrame['fragment'];
  // Walk hop-by-hop, routing, fragment and destination options headers.
  for (;;) {
    if (next === 0 || next === 43 || next === 60) {
      if (end < off + 8) truncated('IPv6 extension header');
      const len = (buf[off + 1]! + 1) * 8;
      next = buf[off]!;
      off += len;
    } else if (next === IPPROTO_FRAGMENT) {
      if (end < off + 8) truncated('IPv6 fragment header');
      const w = buf.readUInt16BE(off + 2);
      fragment = { offset: w & 0xfff8, more: (w & 1) !== 0, id: buf.readUInt32BE(off + 4) };
      next = buf[off]!;
      off += 8;
    } else break;
  }
  if (off > end) truncated('IPv6 extension headers');
  const out: L3Part = {
    family: 6,
    saddr: addrFrom16(buf.subarray(l3 + 8, l3 + 24)),
    daddr: addrFrom16(buf.subarray(l3 + 24, l3 + 40)),
    ttl: buf[l3 + 7]!,
    protocol: next,
    l4Offset: off,
    ipHeaderLen: off - l3,
    ipTotalLen: 40 + plen,
    payloadLen: plen,
    ipChecksumOk: true,
    l4: Buffer.from(buf.subarray(off, end)),
  };
  if (fragment) out.fragment = fragment;
  return out;
}

function parseL4(f: ParsedFrame): void {
  const l4 = f.l4;
  const pseudo = (proto: number): Buffer => pseudoHeader(f.family, f.saddr, f.daddr, proto, l4.length);
  if (f.protocol === IPPROTO_TCP) {
    if (l4.length < 20) truncated('TCP header');
    const doff = l4[12]! >> 4;
    const hlen = doff * 4;
    if (hlen < 20 || hlen > l4.length) throw new RangeError(`bad TCP data offset ${doff}`);
    f.tcp = {
      sport: l4.readUInt16BE(0),
      dport: l4.readUInt16BE(2),
      seq: l4.readUInt32BE(4),
      ack: l4.readUInt32BE(8),
      flags: tcpFlagsFrom(l4[13]!),
      flagBits: l4[13]!,
      doff,
      window: l4.readUInt16BE(14),
      checksum: l4.readUInt16BE(16),
      urgent: l4.readUInt16BE(18),
      options: Buffer.from(l4.subarray(20, hlen)),
      payload: Buffer.from(l4.subarray(hlen)),
      checksumOk: inetChecksum(pseudo(IPPROTO_TCP), l4) === 0,
    };
  } else if (f.protocol === IPPROTO_UDP) {
    if (l4.length < 8) truncated('UDP header');
    const checksum = l4.readUInt16BE(6);
    f.udp = {
      sport: l4.readUInt16BE(0),
      dport: l4.readUInt16BE(2),
      length: l4.readUInt16BE(4),
      checksum,
      payload: Buffer.from(l4.subarray(8)),
      // IPv4 allows "no checksum" (0); IPv6 does not.
      checksumOk: (checksum === 0 && f.family === 4) || inetChecksum(pseudo(IPPROTO_UDP), l4) === 0,
    };
  } else if (f.protocol === IPPROTO_ICMP || f.protocol === IPPROTO_ICMPV6) {
    if (l4.length < 8) truncated('ICMP header');
    f.icmp = {
      type: l4[0]!,
      code: l4[1]!,
      checksum: l4.readUInt16BE(2),
      id: l4.readUInt16BE(4),
      seq: l4.readUInt16BE(6),
      payload: Buffer.from(l4.subarray(8)),
      checksumOk:
        (f.protocol === IPPROTO_ICMPV6 ? inetChecksum(pseudo(IPPROTO_ICMPV6), l4) : inetChecksum(l4)) === 0,
    };
  }
}
