// spak-test-timeout: 600
// spak-test-modes: xdp tc
// The knock port of the XDP server (build/server.bpf.o) through BPF_PROG_TEST_RUN: knocks sealed with
// real keys (src/knock/), maps written by the daemon's own writer (ServerProgram.configure -> knockmaps.ts),
// every case asserting the verdict and the one reason counter that moved. Needs root and `make bpf`.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { knockClient, KnockOpener, KnockSealer, type KnockClient, type KnockReject } from '../../src/knock/datagram.js';
import { checkKnockMaps, type KnockMapOptions } from '../../src/server/knockmaps.js';
import { knockMapOptions } from '../../src/knock/prefilter.js';
import { clientIdOf, generateX25519, prefilterKey, publicPem } from '../../src/knock/keys.js';
import { decodeKnockConfig } from '../../src/wire/layout.js';
import { type ServerReason } from '../../src/wire/reasons.js';
import { SPAK_KNOCK_LEN } from '../../src/wire/knock.js';
import { buildIp, buildUdp, IPPROTO_UDP } from '../support/packet.js';
import { KEY1, ServerHarness } from './harness.js';

const PORT = 62201;
const server = generateX25519();
const alice = generateX25519();
const bob = generateX25519();
const mallory = generateX25519(); // never loaded

type Family = 4 | 6;
const EP: Record<Family, { client: string; other: string; server: string; alsoLocal: string }> = {
  4: { client: '198.51.100.2', other: '198.51.100.3', server: '198.51.100.1', alsoLocal: '192.0.2.77' },
  6: { client: '2001:db8::2', other: '2001:db8::3', server: '2001:db8::1', alsoLocal: 'fd00::77' },
};

/** A rate limit no matrix reaches: the rate-limit tests set their own. */
const KNOCK_KEYS = { port: PORT, clients: [alice.publicKey, publicPem(bob.publicKey)], serverKey: server.privateKey, rate: 1e6, burst: 1e6 };
const KNOCK: KnockMapOptions = knockMapOptions(KNOCK_KEYS);

let srv: ServerHarness;
let aliceKnock: Buffer;
let bobKnock: Buffer;
let malloryKnock: Buffer;

const seal = (from: typeof alice) => new KnockSealer(from.privateKey, server.publicKey).seal({ serverAddr: EP[4].server, allowAddr: null, durationS: 0, open: [] });

before(async () => {
  srv = new ServerHarness();
  srv.configure({ keys: [{ id: 1, key: KEY1 }], protect: [{ address: EP[4].server, port: 22 }] });
  [aliceKnock, bobKnock, malloryKnock] = await Promise.all([seal(alice), seal(bob), seal(mallory)]);
});
after(() => srv?.close());

/** Knock mode as given (null: off), and empty rate tables (per source and per client). */
function useKnock(k: KnockMapOptions | null = KNOCK): void {
  srv.update({ knock: k ?? undefined });
  for (const name of ['spak_knock_rate', 'spak_knock_client_rate'] as const) {
    const rate = srv.program.map(name);
    for (const key of rate.keys()) rate.delete(key);
  }
}

function udp(payload: Buffer, o: { family?: Family; saddr?: string; daddr?: string; dport?: number; vlan?: number } = {}): Buffer {
  const family = o.family ?? 4;
  return buildUdp({
    family, saddr: o.saddr ?? EP[family].client, daddr: o.daddr ?? EP[family].server, sport: 50000, dport: o.dport ?? PORT, payload,
    ...(o.vlan !== undefined ? { vlan: o.vlan } : {}),
  });
}

function mutate(d: Buffer, f: (b: Buffer) => void): Buffer {
  const b = Buffer.from(d);
  f(b);
  return b;
}

describe('knock: valid knocks', () => {
  beforeEach(() => useKnock());

  for (const family of [4, 6] as const) {
    test(`IPv${family}: a real knock -> pass_knock, on any local address, tagged or not`, () => {
      srv.expect(udp(aliceKnock, { family }), 'pass_knock');
      srv.expect(udp(bobKnock, { family }), 'pass_knock');
      srv.expect(udp(aliceKnock, { family, daddr: EP[family].alsoLocal }), 'pass_knock');
      srv.expect(udp(aliceKnock, { family, vlan: 100 }), 'pass_knock');
      srv.expect(withOuterTag(udp(aliceKnock, { family, vlan: 100 }), 200), 'pass_knock');
    });

    test(`IPv${family}: UDP to another port -> pass_other, a knock included`, () => {
      srv.expect(udp(aliceKnock, { family, dport: PORT + 1 }), 'pass_other');
      srv.expect(udp(Buffer.alloc(10), { family, dport: 53 }), 'pass_other');
    });
  }

  test('IPv6 hop-by-hop header before the knock -> pass_knock', () => {
    srv.expect(withHopByHop(udp(aliceKnock, { family: 6 })), 'pass_knock');
  });

  test('knock mode off: the knock port is just another UDP port -> pass_other', () => {
    useKnock(null);
    srv.expect(udp(aliceKnock), 'pass_other');
    srv.expect(udp(Buffer.alloc(3)), 'pass_other');
    assert.equal(decodeKnockConfig(srv.program.map('spak_knock_config').lookup(Buffer.alloc(4))!).port, 0);
    assert.equal(srv.program.map('spak_knock_clients').keys().length, 0);
  });
});

describe('knock: malformed datagrams', () => {
  beforeEach(() => useKnock());

  for (const family of [4, 6] as const) {
    test(`IPv${family}: every truncated length 0..151 -> drop_knock_malformed`, () => {
      for (let n = 0; n < SPAK_KNOCK_LEN; n++) srv.expect(udp(aliceKnock.subarray(0, n), { family }), 'drop_knock_malformed');
    });

    test(`IPv${family}: oversized (153, 160, 1200) -> drop_knock_malformed`, () => {
      for (const extra of [1, 8, 1048]) srv.expect(udp(Buffer.concat([aliceKnock, Buffer.alloc(extra)]), { family }), 'drop_knock_malformed');
    });
  }

  test('UDP length field disagreeing with the frame -> drop_knock_malformed', () => {
    const short = udp(aliceKnock);
    short.writeUInt16BE(8 + 100, 14 + 20 + 4); // the kernel would deliver 100 bytes
    srv.expect(short, 'drop_knock_malformed');
    const long = udp(aliceKnock);
    long.writeUInt16BE(8 + 153, 14 + 20 + 4); // claims a byte the frame does not have
    srv.expect(long, 'drop_knock_malformed');
  });

  test('bad version, reserved bytes set -> drop_knock_malformed', () => {
    for (const v of [0, 2, 0x81, 0xff]) srv.expect(udp(mutate(aliceKnock, (b) => { b[0] = v; })), 'drop_knock_malformed');
    for (const i of [1, 2, 3]) for (const v of [1, 0x80]) srv.expect(udp(mutate(aliceKnock, (b) => { b[i] = v; })), 'drop_knock_malformed');
  });

  test('unknown client id -> drop_knock_unknown_client', () => {
    srv.expect(udp(malloryKnock), 'drop_knock_unknown_client');
    srv.expect(udp(malloryKnock, { family: 6 }), 'drop_knock_unknown_client');
    for (let i = 4; i < 8; i++) srv.expect(udp(mutate(aliceKnock, (b) => { b[i]! ^= 0x01; })), 'drop_knock_unknown_client');
  });

  test('every tag bit flipped -> drop_knock_tag', () => {
    for (let bit = 0; bit < 64; bit++) srv.expect(udp(mutate(aliceKnock, (b) => { b[8 + (bit >> 3)]! ^= 1 << (bit & 7); })), 'drop_knock_tag');
  });

  test('every tagged byte flipped (enc, ciphertext) -> drop_knock_tag', () => {
    for (let i = 16; i < SPAK_KNOCK_LEN; i++) srv.expect(udp(mutate(aliceKnock, (b) => { b[i]! ^= 0x20; })), 'drop_knock_tag');
  });

  test("another loaded client's id on alice's knock -> drop_knock_tag", () => {
    srv.expect(udp(mutate(aliceKnock, (b) => { b.writeUInt32BE(clientIdOf(bob.publicKey), 4); })), 'drop_knock_tag');
  });
});

describe('knock: the writer', () => {
  beforeEach(() => useKnock());

  test('client ids (big-endian) -> the server-side prefilter keys; config as given', () => {
    const clients = srv.program.map('spak_knock_clients');
    for (const c of [alice, bob]) {
      const id = Buffer.alloc(4);
      id.writeUInt32BE(clientIdOf(c.publicKey));
      assert.deepEqual(clients.lookup(id), prefilterKey(server.privateKey, c.publicKey, 'server'));
      assert.deepEqual(clients.lookup(id), prefilterKey(c.privateKey, server.publicKey, 'client'));
    }
    assert.equal(clients.keys().length, 2);
    useKnock({ ...KNOCK, rate: 10, burst: 20 });
    assert.deepEqual(decodeKnockConfig(srv.program.map('spak_knock_config').lookup(Buffer.alloc(4))!), { port: PORT, intervalNs: 100_000_000n, burstNs: 2_000_000_000n });
  });

  test('a revoked client (left out by the writer) -> drop_knock_unknown_client; the others still pass', () => {
    useKnock(knockMapOptions({ ...KNOCK_KEYS, clients: [alice.publicKey] }));
    srv.expect(udp(bobKnock), 'drop_knock_unknown_client');
    srv.expect(udp(bobKnock, { family: 6 }), 'drop_knock_unknown_client');
    srv.expect(udp(aliceKnock), 'pass_knock');
    assert.equal(srv.program.map('spak_knock_clients').keys().length, 1);
    useKnock();
    srv.expect(udp(bobKnock), 'pass_knock');
  });

  test('refuses what the maps cannot express, before writing', () => {
    assert.throws(() => checkKnockMaps({ ...KNOCK, port: 0 }), /knock port 0/);
    assert.throws(() => checkKnockMaps({ ...KNOCK, burst: 0 }), /knock burst 0/);
    assert.throws(() => checkKnockMaps({ ...KNOCK, rate: 0 }), /knock rate 0/);
    assert.throws(() => srv.update({ knock: { ...KNOCK, port: 0 } }), /knock port 0/);
    assert.throws(() => srv.update({ knock: { ...KNOCK, clients: new Map([[1, Buffer.alloc(8)]]) } }), /prefilter key of 8 bytes/);
    assert.throws(() => knockMapOptions({ ...KNOCK_KEYS, clients: [alice.publicKey, publicPem(alice.publicKey)] }), /given twice/);
    assert.throws(() => knockMapOptions({ ...KNOCK_KEYS, clients: ['not a key'] }), /not a PEM public key/);
    srv.expect(udp(bobKnock), 'pass_knock'); // the earlier configuration still in force
  });
});

describe('knock: rate limit', () => {
  const BURST = 20;
  beforeEach(() => useKnock({ ...KNOCK, rate: 1, burst: BURST }));

  for (const family of [4, 6] as const) {
    test(`IPv${family}: burst+5 failures from one source: the first ${BURST} judged, the rest drop_knock_rate; its valid knocks and other sources unaffected`, () => {
      const reasons: ServerReason[] = [];
      const failing = [aliceKnock.subarray(0, 40), malloryKnock, mutate(aliceKnock, (b) => { b[9]! ^= 1; })];
      const judged: ServerReason[] = ['drop_knock_malformed', 'drop_knock_unknown_client', 'drop_knock_tag'];
      for (let i = 0; i < BURST + 5; i++) reasons.push(srv.run(udp(failing[i % 3]!, { family })).reason);
      assert.deepEqual(reasons, [...Array.from({ length: BURST }, (_, i) => judged[i % 3]!), ...Array<ServerReason>(5).fill('drop_knock_rate')]);
      // What passes the prefilter is not limited by its source (issue 12): the client's own budget counts it.
      srv.expect(udp(aliceKnock, { family }), 'pass_knock');
      srv.expect(udp(aliceKnock, { family, saddr: EP[family].other }), 'pass_knock');
      srv.expect(udp(aliceKnock, { family: family === 4 ? 6 : 4 }), 'pass_knock');
      // Other ports are never limited.
      srv.expect(udp(aliceKnock, { family, dport: PORT + 1 }), 'pass_other');
    });
  }
});

describe('knock: fragments', () => {
  beforeEach(() => useKnock());

  test('IPv4 first fragment to the knock port -> drop_knock_fragment', () => {
    srv.expect(buildUdp({ family: 4, saddr: EP[4].client, daddr: EP[4].server, sport: 50000, dport: PORT, payload: aliceKnock, moreFragments: true }), 'drop_knock_fragment');
    // Too short to show its port: may be for the knock port.
    srv.expect(buildIp({ family: 4, saddr: EP[4].client, daddr: EP[4].server, moreFragments: true }, IPPROTO_UDP, Buffer.alloc(4)), 'drop_knock_fragment');
  });

  test('IPv6 first fragment to the knock port -> drop_knock_fragment', () => {
    srv.expect(buildUdp({ family: 6, saddr: EP[6].client, daddr: EP[6].server, sport: 50000, dport: PORT, payload: aliceKnock, ipv6Fragment: { offset: 0, more: true, id: 5 } }), 'drop_knock_fragment');
  });

  test('first fragments to other ports, later fragments (no port to see) -> pass_other', () => {
    srv.expect(buildUdp({ family: 4, saddr: EP[4].client, daddr: EP[4].server, sport: 50000, dport: 53, payload: aliceKnock, moreFragments: true }), 'pass_other');
    srv.expect(buildUdp({ family: 6, saddr: EP[6].client, daddr: EP[6].server, sport: 50000, dport: 53, payload: aliceKnock, ipv6Fragment: { offset: 0, more: true, id: 5 } }), 'pass_other');
    srv.expect(buildIp({ family: 4, saddr: EP[4].client, daddr: EP[4].server, fragOffset: 152, moreFragments: false }, IPPROTO_UDP, aliceKnock), 'pass_other');
    srv.expect(buildIp({ family: 6, saddr: EP[6].client, daddr: EP[6].server, ipv6Fragment: { offset: 152, more: false, id: 5 } }, IPPROTO_UDP, aliceKnock), 'pass_other');
  });
});

describe('knock: the TypeScript prefilter and XDP agree', () => {
  beforeEach(() => useKnock());

  const clients = new Map<number, KnockClient>([alice, bob].map((c) => [clientIdOf(c.publicKey), knockClient(server.privateKey, c.publicKey, 'c')]));
  const opener = new KnockOpener(server.privateKey, (id) => clients.get(id));
  const XDP_REASON: Record<KnockReject, ServerReason | undefined> = {
    truncated: 'drop_knock_malformed', oversized: 'drop_knock_malformed', bad_version: 'drop_knock_malformed', bad_reserved: 'drop_knock_malformed',
    unknown_client: 'drop_knock_unknown_client', bad_prefilter_tag: 'drop_knock_tag',
    hpke_open_failed: undefined, bad_plain_version: undefined, bad_plain: undefined, expired: undefined, future: undefined, wrong_server: undefined, replayed: undefined,
  };
  const pick = (n: number): number => randomBytes(4).readUInt32LE() % n;

  /** One random change: a bit anywhere, a header byte, the length, or another client's id. */
  function randomMutation(d: Buffer): Buffer {
    switch (pick(5)) {
      case 0: return mutate(d, (b) => { b[pick(b.length)]! ^= 1 << pick(8); });
      case 1: return mutate(d, (b) => { b[pick(16)] = pick(3) === 0 ? 0 : pick(256); });
      case 2: return pick(2) ? Buffer.from(d.subarray(0, pick(d.length))) : Buffer.concat([d, randomBytes(1 + pick(64))]);
      case 3: return mutate(d, (b) => { b.writeUInt32BE(clientIdOf(pick(2) ? bob.publicKey : mallory.publicKey), 4); });
      default: return Buffer.from(d); // unchanged: both must pass it
    }
  }

  test('200 random mutations of a valid knock', () => {
    const seen = new Set<ServerReason>();
    for (let i = 0; i < 200; i++) {
      const d = randomMutation(i % 2 ? aliceKnock : bobKnock);
      const ts = opener.prefilter(d);
      const want: ServerReason | undefined = ts.ok ? 'pass_knock' : XDP_REASON[ts.reason];
      assert.ok(want, `prefilter gave a reason XDP never gives: ${ts.ok ? '' : ts.reason}`);
      srv.expect(udp(d, { family: i % 3 === 0 ? 6 : 4 }), want);
      seen.add(want);
    }
    assert.ok(seen.size >= 4, `mutations covered only ${[...seen].join(', ')}`);
  });
});

/** Adds an outer 802.1ad (QinQ) tag in front of a single-tagged frame. */
function withOuterTag(frame: Buffer, vlan: number): Buffer {
  const tag = Buffer.alloc(4);
  tag.writeUInt16BE(0x88a8, 0);
  tag.writeUInt16BE(vlan, 2);
  return Buffer.concat([frame.subarray(0, 12), tag, frame.subarray(12)]);
}

/** Inserts an 8-byte hop-by-hop header after the IPv6 header of an untagged frame. */
function withHopByHop(frame: Buffer): Buffer {
  const ip = Buffer.from(frame.subarray(14, 54));
  const hbh = Buffer.from([ip[6]!, 0, 1, 4, 0, 0, 0, 0]); // next header, length 0 (8 bytes), PadN(4)
  ip[6] = 0;
  ip.writeUInt16BE(ip.readUInt16BE(4) + 8, 4);
  return Buffer.concat([frame.subarray(0, 14), ip, hbh, frame.subarray(54)]);
}
