// spak-test-timeout: 300
// spak-test-modes: xdp tc
// Issue 12 (Medium): nothing reaches the knock socket around the prefilter, and the prefilter's
// budgets cannot be spent by others. Through BPF_PROG_TEST_RUN (build/server.bpf.o), maps written
// by the daemon's own writers (ServerProgram.configure, knockmaps.ts markKnockAccepted):
//   - the IPv6 extension-header matrix (1..8 headers of mixed kinds, fragments) to the knock port on
//     a local address nothing protects: what the parser cannot read is dropped while knock mode is on
//     (drop_knock_unparsed, drop_knock_fragment), never passed as pass_other;
//   - the per-source limit charges only what fails the prefilter: a flood of failures from a
//     client's address does not drop its valid knocks;
//   - knocks that pass the prefilter spend their client's budget (drop_knock_client_rate);
//   - an accepted knock's exact repeat dies in XDP (drop_knock_repeat).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KnockSealer } from '../../src/knock/datagram.js';
import { markKnockAccepted, type KnockMapOptions } from '../../src/server/knockmaps.js';
import { knockMapOptions } from '../../src/knock/prefilter.js';
import { generateX25519 } from '../../src/knock/keys.js';
import { type ServerReason } from '../../src/wire/reasons.js';
import { buildUdp } from '../support/packet.js';
import { KEY1, ServerHarness } from './harness.js';

const PORT = 62201;
const server = generateX25519();
const alice = generateX25519();
const bob = generateX25519();

const CLIENT6 = '2001:db8::2';
const SERVER6 = '2001:db8::1'; // protected (tcp/22)
const LOCAL6 = 'fd00::77'; // nothing protects it
const CLIENT4 = '198.51.100.2';
const SERVER4 = '198.51.100.1';

const KNOCK_KEYS = { port: PORT, clients: [alice.publicKey, bob.publicKey], serverKey: server.privateKey, rate: 1e6, burst: 1e6 };
const KNOCK: KnockMapOptions = knockMapOptions(KNOCK_KEYS);

const HOPOPTS = 0;
const ROUTING = 43;
const FRAGMENT = 44;
const AH = 51;
const DSTOPTS = 60;
const UDP = 17;

let srv: ServerHarness;
let aliceKnock: Buffer;
let aliceKnock2: Buffer;
let bobKnock: Buffer;

const seal = (from: typeof alice) =>
  new KnockSealer(from.privateKey, server.publicKey).seal({ serverAddr: SERVER4, allowAddr: null, durationS: 0, open: [] });

before(async () => {
  srv = new ServerHarness();
  srv.configure({ keys: [{ id: 1, key: KEY1 }], protect: [{ address: SERVER6, port: 22 }, { address: SERVER4, port: 22 }] });
  [aliceKnock, aliceKnock2, bobKnock] = await Promise.all([seal(alice), seal(alice), seal(bob)]);
});
after(() => srv?.close());

/** Knock mode as given (null: off); empty rate, client budget and accepted tables. */
function useKnock(k: KnockMapOptions | null = KNOCK): void {
  srv.update({ knock: k ?? undefined });
  for (const name of ['spak_knock_rate', 'spak_knock_client_rate', 'spak_knock_accepted'] as const) {
    const m = srv.program.map(name);
    for (const key of m.keys()) m.delete(key);
  }
}

/** One extension header of `kind` naming `next`: 8 bytes (24 for AH), PadN where options go. */
function extHeader(kind: number, next: number): Buffer {
  if (kind === AH) {
    const h = Buffer.alloc(24); // (4 + 2) * 4: SPI, sequence, 12-byte ICV
    h[0] = next;
    h[1] = 4;
    h.writeUInt32BE(0x100, 4);
    return h;
  }
  if (kind === ROUTING) return Buffer.from([next, 0, 4, 0, 0, 0, 0, 0]); // type 4, segments left 0
  return Buffer.from([next, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop or destination options: PadN(4)
}

/**
 * A UDP datagram to `dport` over IPv6 with `kinds` as its extension chain (in order), then
 * optionally a fragment header and `afterFrag` behind it. Built from buildUdp's frame (checksum
 * included) with the headers spliced in after the fixed header.
 */
function v6Chain(payload: Buffer, kinds: number[], o: { daddr?: string; dport?: number; frag?: { offset: number; more: boolean }; afterFrag?: number[] } = {}): Buffer {
  const frame = buildUdp({ family: 6, saddr: CLIENT6, daddr: o.daddr ?? LOCAL6, sport: 50000, dport: o.dport ?? PORT, payload });
  const eth = frame.subarray(0, 14);
  const ip = Buffer.from(frame.subarray(14, 54));
  let l4 = Buffer.from(frame.subarray(54));
  const chain = [...kinds, ...(o.frag ? [FRAGMENT, ...(o.afterFrag ?? [])] : [])];
  const parts: Buffer[] = [];
  chain.forEach((kind, i) => {
    const next = i + 1 < chain.length ? chain[i + 1]! : UDP;
    if (kind === FRAGMENT) {
      const f = Buffer.alloc(8);
      f[0] = next;
      f.writeUInt16BE(o.frag!.offset | (o.frag!.more ? 1 : 0), 2);
      f.writeUInt32BE(0x5a5a, 4);
      parts.push(f);
    } else {
      parts.push(extHeader(kind, next));
    }
  });
  if (o.frag && o.frag.offset > 0) l4 = Buffer.from(l4.subarray(8)); // a later fragment: no UDP header in it
  ip[6] = chain.length > 0 ? chain[0]! : UDP;
  const ext = Buffer.concat(parts);
  ip.writeUInt16BE(ext.length + l4.length, 4);
  return Buffer.concat([eth, ip, ext, l4]);
}

/** Mixed chains of n headers, as a sender may order them (hop-by-hop first, then any). */
function mixed(n: number): number[] {
  const cycle = [DSTOPTS, ROUTING, AH, DSTOPTS];
  return Array.from({ length: n }, (_, i) => (i === 0 ? HOPOPTS : cycle[(i - 1) % cycle.length]!));
}

describe('knock: IPv6 extension chains to a local address nothing protects', () => {
  beforeEach(() => useKnock());

  for (let n = 1; n <= 8; n++) {
    const readable = n <= 4;
    const want: ServerReason = readable ? 'pass_knock' : 'drop_knock_unparsed';
    test(`${n} extension header(s), mixed kinds, a valid knock -> ${want}`, () => {
      srv.expect(v6Chain(aliceKnock, mixed(n)), want);
      srv.expect(v6Chain(aliceKnock, Array<number>(n).fill(DSTOPTS)), want);
      // Garbage behind a readable chain meets the prefilter; behind an unreadable one it never gets a look.
      srv.expect(v6Chain(aliceKnock.subarray(0, 40), Array<number>(n).fill(DSTOPTS)), readable ? 'drop_knock_malformed' : 'drop_knock_unparsed');
      // The port cannot be seen behind an unreadable chain: UDP to any port is dropped while knock mode is on.
      srv.expect(v6Chain(aliceKnock, mixed(n), { dport: 53 }), readable ? 'pass_other' : 'drop_knock_unparsed');
    });
  }

  test('an unreadable chain to a protected address keeps its own reason (drop_malformed)', () => {
    srv.expect(v6Chain(aliceKnock, Array<number>(6).fill(DSTOPTS), { daddr: SERVER6 }), 'drop_malformed');
  });

  test('knock mode off: an unreadable chain to an unprotected address passes as before (pass_other)', () => {
    useKnock(null);
    for (let n = 5; n <= 8; n++) srv.expect(v6Chain(aliceKnock, mixed(n)), 'pass_other');
  });
});

describe('knock: IPv6 fragments to the knock port', () => {
  beforeEach(() => useKnock());

  for (let n = 0; n <= 4; n++) {
    test(`${n} header(s) then a first fragment naming UDP -> ${n <= 3 ? 'drop_knock_fragment' : 'drop_knock_unparsed'}`, () => {
      // The fragment header is the chain's n+1st header: the walk reads four.
      const want: ServerReason = n <= 3 ? 'drop_knock_fragment' : 'drop_knock_unparsed';
      srv.expect(v6Chain(aliceKnock, Array<number>(n).fill(DSTOPTS), { frag: { offset: 0, more: true } }), want);
    });

    test(`${n} header(s), a fragment header, then destination options before UDP (first and later fragments) -> dropped`, () => {
      const want: ServerReason = n <= 3 ? 'drop_knock_fragment' : 'drop_knock_unparsed';
      srv.expect(v6Chain(aliceKnock, Array<number>(n).fill(DSTOPTS), { frag: { offset: 0, more: true }, afterFrag: [DSTOPTS] }), want);
      srv.expect(v6Chain(aliceKnock, Array<number>(n).fill(DSTOPTS), { frag: { offset: 0, more: false }, afterFrag: [DSTOPTS, DSTOPTS] }), want);
      srv.expect(v6Chain(aliceKnock, Array<number>(n).fill(DSTOPTS), { frag: { offset: 152, more: false }, afterFrag: [DSTOPTS] }), want);
    });
  }

  test('later fragments naming UDP directly carry no port and pass (no first fragment, nothing reassembles)', () => {
    srv.expect(v6Chain(aliceKnock, [], { frag: { offset: 152, more: false } }), 'pass_other');
    srv.expect(v6Chain(aliceKnock, [DSTOPTS, DSTOPTS], { frag: { offset: 152, more: true } }), 'pass_other');
  });
});

describe('knock: UDP header out of reach', () => {
  beforeEach(() => useKnock());

  test('IPv4 and IPv6 datagrams cut inside the UDP header, knock mode on -> drop_knock_unparsed', () => {
    const v4 = buildUdp({ family: 4, saddr: CLIENT4, daddr: SERVER4, sport: 50000, dport: PORT, payload: aliceKnock });
    srv.expect(v4.subarray(0, 14 + 20 + 4), 'drop_knock_unparsed');
    const v6 = v6Chain(aliceKnock, [DSTOPTS]);
    srv.expect(v6.subarray(0, 14 + 40 + 8 + 4), 'drop_knock_unparsed');
    useKnock(null);
    srv.expect(v4.subarray(0, 14 + 20 + 4), 'pass_other');
  });
});

function udp(payload: Buffer, saddr = CLIENT4): Buffer {
  return buildUdp({ family: saddr.includes(':') ? 6 : 4, saddr, daddr: saddr.includes(':') ? SERVER6 : SERVER4, sport: 50000, dport: PORT, payload });
}

describe('knock: budgets', () => {
  test("a flood of failures from a client's own address does not drop its valid knocks; the failures are limited (drop_knock_rate)", () => {
    useKnock({ ...KNOCK, rate: 1, burst: 5 });
    const bad = Buffer.from(aliceKnock);
    bad[20]! ^= 1; // a tag that does not verify
    const reasons: ServerReason[] = [];
    for (let i = 0; i < 20; i++) reasons.push(srv.run(udp(bad)).reason);
    assert.deepEqual(reasons, [...Array<ServerReason>(5).fill('drop_knock_tag'), ...Array<ServerReason>(15).fill('drop_knock_rate')]);
    srv.expect(udp(aliceKnock), 'pass_knock');
    srv.expect(udp(bad), 'drop_knock_rate');
    srv.expect(udp(aliceKnock2), 'pass_knock');
  });

  test('knocks that pass the prefilter spend their client\'s budget, from any source -> drop_knock_client_rate; other clients unaffected', () => {
    useKnock({ ...KNOCK, rate: 1, burst: 3 });
    const reasons: ServerReason[] = [];
    for (let i = 0; i < 6; i++) reasons.push(srv.run(udp(aliceKnock, `198.51.100.${10 + i}`)).reason);
    assert.deepEqual(reasons, [...Array<ServerReason>(3).fill('pass_knock'), ...Array<ServerReason>(3).fill('drop_knock_client_rate')]);
    srv.expect(udp(bobKnock), 'pass_knock');
    srv.expect(udp(bobKnock, CLIENT6), 'pass_knock');
  });

  test('an accepted knock (markKnockAccepted) repeated, from any source, any family -> drop_knock_repeat; others still pass', () => {
    useKnock();
    srv.expect(udp(aliceKnock), 'pass_knock');
    markKnockAccepted(srv.program.maps(['spak_knock_accepted']), aliceKnock);
    for (const s of [CLIENT4, '198.51.100.200', CLIENT6, '2001:db8::1:7']) srv.expect(udp(aliceKnock, s), 'drop_knock_repeat');
    srv.expect(udp(aliceKnock2), 'pass_knock');
    srv.expect(udp(bobKnock), 'pass_knock');
    // A forged copy with the accepted tag but other bytes fails the tag first.
    const forged = Buffer.from(aliceKnock);
    forged[100]! ^= 1;
    srv.expect(udp(forged), 'drop_knock_tag');
  });
});
