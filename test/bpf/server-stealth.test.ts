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
import { createServer, type AddressInfo, type Server } from 'node:net';
import { buildTcp, buildUdp, linuxSynOptions } from '../support/packet.js';
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

    test('stealth on: SYN-ACK, ACK, RST and FIN to a closed port pass (replies to the host\'s own connections)', () => {
      file.use({ stealth: true });
      const p = ports.closed[0]!;
      file.srv.expect(syn(e, p, { flags: { syn: true, ack: true } }), 'pass_other');
      file.srv.expect(syn(e, p, { flags: { ack: true } }), 'pass_other');
      file.srv.expect(syn(e, p, { flags: { rst: true } }), 'pass_other');
      file.srv.expect(syn(e, p, { flags: { fin: true, ack: true } }), 'pass_other');
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
    });

    test('stealth on: the protected port keeps its own verdicts (untagged -> drop_no_option, valid -> pass_valid_syn)', async () => {
      file.use({ stealth: true });
      file.srv.expect(syn(e, 22), 'drop_no_option');
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

    test('stealthUdp alone leaves SYNs to closed ports alone', () => {
      file.use({ stealth: false, stealthUdp: true });
      file.srv.expect(syn(e, ports.closed[0]!), 'pass_other');
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

describe('stealth: the sockets the cases rely on', () => {
  beforeEach(() => file.use({ stealth: true, stealthUdp: true }));
  test('the closed ports are distinct from the open ones', () => {
    assert.ok(ports.closed.length >= 2 && ports.udpClosed.length >= 2);
    assert.ok(!ports.closed.includes(ports.listening));
    assert.ok(!ports.udpClosed.includes(ports.udpBound));
  });
});
