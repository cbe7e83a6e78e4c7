// spak-test-modes: xdp tc
// Per-destination counters of new-connection decisions (spak_dest_counters, bpf/spak_destcount.h)
// through BPF_PROG_TEST_RUN: packets to several destinations, then each destination's counts
// (ServerProgram.destinationCounters, the daemon's own reader) must have moved by exactly what was
// sent to it, and the established-flow path must count nothing.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { allowSource } from '../../src/server/allowlist.js';
import type { DestinationCounters } from '../../src/server/server.js';
import { DEST_OUTCOME_NAMES, type DestOutcome } from '../../src/wire/reasons.js';
import { buildTcp, buildUdp, linuxSynOptions } from '../support/packet.js';
import { KEY1 } from './harness.js';
import { DEFAULT_SETUP, FAMILIES, fileServer, rawSyn, segment, validSyn, type Endpoints } from './server-fixtures.js';

const file = fileServer();
const V4 = FAMILIES[4];
const V6 = FAMILIES[6];
const UDP_PORT = 51820;
const ALWAYS = '203.0.113.0/24';
const ALWAYS_SRC = '203.0.113.5';
const KNOCKED_SRC = '198.51.100.4';

/** DEFAULT_SETUP plus a UDP destination, with always-allow configured (the allowlists are asked). */
const PROTECT = [...DEFAULT_SETUP.protect, { address: V4.server, port: UDP_PORT, protocol: 'udp' as const }];

function use(): void {
  file.use({ protect: PROTECT });
  file.srv.update({ alwaysAllow: [ALWAYS] });
}

function key(d: { address: string; port: number; protocol: string }): string {
  return `${d.protocol} ${d.address} ${d.port}`;
}

function snapshot(): Map<string, DestinationCounters['counts']> {
  return new Map(file.srv.program.destinationCounters().map((d) => [key(d), d.counts]));
}

/** Exactly `want` (outcome -> count, others 0) moved for each destination named, nothing for the rest. */
function assertMoved(before: Map<string, DestinationCounters['counts']>, want: Record<string, Partial<Record<DestOutcome, number>>>): void {
  const now = snapshot();
  assert.deepEqual(new Set(now.keys()), new Set(before.keys()));
  for (const [dest, counts] of now) {
    const exp = want[dest] ?? {};
    for (const o of DEST_OUTCOME_NAMES) {
      assert.equal(counts[o] - before.get(dest)![o], BigInt(exp[o] ?? 0), `${dest}: ${o}`);
    }
  }
}

function udp(saddr: string): Buffer {
  return buildUdp({ family: 4, saddr, daddr: V4.server, sport: 50000, dport: UDP_PORT, payload: Buffer.from('x') });
}

function untagged(e: Endpoints, saddr: string): Buffer {
  return buildTcp({ family: e.family, saddr, daddr: e.server, sport: 40100, dport: 22, seq: 7, flags: { syn: true }, options: linuxSynOptions() });
}

describe('per-destination counters', () => {
  test('destinationCounters lists every protected destination with every outcome', () => {
    use();
    const list = file.srv.program.destinationCounters();
    assert.deepEqual(list.map(key), PROTECT.map((d) => key({ ...d, protocol: d.protocol ?? 'tcp' })));
    for (const d of list) assert.deepEqual(Object.keys(d.counts), [...DEST_OUTCOME_NAMES]);
  });

  test('SYNs to two TCP destinations and datagrams to a UDP one are counted each at its own destination', async () => {
    use();
    const step = await file.step();
    const before = snapshot();
    // IPv4 :22 — two admitted by tag (first sight, same-source retransmit), a replay from
    // another source, a bad tag, a missing option, one admitted by always-allow, one by a
    // knock's allowlist entry; then the flow's ACKs, which count nothing.
    const v4syn = validSyn(V4, step);
    file.srv.expect(v4syn, 'pass_valid_syn');
    file.srv.expect(v4syn, 'pass_retransmit');
    file.srv.expect(validSyn(V4, step, { saddr: V4.other }), 'drop_replay');
    file.srv.expect(validSyn(V4, step, { seq: 99, tag: { seq: 98 } }), 'drop_bad_tag');
    file.srv.expect(rawSyn(V4, linuxSynOptions(), { sport: 40002 }), 'drop_no_option');
    file.srv.expect(untagged(V4, ALWAYS_SRC), 'pass_always');
    allowSource(file.srv.program.map('spak_allow'), { addr: KNOCKED_SRC, proto: 'tcp', port: 22, expiresNs: process.hrtime.bigint() + 600_000_000_000n });
    file.srv.expect(untagged(V4, KNOCKED_SRC), 'pass_allowlisted');
    for (let i = 0; i < 3; i++) file.srv.expect(segment(V4, { ack: true }), 'pass_flow');
    // IPv6 :22 — one admitted by tag, one with a key id that is not loaded, one bad tag.
    file.srv.expect(validSyn(V6, step), 'pass_valid_syn');
    file.srv.expect(validSyn(V6, step, { keyId: 3, key: KEY1, sport: 40003 }), 'drop_unknown_key');
    file.srv.expect(validSyn(V6, step, { seq: 5, tag: { seq: 6 }, sport: 40004 }), 'drop_bad_tag');
    file.srv.expect(segment(V6, { ack: true }), 'pass_flow');
    // UDP :51820 — a stranger refused twice, an always-allowed source, a knocked source whose
    // first datagram opens a flow and whose second rides it (not counted).
    file.srv.expect(udp(V4.other), 'drop_udp_not_allowed');
    file.srv.expect(udp(V4.other), 'drop_udp_not_allowed');
    file.srv.expect(udp(ALWAYS_SRC), 'pass_always');
    allowSource(file.srv.program.map('spak_allow'), { addr: KNOCKED_SRC, proto: 'udp', port: UDP_PORT, expiresNs: process.hrtime.bigint() + 600_000_000_000n });
    file.srv.expect(udp(KNOCKED_SRC), 'pass_allowlisted');
    file.srv.expect(udp(KNOCKED_SRC), 'pass_flow');
    assertMoved(before, {
      [`tcp ${V4.server} 22`]: { admit_tag: 2, admit_always: 1, admit_knock: 1, refuse_replay: 1, refuse_tag: 2 },
      [`tcp ${V6.server} 22`]: { admit_tag: 1, refuse_tag: 2 },
      [`udp ${V4.server} ${UDP_PORT}`]: { refuse_not_allowed: 2, admit_always: 1, admit_knock: 1 },
    });
    file.srv.update({ alwaysAllow: [] });
  });

  test('a full flow table is counted as refuse_full at its destination', async () => {
    // A harness of its own: a one-entry flow table.
    const { ServerHarness } = await import('./harness.js');
    const h = new ServerHarness({ flows: 1 });
    try {
      h.configure(DEFAULT_SETUP);
      const step = await file.step();
      const before = h.program.destinationCounters()[0]!.counts;
      h.expect(validSyn(V4, step), 'pass_valid_syn');
      h.expect(validSyn(V4, step, { sport: 40010, seq: 11 }), 'drop_flow_full');
      const after = h.program.destinationCounters()[0]!;
      assert.equal(key(after), `tcp ${V4.server} 22`);
      assert.equal(after.counts.admit_tag - before.admit_tag, 1n);
      assert.equal(after.counts.refuse_full - before.refuse_full, 1n);
    } finally {
      h.close();
    }
  });

  test('indexes are stable across reconfigurations: a kept destination keeps its counts', async () => {
    use();
    const step = await file.step();
    file.srv.expect(validSyn(V6, step, { sport: 40020, seq: 21 }), 'pass_valid_syn');
    const v6Before = snapshot().get(`tcp ${V6.server} 22`)!;
    // Drop every destination but IPv6 :22, then bring one back: IPv6 :22 keeps its counts,
    // the returning one starts from zero.
    file.use({ protect: [DEFAULT_SETUP.protect[1]!] });
    assert.deepEqual(snapshot().get(`tcp ${V6.server} 22`), v6Before);
    file.use({ protect: [DEFAULT_SETUP.protect[0]!, DEFAULT_SETUP.protect[1]!] });
    const now = snapshot();
    assert.deepEqual(now.get(`tcp ${V6.server} 22`), v6Before);
    for (const o of DEST_OUTCOME_NAMES) assert.equal(now.get(`tcp ${V4.server} 22`)![o], 0n, o);
  });
});
