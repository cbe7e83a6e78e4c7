// spak-test-modes: xdp tc
// The TC egress client (build/client.bpf.o, spak_client) through BPF_PROG_TEST_RUN: the exact
// bytes it emits, its reason counters, and end to end: its output verified by the XDP server.
// Needs root and `make bpf`.
//
// Targets: 198.51.100.1:22 and [2001:db8::1]:22 with key id 1; 198.51.100.1:2200 with key id 7.
// The server here protects the same destinations with keys 1 and 7.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { type ClientReason } from '../../src/wire/reasons.js';
import { timeStepAt } from '../../src/wire/option.js';
import { computeTag, decodeOption, encodeOption } from '../support/option.js';
import {
  buildIcmp,
  buildTcp,
  buildUdp,
  inetChecksum,
  linuxSynOptions,
  parseFrame,
  type TcpFlags,
  type TcpParams,
} from '../support/packet.js';
import { ClientHarness, KEY1, KEY7, ServerHarness, settledStep, type ClientSetup, type ServerSetup } from './harness.js';

const ISN = 0x89abcdef;
const STEP_SECONDS = 30;

type Family = 4 | 6;
const ADDR: Record<Family, { client: string; server: string; other: string }> = {
  4: { client: '198.51.100.2', server: '198.51.100.1', other: '198.51.100.9' },
  6: { client: '2001:db8::2', server: '2001:db8::1', other: '2001:db8::9' },
};

const CLIENT_SETUP: ClientSetup = {
  targets: [
    { address: '198.51.100.1', port: 22, keyId: 1, key: KEY1 },
    { address: '2001:db8::1', port: 22, keyId: 1, key: KEY1 },
    { address: '198.51.100.1', port: 2200, keyId: 7, key: KEY7 },
  ],
  stepSeconds: STEP_SECONDS,
};

const SERVER_SETUP: ServerSetup = {
  keys: [{ id: 1, key: KEY1 }, { id: 7, key: KEY7 }],
  protect: [
    { address: '198.51.100.1', port: 22 },
    { address: '2001:db8::1', port: 22 },
    { address: '198.51.100.1', port: 2200 },
  ],
  stepSeconds: STEP_SECONDS,
  stepWindow: 1,
};

let cli: ClientHarness;
let srv: ServerHarness;

before(() => {
  cli = new ClientHarness();
  srv = new ServerHarness();
  cli.configure(CLIENT_SETUP);
  srv.configure(SERVER_SETUP);
});
after(() => {
  cli?.close();
  srv?.close();
});

/** The TCP part of a segment from the client to the target (everything but flags and options). */
function tcpBase(family: Family, o: Partial<TcpParams> = {}): Omit<TcpParams, 'flags'> {
  const a = ADDR[family];
  return { family, saddr: a.client, daddr: a.server, sport: 40000, dport: 22, seq: ISN, ipId: 0x4d2, ...o };
}

function syn(family: Family, options: Buffer, o: Partial<TcpParams> = {}): Buffer {
  return buildTcp({ ...tcpBase(family, o), flags: { syn: true }, options });
}

function segment(family: Family, flags: TcpFlags, o: Partial<TcpParams> = {}): Buffer {
  return buildTcp({ ...tcpBase(family, o), flags });
}

/** First differing byte, for readable failures. */
function firstDiff(a: Buffer, b: Buffer): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return `first difference at byte ${i}: got 0x${a[i]!.toString(16)}, expected 0x${b[i]!.toString(16)}`;
  }
  return `lengths ${a.length} and ${b.length}`;
}

function assertBytes(got: Buffer, expected: Buffer, what: string): void {
  assert.ok(got.equals(expected), `${what}: ${firstDiff(got, expected)}\n  got      ${got.toString('hex')}\n  expected ${expected.toString('hex')}`);
}

/**
 * Runs a SYN that must be tagged: checks the reason, that the time step in the output is the
 * current one, that parseFrame sees good checksums, and that the output equals, byte for byte,
 * the SYN built in TypeScript with `expectedOptions` followed by our option. Returns the output.
 */
async function expectInjected(
  input: Buffer, p: Omit<TcpParams, 'flags' | 'options'>, expectedOptions: Buffer, keyId = 1, key = KEY1,
): Promise<Buffer> {
  const before = await settledStep(STEP_SECONDS);
  const { reason, dataOut } = cli.run(input);
  const afterStep = timeStepAt(Date.now(), STEP_SECONDS);
  assert.equal(reason, 'injected' satisfies ClientReason);

  const f = parseFrame(dataOut);
  assert.ok(f.tcp, 'output is TCP');
  assert.ok(f.ipChecksumOk, 'IPv4 header checksum of the output');
  assert.ok(f.tcp.checksumOk, 'TCP checksum of the output');
  assert.equal(f.tcp.doff, (20 + expectedOptions.length + 20) / 4);
  const opt = decodeOption(f.tcp.options.subarray(expectedOptions.length));
  assert.ok(opt, 'our option is the last 20 option bytes');
  assert.ok(opt.timeStep === before || opt.timeStep === afterStep,
    `time step ${opt.timeStep} is the current one (${before}..${afterStep})`);

  const tag = computeTag(key, { keyId, dport: p.dport, timeStep: opt.timeStep, seq: p.seq, daddr: p.daddr });
  const expected = buildTcp({
    ...p, flags: { syn: true },
    options: Buffer.concat([expectedOptions, encodeOption({ keyId, timeStep: opt.timeStep, tag })]),
  });
  assertBytes(dataOut, expected, 'tagged SYN');
  return dataOut;
}

/** Runs a frame the client must leave alone, with the given reason. */
function expectUnchanged(input: Buffer, reason: ClientReason): void {
  const r = cli.run(input);
  assert.equal(r.reason, reason);
  assertBytes(r.dataOut, input, 'frame must be unchanged');
}

/* ---------------------------------------------------------------------------------------------- */

for (const family of [4, 6] as const) {
  describe(`client IPv${family}: tagging a Linux SYN, verified by the server`, () => {
    beforeEach(() => {
      cli.configure(CLIENT_SETUP);
      srv.configure(SERVER_SETUP);
    });

    test('Linux SYN -> injected: exact bytes, checksums, current step; the server says pass_valid_syn', async () => {
      const p = tcpBase(family);
      const out = await expectInjected(syn(family, linuxSynOptions()), p, linuxSynOptions());
      const f = parseFrame(out);
      assert.equal(f.ipTotalLen, (family === 4 ? 20 : 40) + 60, 'IP length grew by 20');
      assert.equal(out.length, syn(family, linuxSynOptions()).length + 20);
      srv.expect(out, 'pass_valid_syn');
    });

    test('SYN without options -> injected as the only option (doff 10); server pass_valid_syn', async () => {
      const out = await expectInjected(syn(family, Buffer.alloc(0)), tcpBase(family), Buffer.alloc(0));
      srv.expect(out, 'pass_valid_syn');
    });

    test('the same SYN sent twice (retransmission) gets the same option: pass_valid_syn, then pass_retransmit', async () => {
      await settledStep(STEP_SECONDS);
      const first = cli.run(syn(family, linuxSynOptions()));
      const second = cli.run(syn(family, linuxSynOptions()));
      assertBytes(second.dataOut, first.dataOut, 'retransmitted SYN');
      srv.expect(first.dataOut, 'pass_valid_syn');
      srv.expect(second.dataOut, 'pass_retransmit');
    });

    test('a client tagging with the wrong key -> the server says drop_bad_tag', async () => {
      cli.configure({ ...CLIENT_SETUP, targets: CLIENT_SETUP.targets.map((t) => ({ ...t, key: KEY7 })) });
      const out = await expectInjected(syn(family, linuxSynOptions()), tcpBase(family), linuxSynOptions(), 1, KEY7);
      srv.expect(out, 'drop_bad_tag');
    });

    test('EOL then padding: EOL and what follows become NOPs, then our option', async () => {
      const input = Buffer.from([0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x00, 0x00]); // MSS, SACK-permitted, EOL, pad
      const expected = Buffer.from([0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x01, 0x01]);
      const out = await expectInjected(syn(family, input), tcpBase(family), expected);
      srv.expect(out, 'pass_valid_syn');
    });

    test('EOL followed by non-zero garbage: all of it becomes NOPs', async () => {
      const input = Buffer.from([0x02, 0x04, 0x05, 0xb4, 0x00, 0xab, 0xcd, 0xef]);
      const expected = Buffer.from([0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x01, 0x01]);
      const out = await expectInjected(syn(family, input), tcpBase(family), expected);
      srv.expect(out, 'pass_valid_syn');
    });

    test('EOL as the first option byte: the whole block becomes NOPs', async () => {
      const out = await expectInjected(syn(family, Buffer.alloc(8, 0)), tcpBase(family), Buffer.alloc(8, 1));
      srv.expect(out, 'pass_valid_syn');
    });

    test('SYN with 40 bytes of options (Linux + TCP-MD5) -> unchanged, skip_no_room', () => {
      const md5 = Buffer.concat([Buffer.from([19, 18]), Buffer.alloc(16, 0x5a), Buffer.from([1, 1])]);
      expectUnchanged(syn(family, Buffer.concat([linuxSynOptions(), md5])), 'skip_no_room');
    });

    test('SYN with 24 bytes of options (20 + 24 + 20 > 60) -> unchanged, skip_no_room', () => {
      expectUnchanged(syn(family, Buffer.concat([linuxSynOptions(), Buffer.alloc(4, 1)])), 'skip_no_room');
    });

    test('SYN with payload (TCP Fast Open) -> unchanged, skip_payload', () => {
      expectUnchanged(syn(family, linuxSynOptions(), { payload: Buffer.from('GET / HTTP/1.0\r\n\r\n') }), 'skip_payload');
    });

    test('SYN with a broken option list (length 0) -> unchanged, skip_malformed', () => {
      expectUnchanged(syn(family, Buffer.from([0x02, 0x00, 0x05, 0xb4])), 'skip_malformed');
    });

    test('frame longer than the IP length says -> unchanged, skip_malformed', () => {
      expectUnchanged(Buffer.concat([syn(family, linuxSynOptions()), Buffer.alloc(6)]), 'skip_malformed');
    });

    test('SYN-ACK -> unchanged, pass_other', () => {
      expectUnchanged(segment(family, { syn: true, ack: true }, { options: linuxSynOptions() }), 'pass_other');
    });

    test('ACK -> unchanged, pass_other', () => {
      expectUnchanged(segment(family, { ack: true }), 'pass_other');
    });

    test('FIN and RST -> unchanged, pass_other', () => {
      expectUnchanged(segment(family, { fin: true, ack: true }), 'pass_other');
      expectUnchanged(segment(family, { rst: true }), 'pass_other');
    });

    test('SYN to another port -> unchanged, pass_other', () => {
      expectUnchanged(syn(family, linuxSynOptions(), { dport: 23 }), 'pass_other');
    });

    test('SYN to port 22 of another address -> unchanged, pass_other', () => {
      expectUnchanged(syn(family, linuxSynOptions(), { daddr: ADDR[family].other }), 'pass_other');
    });

    test('UDP to the target port -> unchanged, pass_other', () => {
      const a = ADDR[family];
      expectUnchanged(buildUdp({ family, saddr: a.client, daddr: a.server, sport: 40000, dport: 22, payload: Buffer.from('x') }), 'pass_other');
    });

    test('ICMP echo to the target -> unchanged, pass_other', () => {
      const a = ADDR[family];
      expectUnchanged(buildIcmp({ family, saddr: a.client, daddr: a.server, id: 1, seq: 1 }), 'pass_other');
    });

    test('802.1Q-tagged Linux SYN -> injected (exact bytes); server pass_valid_syn', async () => {
      const p = tcpBase(family, { vlan: 42 });
      const out = await expectInjected(syn(family, linuxSynOptions(), { vlan: 42 }), p, linuxSynOptions());
      srv.expect(out, 'pass_valid_syn');
    });
  });
}

/* ---------------------------------------------------------------------------------------------- */

describe('client: other cases', () => {
  beforeEach(() => {
    cli.configure(CLIENT_SETUP);
    srv.configure(SERVER_SETUP);
  });

  test('target with key id 7 -> option names key id 7; server pass_valid_syn', async () => {
    const p = tcpBase(4, { dport: 2200 });
    const out = await expectInjected(syn(4, linuxSynOptions(), { dport: 2200 }), p, linuxSynOptions(), 7, KEY7);
    srv.expect(out, 'pass_valid_syn');
  });

  test('IPv4 header with options (IHL 6) -> injected (exact bytes); server pass_valid_syn', async () => {
    const p = tcpBase(4);
    const input = withIpOptions(syn(4, linuxSynOptions()));
    const before = await settledStep(STEP_SECONDS);
    const { reason, dataOut } = cli.run(input);
    assert.equal(reason, 'injected');
    const opt = decodeOption(parseFrame(dataOut).tcp!.options.subarray(20))!;
    assert.ok(Math.abs(opt.timeStep - before) <= 1);
    const tag = computeTag(KEY1, { keyId: 1, dport: 22, timeStep: opt.timeStep, seq: p.seq, daddr: p.daddr });
    const expected = withIpOptions(buildTcp({
      ...p, flags: { syn: true }, options: Buffer.concat([linuxSynOptions(), encodeOption({ keyId: 1, timeStep: opt.timeStep, tag })]),
    }));
    assertBytes(dataOut, expected, 'tagged SYN with IP options');
    srv.expect(dataOut, 'pass_valid_syn');
  });

  test('IPv4 fragment of a SYN to the target -> unchanged, pass_other', () => {
    expectUnchanged(syn(4, linuxSynOptions(), { moreFragments: true }), 'pass_other');
  });

  test('ARP -> unchanged, pass_other', () => {
    const arp = Buffer.alloc(14 + 28);
    Buffer.from('ffffffffffff020000000001', 'hex').copy(arp, 0);
    arp.writeUInt16BE(0x0806, 12);
    Buffer.from('0001080006040001020000000001c6336402000000000000c6336401', 'hex').copy(arp, 14);
    expectUnchanged(arp, 'pass_other');
  });

  test('no targets configured -> a SYN to 198.51.100.1:22 is unchanged, pass_other', () => {
    cli.configure({ ...CLIENT_SETUP, targets: [] });
    expectUnchanged(syn(4, linuxSynOptions()), 'pass_other');
  });

  test('step_ns 0 (not configured) -> unchanged, error', () => {
    cli.configure({ ...CLIENT_SETUP, stepSeconds: 0 });
    expectUnchanged(syn(4, linuxSynOptions()), 'error');
  });

  test('3600 s steps: the option carries unix time / 3600', async () => {
    cli.configure({ ...CLIENT_SETUP, stepSeconds: 3600 });
    const now = await settledStep(3600);
    const { reason, dataOut } = cli.run(syn(4, linuxSynOptions()));
    assert.equal(reason, 'injected');
    assert.equal(decodeOption(parseFrame(dataOut).tcp!.options.subarray(20))!.timeStep, now);
    srv.configure({ ...SERVER_SETUP, stepSeconds: 3600 });
    srv.expect(dataOut, 'pass_valid_syn');
  });
});

/** Adds 4 bytes of IPv4 options (NOP NOP NOP EOL) to an untagged IPv4 frame: IHL 6, lengths and checksum fixed. */
function withIpOptions(frame: Buffer): Buffer {
  const l3 = 14;
  const ip = Buffer.concat([frame.subarray(l3, l3 + 20), Buffer.from([1, 1, 1, 0])]);
  ip[0] = 0x46;
  ip.writeUInt16BE(ip.readUInt16BE(2) + 4, 2);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(inetChecksum(ip), 10);
  return Buffer.concat([frame.subarray(0, l3), ip, frame.subarray(l3 + 20)]);
}
