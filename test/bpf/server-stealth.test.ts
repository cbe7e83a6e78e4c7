// spak-test-modes: xdp tc
// The XDP server (build/server.bpf.o) through BPF_PROG_TEST_RUN: stealth for closed ports
// (bpf/spak_stealth.h). Every case asserts the verdict and the one reason counter that moved.
// The program asks the kernel's socket tables of the netns it runs in (BPF_PROG_TEST_RUN runs
// XDP on this process's loopback), so this file opens a real TCP listener and a real UDP socket
// on the wildcard address at free ports, and finds ports with no socket the same way. Setup:
// server-fixtures.ts (198.51.100.1 and 2001:db8::1 protected on 22 and 8022).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { buildTcp, buildUdp, linuxSynOptions } from '../support/packet.js';
import { type ServerReason } from '../../src/wire/reasons.js';
import { DEFAULT_SETUP, FAMILIES, fileServer, segment, validSyn, type Endpoints } from './server-fixtures.js';

const file = fileServer();

let listener: Server;
let udpSock: UdpSocket;
/** A TCP port with a listener, a UDP port with a bound socket, and ports with neither. */
const ports = { listening: 0, udpBound: 0, closed: [] as number[], udpClosed: [] as number[] };

function listen(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '::', port: 0, ipv6Only: false }, () => resolve(s));
  });
}

/** Ports that had no socket a moment ago: bound, then closed again. */
async function freeTcpPorts(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = await listen();
    out.push((s.address() as AddressInfo).port);
    await new Promise<void>((r) => s.close(() => r()));
  }
  return out;
}

async function freeUdpPorts(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = createSocket({ type: 'udp6', ipv6Only: false });
    await new Promise<void>((r) => s.bind(0, '::', () => r()));
    out.push(s.address().port);
    await new Promise<void>((r) => s.close(() => r()));
  }
  return out;
}

before(async () => {
  listener = await listen();
  ports.listening = (listener.address() as AddressInfo).port;
  udpSock = createSocket({ type: 'udp6', ipv6Only: false });
  await new Promise<void>((r) => udpSock.bind(0, '::', () => r()));
  ports.udpBound = udpSock.address().port;
  ports.closed = (await freeTcpPorts(3)).filter((p) => p !== ports.listening);
  ports.udpClosed = (await freeUdpPorts(2)).filter((p) => p !== ports.udpBound);
});

after(async () => {
  await new Promise<void>((r) => (listener ? listener.close(() => r()) : r()));
  await new Promise<void>((r) => (udpSock ? udpSock.close(() => r()) : r()));
});

function syn(e: Endpoints, dport: number, o: { daddr?: string; flags?: Parameters<typeof buildTcp>[0]['flags'] } = {}): Buffer {
  return buildTcp({
    family: e.family, saddr: e.client, daddr: o.daddr ?? e.server, sport: 41000, dport, seq: 0x1000,
    flags: o.flags ?? { syn: true }, options: linuxSynOptions(),
  });
}

/** The flags of nmap's scans other than the SYN scan (the window scan sends ACKs too), and a SYN-ACK. */
const SCAN_FLAGS: [string, Parameters<typeof buildTcp>[0]['flags']][] = [
  ['ACK (-sA, -sW)', { ack: true }],
  ['FIN (-sF)', { fin: true }],
  ['NULL (-sN)', {}],
  ['Xmas (-sX)', { fin: true, psh: true, urg: true }],
  ['FIN/ACK (-sM)', { fin: true, ack: true }],
  ['SYN-ACK', { syn: true, ack: true }],
];

/** file.srv.expect, its failure naming the probe. */
function expectAs(frame: Buffer, reason: ServerReason, what: string): void {
  try {
    file.srv.expect(frame, reason);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`);
  }
}

function udp(e: Endpoints, dport: number, daddr = e.server): Buffer {
  return buildUdp({ family: e.family, saddr: e.client, daddr, sport: 41001, dport, payload: Buffer.from('probe') });
}

for (const e of Object.values(FAMILIES)) {
  describe(`stealth IPv${e.family}: SYNs`, () => {
    test('stealth off: a SYN to a closed port of a protected address passes (the kernel answers RST)', () => {
      file.use({ stealth: false });
      file.srv.expect(syn(e, ports.closed[0]!), 'pass_other');
    });

    test('stealth on: a SYN to a closed port of a protected address -> drop_stealth_syn', () => {
      file.use({ stealth: true });
      for (const p of ports.closed) file.srv.expect(syn(e, p), 'drop_stealth_syn');
    });

    test('stealth on: a SYN to a listening unprotected port passes', () => {
      file.use({ stealth: true });
      file.srv.expect(syn(e, ports.listening), 'pass_other');
    });

    test('stealth off: every flag combination to a closed port of a protected address passes (the kernel answers RST)', () => {
      file.use({ stealth: false });
      for (const [what, flags] of SCAN_FLAGS) expectAs(syn(e, ports.closed[0]!, { flags }), 'pass_other', what);
    });

    test('stealth on: ACK, FIN, NULL, Xmas, Maimon, SYN-ACK to a closed port of a protected address -> drop_stealth_segment', () => {
      file.use({ stealth: true });
      for (const p of ports.closed) {
        for (const [what, flags] of SCAN_FLAGS) {
          expectAs(syn(e, p, { flags }), 'drop_stealth_segment', `${what} to ${p}`);
        }
      }
    });

    test('stealth on: a RST to a closed port passes (the kernel never answers one)', () => {
      file.use({ stealth: true });
      file.srv.expect(syn(e, ports.closed[0]!, { flags: { rst: true } }), 'pass_other');
      file.srv.expect(syn(e, ports.closed[0]!, { flags: { rst: true, ack: true } }), 'pass_other');
    });

    test('stealth on: every flag combination to a listening unprotected port passes (its RST to a stray ACK is normal TCP)', () => {
      file.use({ stealth: true });
      for (const [what, flags] of SCAN_FLAGS) expectAs(syn(e, ports.listening, { flags }), 'pass_other', what);
    });

    test('stealth on: segments to a closed port of an unprotected address pass', () => {
      file.use({ stealth: true });
      for (const [what, flags] of SCAN_FLAGS) {
        expectAs(syn(e, ports.closed[0]!, { flags, daddr: e.unprotected }), 'pass_other', what);
      }
    });

    test('stealth on: a SYN to a closed port of an address spak does not protect passes', () => {
      file.use({ stealth: true });
      file.srv.expect(syn(e, ports.closed[0]!, { daddr: e.unprotected }), 'pass_other');
    });

    test('stealth on, wildcard protection: every address of the family is protected, so its closed ports are silent', () => {
      file.use({ stealth: true, protect: [{ address: e.family === 4 ? '0.0.0.0' : '::', port: 22 }] });
      file.srv.expect(syn(e, ports.closed[0]!, { daddr: e.unprotected }), 'drop_stealth_syn');
      file.srv.expect(syn(e, ports.listening, { daddr: e.unprotected }), 'pass_other');
    });

    test('a port protected on another address: its closed twin on the protected address is silent only with stealth', () => {
      const p = ports.closed[1]!;
      const protect = [...DEFAULT_SETUP.protect, { address: e.family === 4 ? '198.51.100.7' : '2001:db8::7', port: p }];
      file.use({ stealth: false, protect });
      file.srv.expect(syn(e, p), 'pass_unprotected');
      file.use({ stealth: true, protect });
      file.srv.expect(syn(e, p), 'drop_stealth_syn');
      // A segment there misses the flow table, then finds no destination on this address.
      file.srv.expect(syn(e, p, { flags: { ack: true } }), 'drop_stealth_segment');
      file.use({ stealth: false, protect });
      file.srv.expect(syn(e, p, { flags: { ack: true } }), 'pass_unprotected');
    });

    test('stealth on: the protected port keeps its own verdicts (untagged -> drop_no_option, no flow -> drop_flow_miss, valid -> pass_valid_syn)', async () => {
      file.use({ stealth: true });
      file.srv.expect(syn(e, 22), 'drop_no_option');
      for (const [what, flags] of SCAN_FLAGS) expectAs(syn(e, 22, { flags }), 'drop_flow_miss', what);
      file.srv.expect(validSyn(e, await file.step()), 'pass_valid_syn');
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test('stealth on: always-allow still admits an untagged SYN to the protected port', () => {
      file.use({ stealth: true });
      file.srv.update({ alwaysAllow: [e.family === 4 ? `${e.client}/32` : `${e.client}/128`] });
      try {
        file.srv.expect(syn(e, 22), 'pass_always');
        file.srv.expect(syn(e, ports.closed[0]!), 'drop_stealth_syn');
      } finally {
        file.srv.update({ alwaysAllow: [] });
      }
    });

    test('stealthUdp alone leaves TCP to closed ports alone', () => {
      file.use({ stealth: false, stealthUdp: true });
      file.srv.expect(syn(e, ports.closed[0]!), 'pass_other');
      file.srv.expect(syn(e, ports.closed[0]!, { flags: { ack: true } }), 'pass_other');
    });
  });

  describe(`stealth IPv${e.family}: UDP`, () => {
    test('stealthUdp off: a datagram to a closed port passes (the kernel answers ICMP port unreachable)', () => {
      file.use({ stealth: true, stealthUdp: false });
      file.srv.expect(udp(e, ports.udpClosed[0]!), 'pass_other');
    });

    test('stealthUdp on: a datagram to a closed port of a protected address -> drop_stealth_udp', () => {
      file.use({ stealthUdp: true });
      for (const p of ports.udpClosed) file.srv.expect(udp(e, p), 'drop_stealth_udp');
    });

    test('stealthUdp on: a datagram to a bound socket passes (replies to the host\'s own sockets too)', () => {
      file.use({ stealthUdp: true });
      file.srv.expect(udp(e, ports.udpBound), 'pass_other');
    });

    test('stealthUdp on: a closed port of an unprotected address passes', () => {
      file.use({ stealthUdp: true });
      file.srv.expect(udp(e, ports.udpClosed[0]!, e.unprotected), 'pass_other');
    });

    test('stealthUdp on, wildcard protection: multicast passes (never answered with ICMP), unicast is dropped', () => {
      file.use({ stealthUdp: true, protect: [{ address: e.family === 4 ? '0.0.0.0' : '::', port: 22 }] });
      file.srv.expect(udp(e, ports.udpClosed[0]!, e.family === 4 ? '224.0.0.251' : 'ff02::fb'), 'pass_other');
      file.srv.expect(udp(e, ports.udpClosed[0]!, e.unprotected), 'drop_stealth_udp');
    });

    test('stealthUdp on: a UDP port protected on another address -> its closed twin on the protected address is dropped', () => {
      const p = ports.udpClosed[1]!;
      const protect = [...DEFAULT_SETUP.protect, { address: e.family === 4 ? '198.51.100.7' : '2001:db8::7', port: p, protocol: 'udp' as const }];
      file.use({ stealthUdp: false, protect });
      file.srv.expect(udp(e, p), 'pass_unprotected');
      file.use({ stealthUdp: true, protect });
      file.srv.expect(udp(e, p), 'drop_stealth_udp');
    });

    test('stealthUdp on: a protected UDP destination keeps its own verdict', () => {
      const p = ports.udpClosed[0]!;
      file.use({ stealthUdp: true, protect: [...DEFAULT_SETUP.protect, { address: e.server, port: p, protocol: 'udp' }] });
      file.srv.expect(udp(e, p), 'drop_udp_not_allowed');
    });
  });
}

/*
 * The host's own connections: a real loopback connection, with the loopback address protected
 * (on port 22, which has nothing to do with the connection). Segments of it, in either
 * direction, find their sockets and pass with stealth on; the same flags to a closed port of
 * the same address are dropped.
 */
for (const [family, lo] of [[4, '127.0.0.1'], [6, '::1']] as const) {
  describe(`stealth IPv${family}: established connections on a protected address`, () => {
    let server: Server;
    let client: Socket;
    const conn = { listen: 0, local: 0 };

    before(async () => {
      server = await new Promise<Server>((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen({ host: lo, port: 0 }, () => resolve(s));
      });
      conn.listen = (server.address() as AddressInfo).port;
      client = await new Promise<Socket>((resolve, reject) => {
        const c = connect({ host: lo, port: conn.listen }, () => resolve(c));
        c.once('error', reject);
      });
      conn.local = client.localPort!;
    });

    after(async () => {
      client?.destroy();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    });

    function seg(sport: number, dport: number, flags: Parameters<typeof buildTcp>[0]['flags']): Buffer {
      return buildTcp({ family, saddr: lo, daddr: lo, sport, dport, seq: 0x2000, ack: 0x3000, flags });
    }

    test('stealth on: ACK and FIN/ACK of the host\'s own outgoing connection (its socket) pass; a closed port drops them', () => {
      file.use({ stealth: true, protect: [{ address: lo, port: 22 }] });
      for (const [what, flags] of [['ACK', { ack: true }], ['FIN/ACK', { fin: true, ack: true }], ['SYN-ACK', { syn: true, ack: true }]] as const) {
        expectAs(seg(conn.listen, conn.local, flags), 'pass_other', `${what} to the connecting side`);
        expectAs(seg(conn.local, conn.listen, flags), 'pass_other', `${what} to the accepting side`);
        expectAs(seg(conn.listen, ports.closed[0]!, flags), 'drop_stealth_segment', `${what} to a closed port`);
      }
    });
  });
}

describe('stealth: the sockets the cases rely on', () => {
  beforeEach(() => file.use({ stealth: true, stealthUdp: true }));
  test('the closed ports are distinct from the open ones', () => {
    assert.ok(ports.closed.length >= 2 && ports.udpClosed.length >= 2);
    assert.ok(!ports.closed.includes(ports.listening));
    assert.ok(!ports.udpClosed.includes(ports.udpBound));
  });
});
