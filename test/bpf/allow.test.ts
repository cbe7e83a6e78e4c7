// spak-test-timeout: 600
// spak-test-modes: xdp tc
// The second and third ways into a protected destination (bpf/spak_allow.h): the knock allowlist
// and the always-allow list, for TCP and for protected UDP destinations (bpf/spak_udp.h), through
// BPF_PROG_TEST_RUN. Entries are written by the daemon's own writer (src/server/allowlist.ts);
// every case asserts the verdict and the one reason counter that moved. Needs root and `make bpf`.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { monotonicNs } from '../../src/bpf/clock.js';
import { generateX25519 } from '../../src/knock/keys.js';
import { allowSource, revokeSource, sweepAllowlist, writeAlwaysAllow } from '../../src/server/allowlist.js';
import {
  decodeAllowEntry,
  decodeFlowKey,
  encodeAllowKey,
  encodeFlowKey,
  IPPROTO_UDP,
  type L4Proto,
} from '../../src/wire/layout.js';
import { buildUdp, linuxSynOptions, type UdpParams } from '../support/packet.js';
import { KEY1, NS_PER_S, ServerHarness, settledStep, type ServerSetup } from './harness.js';
import { FAMILIES, rawSyn, segment, validSyn, type Endpoints } from './server-fixtures.js';
import { knockMapOptions } from '../../src/knock/prefilter.js';

const UDP_PORT = 51820;
const KNOCK_PORT = 62201;
const knockServer = generateX25519();
const knockClient = generateX25519();

const SETUP: ServerSetup = {
  keys: [{ id: 1, key: KEY1 }],
  protect: [
    { address: FAMILIES[4].server, port: 22 }, { address: FAMILIES[6].server, port: 22 },
    { address: FAMILIES[4].server, port: UDP_PORT, protocol: 'udp' }, { address: FAMILIES[6].server, port: UDP_PORT, protocol: 'udp' },
  ],
};

let srv: ServerHarness;
before(() => {
  srv = new ServerHarness();
  srv.configure(SETUP);
  srv.update({ knock: knockMapOptions({ port: KNOCK_PORT, clients: [knockClient.publicKey], serverKey: knockServer.privateKey, rate: 1e6, burst: 1e6 }) });
});
after(() => srv?.close());

const allowMap = () => srv.program.map('spak_allow');
const flowKeys = () => srv.flows.keys().map((k) => decodeFlowKey(k));

function clearAllow(): void {
  for (const k of allowMap().keys()) allowMap().delete(k);
}

/** An allowlist entry for e.client (or addr) expiring in s seconds (negative: already expired). */
function allow(addr: string, proto: L4Proto, port: number, s: number, o: { idleS?: number; graceS?: number } = {}): void {
  allowSource(allowMap(), {
    addr, proto, port, expiresNs: monotonicNs() + BigInt(Math.round(s * 1000)) * 1_000_000n,
    ...(o.idleS !== undefined ? { idleNs: BigInt(o.idleS) * NS_PER_S } : {}),
    ...(o.graceS !== undefined ? { graceNs: BigInt(o.graceS) * NS_PER_S } : {}),
  });
}

function storedExpiry(addr: string, proto: L4Proto, port: number): bigint {
  return decodeAllowEntry(allowMap().lookup(encodeAllowKey({ addr, proto, port }))!).expiresNs;
}

/** A SYN without our option. */
const bareSyn = (e: Endpoints, o: { saddr?: string; sport?: number; dport?: number } = {}) => rawSyn(e, Buffer.alloc(0), o);

function dgram(e: Endpoints, o: Partial<UdpParams> = {}): Buffer {
  return buildUdp({ family: e.family, saddr: e.client, daddr: e.server, sport: 50000, dport: UDP_PORT, payload: Buffer.from('hello'), ...o });
}

for (const e of Object.values(FAMILIES)) {
  describe(`allowlist IPv${e.family}: TCP`, () => {
    beforeEach(() => {
      srv.reset();
      clearAllow();
    });

    test('SYN without a tag from an allowlisted source -> pass_allowlisted, flow recorded; its ACK -> pass_flow', () => {
      allow(e.client, 'tcp', 22, 60);
      srv.expect(bareSyn(e), 'pass_allowlisted');
      assert.deepEqual(flowKeys(), [{ saddr: e.client, daddr: e.server, sport: 40000, dport: 22, proto: 6 }]);
      srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test('not allowlisted, another port, another protocol, or expired -> today\'s reasons', () => {
      srv.expect(bareSyn(e), 'drop_no_option');
      allow(e.client, 'tcp', 2222, 60);
      allow(e.client, 'udp', 22, 60);
      allow(e.other, 'tcp', 22, -1);
      srv.expect(bareSyn(e), 'drop_no_option');
      srv.expect(bareSyn(e, { saddr: e.other }), 'drop_no_option');
      srv.expect(segment(e, { ack: true }), 'drop_flow_miss');
      srv.expect(segment(e, { ack: true }, { saddr: e.other }), 'drop_flow_miss');
      assert.equal(srv.flows.keys().length, 0);
    });

    test('any option or tag failure from an allowlisted source -> pass_allowlisted; from others the failure', async () => {
      const step = await settledStep(srv.stepSeconds);
      allow(e.client, 'tcp', 22, 60);
      const badTag = { option: { tag: Buffer.alloc(8, 0x42) } };
      srv.expect(validSyn(e, step, badTag), 'pass_allowlisted');
      srv.expect(validSyn(e, step - 5, { sport: 40001 }), 'pass_allowlisted');
      srv.expect(validSyn(e, step, { ...badTag, saddr: e.other }), 'drop_bad_tag');
      srv.expect(validSyn(e, step - 5, { saddr: e.other }), 'drop_stale_step');
    });

    test('replay: a tag first used by another source -> pass_allowlisted when the sender is allowlisted, else drop_replay', async () => {
      const step = await settledStep(srv.stepSeconds);
      srv.expect(validSyn(e, step), 'pass_valid_syn');
      srv.expect(validSyn(e, step, { saddr: e.other }), 'drop_replay');
      allow(e.other, 'tcp', 22, 60);
      srv.expect(validSyn(e, step, { saddr: e.other }), 'pass_allowlisted');
    });

    test('flows outlive the window: after revocation the ACK passes, a new SYN does not', () => {
      allow(e.client, 'tcp', 22, 60);
      srv.expect(bareSyn(e), 'pass_allowlisted');
      assert.equal(revokeSource(allowMap(), { addr: e.client, proto: 'tcp', port: 22 }), true);
      assert.equal(revokeSource(allowMap(), { addr: e.client, proto: 'tcp', port: 22 }), false);
      srv.expect(segment(e, { ack: true }), 'pass_flow');
      srv.expect(segment(e, { fin: true, ack: true }), 'pass_flow_end');
      srv.expect(bareSyn(e, { sport: 40001 }), 'drop_no_option');
    });

    test('segment with no flow from an allowlisted source -> pass_allowlisted (flow recorded; not for FIN/RST)', () => {
      allow(e.client, 'tcp', 22, 60);
      srv.expect(segment(e, { rst: true }, { sport: 40001 }), 'pass_allowlisted');
      assert.equal(srv.flows.keys().length, 0);
      srv.expect(segment(e, { ack: true }), 'pass_allowlisted');
      assert.equal(srv.flows.keys().length, 1);
      revokeSource(allowMap(), { addr: e.client, proto: 'tcp', port: 22 });
      srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test('idle extension: a passing SYN pushes the expiry to now + idle; never shortens; idle 0 leaves it', () => {
      allow(e.client, 'tcp', 22, 2, { idleS: 60 });
      const t0 = monotonicNs();
      srv.expect(bareSyn(e), 'pass_allowlisted');
      const t1 = monotonicNs();
      const got = storedExpiry(e.client, 'tcp', 22);
      // bpf_ktime_get_coarse_ns() may trail the precise clock by a tick.
      assert.ok(got >= t0 + 60n * NS_PER_S - 50_000_000n && got <= t1 + 60n * NS_PER_S, `expiry ${got - t0} ns after t0`);
      allow(e.client, 'tcp', 22, 120, { idleS: 60 });
      const long = storedExpiry(e.client, 'tcp', 22);
      srv.expect(bareSyn(e, { sport: 40001 }), 'pass_allowlisted');
      assert.equal(storedExpiry(e.client, 'tcp', 22), long);
      allow(e.client, 'tcp', 22, 2);
      const short = storedExpiry(e.client, 'tcp', 22);
      srv.expect(bareSyn(e, { sport: 40002 }), 'pass_allowlisted');
      assert.equal(storedExpiry(e.client, 'tcp', 22), short);
    });

    test('grace: a FIN or RST of the source pulls the expiry in to now + grace; grace 0 leaves it', () => {
      allow(e.client, 'tcp', 22, 60, { graceS: 1 });
      srv.expect(bareSyn(e), 'pass_allowlisted');
      srv.expect(segment(e, { ack: true }), 'pass_flow');
      const far = storedExpiry(e.client, 'tcp', 22);
      srv.expect(segment(e, { fin: true, ack: true }), 'pass_flow_end');
      const t1 = monotonicNs();
      const got = storedExpiry(e.client, 'tcp', 22);
      assert.ok(got < far && got <= t1 + NS_PER_S && got >= t1 + NS_PER_S - 100_000_000n, `expiry ${got - t1} ns after t1`);
      allow(e.client, 'tcp', 22, 60, { graceS: 1 });
      srv.expect(segment(e, { rst: true }, { sport: 40009 }), 'pass_allowlisted'); // no flow: grace too
      assert.ok(storedExpiry(e.client, 'tcp', 22) <= monotonicNs() + NS_PER_S);
      allow(e.client, 'tcp', 22, 60);
      const kept = storedExpiry(e.client, 'tcp', 22);
      srv.expect(segment(e, { rst: true }), 'pass_flow_end');
      assert.equal(storedExpiry(e.client, 'tcp', 22), kept);
    });
  });

  describe(`always-allow IPv${e.family}`, () => {
    const prefix = e.family === 4 ? '198.51.100.0/30' : '2001:db8::/126';
    const outside = e.family === 4 ? '198.51.100.4' : '2001:db8::4';
    const exact = e.family === 4 ? '203.0.113.77' : '2001:db8:ffff::77';
    beforeEach(() => {
      srv.reset();
      clearAllow();
      srv.update({ alwaysAllow: [prefix, exact] });
    });
    after(() => srv.update({ alwaysAllow: [] }));

    test('inside the prefix or the exact address -> pass_always (SYN records a flow); just outside -> today\'s reasons', () => {
      srv.expect(bareSyn(e), 'pass_always');
      assert.deepEqual(flowKeys(), [{ saddr: e.client, daddr: e.server, sport: 40000, dport: 22, proto: 6 }]);
      srv.expect(bareSyn(e, { saddr: exact }), 'pass_always');
      srv.expect(bareSyn(e, { saddr: outside }), 'drop_no_option');
      srv.expect(segment(e, { ack: true }, { saddr: outside }), 'drop_flow_miss');
    });

    test('a segment with no flow from an always-allowed source -> pass_always, no flow needed', () => {
      srv.expect(segment(e, { ack: true }, { sport: 41000 }), 'pass_always');
      assert.equal(srv.flows.keys().length, 0);
    });

    test('UDP to a protected destination -> pass_always, no flow; outside -> drop_udp_not_allowed', () => {
      srv.expect(dgram(e), 'pass_always');
      assert.equal(srv.flows.keys().length, 0);
      srv.expect(dgram(e, { saddr: outside }), 'drop_udp_not_allowed');
    });

    test('the list is replaced, not added to; a bad entry changes nothing', () => {
      assert.throws(() => writeAlwaysAllow(srv.program.map('spak_always'), [exact, '198.51.100.1/24']), /host bits/);
      assert.throws(() => writeAlwaysAllow(srv.program.map('spak_always'), ['2001:db8::/129']), /prefix length/);
      srv.expect(bareSyn(e), 'pass_always');
      srv.update({ alwaysAllow: [exact] });
      srv.expect(bareSyn(e), 'drop_no_option');
      srv.update({ alwaysAllow: [] });
      assert.equal(srv.program.map('spak_always').keys().length, 0);
      srv.expect(bareSyn(e, { saddr: exact }), 'drop_no_option');
    });
  });

  describe(`allowlist IPv${e.family}: UDP`, () => {
    beforeEach(() => {
      srv.reset();
      clearAllow();
    });

    test('allowlisted datagram -> pass_allowlisted, UDP flow recorded; after revocation the flow passes it', () => {
      allow(e.client, 'udp', UDP_PORT, 60);
      srv.expect(dgram(e), 'pass_allowlisted');
      assert.deepEqual(flowKeys(), [{ saddr: e.client, daddr: e.server, sport: 50000, dport: UDP_PORT, proto: IPPROTO_UDP }]);
      revokeSource(allowMap(), { addr: e.client, proto: 'udp', port: UDP_PORT });
      srv.expect(dgram(e), 'pass_flow');
      srv.expect(dgram(e, { sport: 50001 }), 'drop_udp_not_allowed');
    });

    test('not allowlisted, a TCP entry, or expired -> drop_udp_not_allowed', () => {
      srv.expect(dgram(e), 'drop_udp_not_allowed');
      allow(e.client, 'tcp', UDP_PORT, 60);
      allow(e.other, 'udp', UDP_PORT, -1);
      srv.expect(dgram(e), 'drop_udp_not_allowed');
      srv.expect(dgram(e, { saddr: e.other }), 'drop_udp_not_allowed');
      assert.equal(srv.flows.keys().length, 0);
    });

    test('a TCP flow does not open the UDP port, nor a UDP flow the TCP one', () => {
      srv.flows.update(encodeFlowKey({ saddr: e.client, daddr: e.server, sport: 50000, dport: UDP_PORT }), Buffer.alloc(8));
      srv.expect(dgram(e), 'drop_udp_not_allowed');
      srv.flows.update(encodeFlowKey({ saddr: e.client, daddr: e.server, sport: 40000, dport: 22, proto: IPPROTO_UDP }), Buffer.alloc(8));
      srv.expect(segment(e, { ack: true }), 'drop_flow_miss');
    });

    test('unprotected UDP ports, unprotected addresses, TCP to the UDP port and the knock port behave as before', () => {
      srv.expect(dgram(e, { dport: 53 }), 'pass_other');
      srv.expect(dgram(e, { daddr: e.unprotected }), 'pass_unprotected');
      srv.expect(bareSyn(e, { dport: UDP_PORT }), 'pass_other');
      srv.expect(dgram(e, { dport: KNOCK_PORT }), 'drop_knock_malformed');
      allow(e.client, 'udp', KNOCK_PORT, 60);
      srv.expect(dgram(e, { dport: KNOCK_PORT }), 'drop_knock_malformed');
    });

    test('idle extension on a passing datagram', () => {
      allow(e.client, 'udp', UDP_PORT, 2, { idleS: 30 });
      const t0 = monotonicNs();
      srv.expect(dgram(e), 'pass_allowlisted');
      const got = storedExpiry(e.client, 'udp', UDP_PORT);
      assert.ok(got >= t0 + 30n * NS_PER_S - 50_000_000n && got <= monotonicNs() + 30n * NS_PER_S);
    });

    test('a first fragment is judged like a datagram; later fragments pass', () => {
      const frag = (o: Partial<UdpParams>) => dgram(e, {
        ...(e.family === 4 ? { moreFragments: true } : { ipv6Fragment: { offset: 0, more: true, id: 7 } }), ...o,
      });
      srv.expect(frag({}), 'drop_udp_not_allowed');
      allow(e.client, 'udp', UDP_PORT, 60);
      srv.expect(frag({}), 'pass_allowlisted');
      const later = e.family === 4 ? { fragOffset: 8, moreFragments: false } : { ipv6Fragment: { offset: 8, more: false, id: 7 } };
      srv.expect(dgram(e, { saddr: e.other, ...later }), 'pass_other');
    });
  });
}

describe('allowlist: one address and port protected for TCP and UDP', () => {
  before(() => srv.configure({ ...SETUP, protect: [...SETUP.protect, { address: FAMILIES[4].server, port: UDP_PORT }] }));
  after(() => srv.configure(SETUP));
  beforeEach(() => clearAllow());

  test('each protocol is gated on its own', () => {
    const e = FAMILIES[4];
    srv.expect(bareSyn(e, { dport: UDP_PORT }), 'drop_no_option');
    srv.expect(dgram(e), 'drop_udp_not_allowed');
    allow(e.client, 'udp', UDP_PORT, 60);
    srv.expect(bareSyn(e, { dport: UDP_PORT }), 'drop_no_option');
    srv.expect(dgram(e), 'pass_allowlisted');
    allow(e.client, 'tcp', UDP_PORT, 60);
    srv.expect(bareSyn(e, { dport: UDP_PORT }), 'pass_allowlisted');
  });
});

describe('sweepAllowlist', () => {
  test('removes expired entries only', () => {
    clearAllow();
    for (let i = 0; i < 300; i++) allow(`10.0.${i >> 8}.${i & 255}`, i % 2 ? 'udp' : 'tcp', 22, i < 200 ? -1 : 60);
    assert.equal(sweepAllowlist(allowMap(), monotonicNs()), 200);
    assert.equal(allowMap().keys().length, 100);
    assert.equal(sweepAllowlist(allowMap(), monotonicNs()), 0);
    clearAllow();
  });
});

describe('without knock mode or always-allow the lists are not asked', () => {
  test('an allowlist entry admits nothing on a server that has neither (the drop path stays as cheap as SYN mode alone)', async () => {
    const plain = new ServerHarness();
    try {
      plain.configure(SETUP);
      const e = FAMILIES[4];
      allowSource(plain.program.map('spak_allow'), { addr: e.client, proto: 'tcp', port: 22, expiresNs: monotonicNs() + 60n * NS_PER_S });
      plain.expect(rawSyn(e, linuxSynOptions()), 'drop_no_option');
      plain.expect(segment(e, { ack: true }), 'drop_flow_miss');
      plain.update({ alwaysAllow: ['198.51.100.0/24'] });
      plain.expect(rawSyn(e, linuxSynOptions()), 'pass_allowlisted');
    } finally {
      plain.close();
    }
  });
});
