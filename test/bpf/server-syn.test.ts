// spak-test-modes: xdp tc
// The server (build/server.bpf.o: spak_server at XDP, spak_server_tc at TC in the tc run) through
// BPF_PROG_TEST_RUN: every case asserts the verdict (XDP_PASS / XDP_DROP, or TC_ACT_OK / TC_ACT_SHOT)
// and the one reason counter that moved. Needs root and `make bpf`.
// Setup and shapes: see server-fixtures.ts.
// This file: SYN verification (option, tag, key ids, time steps, replay, source binding, DNAT).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFlow, decodeFlowKey, decodeReplay, SPAK_FLOW_OPEN } from '../../src/wire/layout.js';
import { type ServerReason } from '../../src/wire/reasons.js';
import { encodeOption, type SpakOption } from '../support/option.js';
import { buildTcp, linuxSynOptions } from '../support/packet.js';
import {
  DEFAULT_SETUP, FAMILIES, ISN, fileServer, rawSyn, shapeSetup, SHAPES, synBase, validSyn, WRONG_KEY,
  flowKey, type Family
} from './server-fixtures.js';
import {
  boundTo, spakOptionFor, tagFor, taggedSyn, KEY1, KEY7, type ServerSetup, type TaggedSynParams
} from './harness.js';

const file = fileServer();
const useSetup = file.use;
const step = file.step;

/* ---------------------------------------------------------------------------------------------- */

for (const shape of SHAPES) for (const e of Object.values(FAMILIES)) {
  describe(`server IPv${e.family}, ${shape}: valid SYN, retransmit, replay`, () => {
    before(() => file.srv.configure(shapeSetup(shape, e)));
    beforeEach(() => file.srv.reset());

    test('valid SYN (Linux options + ours) -> pass_valid_syn; records exactly this flow and the tag', async () => {
      const now = await step();
      const frame = validSyn(e, now);
      file.srv.expect(frame, 'pass_valid_syn');

      const flows = file.srv.flows.keys();
      assert.equal(flows.length, 1);
      assert.deepEqual(decodeFlowKey(flows[0]!), { saddr: e.client, daddr: e.server, sport: 40000, dport: 22, proto: 6 });
      assert.equal(decodeFlow(file.srv.flows.lookup(flows[0]!)!).state, SPAK_FLOW_OPEN);

      const tag = tagFor({ ...synBase(e), key: KEY1, keyId: 1, timeStep: now });
      const replays = file.srv.replay.keys();
      assert.equal(replays.length, 1);
      assert.deepEqual(replays[0], tag, 'the replay table is keyed by the 8 tag bytes');
      assert.deepEqual(decodeReplay(file.srv.replay.lookup(tag)!), { saddr: e.client, sport: 40000, timeStep: now });
    });

    test('the same SYN again from the same source -> pass_retransmit', async () => {
      const frame = validSyn(e, await step());
      file.srv.expect(frame, 'pass_valid_syn');
      file.srv.expect(frame, 'pass_retransmit');
      file.srv.expect(frame, 'pass_retransmit');
      assert.equal(file.srv.flows.keys().length, 1);
      assert.equal(file.srv.replay.keys().length, 1);
    });

    test('the same option and seq from another source address -> drop_replay, no flow for it', async () => {
      const now = await step();
      file.srv.expect(validSyn(e, now), 'pass_valid_syn');
      file.srv.expect(validSyn(e, now, { saddr: e.other }), 'drop_replay');
      assert.equal(file.srv.flows.lookup(flowKey(e, { saddr: e.other })), null);
      assert.equal(file.srv.flows.keys().length, 1);
    });

    test('the same option and seq from another source port -> drop_replay', async () => {
      const now = await step();
      file.srv.expect(validSyn(e, now), 'pass_valid_syn');
      file.srv.expect(validSyn(e, now, { sport: 40001 }), 'drop_replay');
    });

    test('a replay arriving first claims the tag: the real client is then refused', async () => {
      const now = await step();
      file.srv.expect(validSyn(e, now, { saddr: e.other }), 'pass_valid_syn');
      file.srv.expect(validSyn(e, now), 'drop_replay');
    });

    test('key id 7 (second loaded key) -> pass_valid_syn', async () => {
      file.srv.expect(validSyn(e, await step(), { key: KEY7, keyId: 7 }), 'pass_valid_syn');
    });

    test('a new SYN (new seq) from the same source -> pass_valid_syn again', async () => {
      const now = await step();
      file.srv.expect(validSyn(e, now), 'pass_valid_syn');
      file.srv.expect(validSyn(e, now, { seq: ISN + 1000 }), 'pass_valid_syn');
      assert.equal(file.srv.replay.keys().length, 2);
    });

    test('NOP padding before our option -> pass_valid_syn', async () => {
      file.srv.expect(validSyn(e, await step(), { before: Buffer.from([1, 1, 1, 1]) }), 'pass_valid_syn');
    });

    test('our option first, Linux options after it -> pass_valid_syn', async () => {
      file.srv.expect(validSyn(e, await step(), { before: Buffer.alloc(0), after: linuxSynOptions() }), 'pass_valid_syn');
    });

    test('our option alone (no other options) -> pass_valid_syn', async () => {
      file.srv.expect(validSyn(e, await step(), { before: Buffer.alloc(0) }), 'pass_valid_syn');
    });

    test('a foreign kind-253 experiment before ours is skipped -> pass_valid_syn', async () => {
      const foreign = Buffer.from([253, 8, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef]);
      file.srv.expect(validSyn(e, await step(), { before: foreign }), 'pass_valid_syn');
    });

    test('SYN with ECE+CWR (ECN setup) is still a SYN -> pass_valid_syn', async () => {
      const now = await step();
      const opts = Buffer.concat([linuxSynOptions(), spakOptionFor({ ...synBase(e), key: KEY1, keyId: 1, timeStep: now })]);
      file.srv.expect(buildTcp({ ...synBase(e), flags: { syn: true, ece: true, cwr: true }, options: opts }), 'pass_valid_syn');
    });
  });

  describe(`server IPv${e.family}, ${shape}: missing, foreign or malformed option`, () => {
    before(() => file.srv.configure(shapeSetup(shape, e)));
    beforeEach(() => file.srv.reset());

    const opt = (o: Partial<SpakOption>) =>
      encodeOption({ keyId: 1, timeStep: 0, tag: Buffer.alloc(8), ...o });
    const linux = linuxSynOptions();
    const b = (...xs: number[]) => Buffer.from(xs);

    const cases: { name: string; options: Buffer; doff?: number; reason: ServerReason; todo?: string }[] = [
      { name: 'no options at all', options: Buffer.alloc(0), reason: 'drop_no_option' },
      { name: 'only the Linux options', options: linux, reason: 'drop_no_option' },
      { name: 'only NOPs', options: Buffer.alloc(8, 1), reason: 'drop_no_option' },
      { name: 'another experiment (ExID 0x1234) in our kind', options: Buffer.concat([linux, opt({ exid: 0x1234 })]), reason: 'drop_no_option' },
      { name: 'our option behind an EOL', options: Buffer.concat([b(0, 1, 1, 1), opt({})]), reason: 'drop_no_option' },
      // The Linux layout is matched without a walk; one byte off and the walk decides.
      { name: 'Linux options with an EOL where the NOP stands, ours after it', options: Buffer.concat([Buffer.from(linux).fill(0, 16, 17), opt({})]), reason: 'drop_no_option' },
      { name: 'Linux options with the timestamp length 9 (an EOL is then read inside it), ours after it', options: Buffer.concat([Buffer.from(linux).fill(9, 7, 8), opt({})]), reason: 'drop_no_option' },
      { name: 'kind 253 shorter than an ExID (length 2)', options: b(253, 2, 1, 1), reason: 'drop_no_option' },
      { name: 'version 2', options: Buffer.concat([linux, opt({ version: 2 })]), reason: 'drop_bad_option' },
      { name: 'version 0', options: Buffer.concat([linux, opt({ version: 0 })]), reason: 'drop_bad_option' },
      { name: 'reserved byte set', options: Buffer.concat([linux, opt({ reserved: 1 })]), reason: 'drop_bad_option' },
      { name: 'our ExID with length 24 (20 + 4 extra bytes)', options: Buffer.concat([opt({ len: 24 }), b(0, 0, 0, 0)]), reason: 'drop_bad_option' },
      { name: 'our ExID with length 8, followed by more options', options: Buffer.concat([b(253, 8, 0x53, 0x50, 1, 0, 0, 1), linux]), reason: 'drop_bad_option' },
      {
        name: 'our ExID with length 8 as the last option of the header',
        options: Buffer.concat([linux, b(253, 8, 0x53, 0x50, 1, 0, 0, 1)]),
        reason: 'drop_bad_option',
      },
      { name: 'an option of length 0', options: Buffer.concat([linux, b(253, 0, 0x53, 0x50)]), reason: 'drop_malformed' },
      { name: 'an option of length 1', options: Buffer.concat([linux, b(253, 1, 0x53, 0x50)]), reason: 'drop_malformed' },
      { name: 'a Linux option of length 0 before ours', options: Buffer.concat([b(2, 0, 5, 0xb4), opt({})]), reason: 'drop_malformed' },
      { name: 'our option length running past the header (24 in the last 20 bytes)', options: Buffer.concat([linux, opt({ len: 24 })]), reason: 'drop_malformed' },
      { name: 'a kind byte with no room for its length', options: b(1, 1, 1, 253), reason: 'drop_malformed' },
      { name: 'doff 15 claims 60 bytes, the packet has 40', options: opt({}), doff: 15, reason: 'drop_malformed' },
      { name: 'doff 4 (< 5)', options: Buffer.alloc(0), doff: 4, reason: 'drop_malformed' },
      { name: 'doff 0', options: Buffer.alloc(0), doff: 0, reason: 'drop_malformed' },
    ];
    for (const c of cases) {
      test(`${c.name} -> ${c.reason}`, c.todo ? { todo: c.todo } : {}, () => {
        const frame = rawSyn(e, c.options, c.doff === undefined ? {} : { doff: c.doff });
        file.srv.expect(frame, c.reason);
        assert.equal(file.srv.flows.keys().length, 0, 'a refused SYN records no flow');
      });
    }
  });

  describe(`server IPv${e.family}, ${shape}: tag verification`, () => {
    before(() => file.srv.configure(shapeSetup(shape, e)));
    beforeEach(() => file.srv.reset());

    test('tag under a key that is not the one of key id 1 -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { key: WRONG_KEY }), 'drop_bad_tag');
    });

    test('tag under key 7 in an option naming key id 1 -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { key: KEY7 }), 'drop_bad_tag');
    });

    test('key id bound into the tag: tag over key id 7 under key 1, option naming 1 -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { tag: { keyId: 7 } }), 'drop_bad_tag');
    });

    test('sequence number changed after tagging -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { tag: { seq: ISN + 1 } }), 'drop_bad_tag');
    });

    test('tag computed for another destination port -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { tag: { dport: 23 } }), 'drop_bad_tag');
    });

    test('tag computed for another destination address -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { tag: { daddr: e.unprotected } }), 'drop_bad_tag');
    });

    test('time step in the option differs from the one tagged -> drop_bad_tag', async () => {
      const now = await step();
      file.srv.expect(validSyn(e, now, { tag: { timeStep: now - 1 } }), 'drop_bad_tag');
    });

    test('all-zero tag -> drop_bad_tag', async () => {
      file.srv.expect(validSyn(e, await step(), { option: { tag: Buffer.alloc(8) } }), 'drop_bad_tag');
    });

    // Every one of the 64 tag bits, flipped on its own.
    for (let bit = 0; bit < 64; bit++) {
      test(`tag bit ${bit} flipped -> drop_bad_tag`, async () => {
        const now = await step();
        const p: TaggedSynParams = { ...synBase(e), key: KEY1, keyId: 1, timeStep: now };
        const tag = tagFor(p);
        tag[bit >> 3]! ^= 1 << (bit & 7);
        file.srv.expect(taggedSyn({ ...p, option: { tag } }), 'drop_bad_tag');
        assert.equal(file.srv.replay.keys().length, 0, 'a bad tag is never remembered');
      });
    }
  });
}

/* ---------------------------------------------------------------------------------------------- */

describe('server: key ids', () => {
  beforeEach(() => useSetup());
  after(() => useSetup());
  const e = FAMILIES[4];

  for (const id of [9, 0, 2, 65535]) {
    test(`unknown key id ${id} -> drop_unknown_key`, async () => {
      file.srv.expect(validSyn(e, await step(), { keyId: id }), 'drop_unknown_key');
    });
  }

  test('rotation: with key 1 retired only key id 7 verifies', async () => {
    useSetup({ keys: [{ id: 7, key: KEY7 }] });
    const now = await step();
    file.srv.expect(validSyn(e, now), 'drop_unknown_key');
    file.srv.expect(validSyn(e, now, { key: KEY7, keyId: 7 }), 'pass_valid_syn');
  });

  test('rotation: a new key loaded as id 1 replaces the old one', async () => {
    useSetup({ keys: [{ id: 1, key: WRONG_KEY }, { id: 7, key: KEY7 }] });
    const now = await step();
    file.srv.expect(validSyn(e, now), 'drop_bad_tag');
    file.srv.expect(validSyn(e, now, { key: WRONG_KEY }), 'pass_valid_syn');
  });
});

/* ---------------------------------------------------------------------------------------------- */

for (const stepSeconds of [30, 3600]) {
  describe(`server: time step window (${stepSeconds} s steps)`, () => {
    after(() => useSetup());

    const cases: { window: number; delta: number; reason: ServerReason; family?: Family }[] = [
      { window: 1, delta: 0, reason: 'pass_valid_syn' },
      { window: 1, delta: -1, reason: 'pass_valid_syn' },
      { window: 1, delta: +1, reason: 'pass_valid_syn' },
      { window: 1, delta: -2, reason: 'drop_stale_step' },
      { window: 1, delta: +2, reason: 'drop_future_step' },
      { window: 1, delta: -1, reason: 'pass_valid_syn', family: 6 },
      { window: 1, delta: +1, reason: 'pass_valid_syn', family: 6 },
      { window: 1, delta: -2, reason: 'drop_stale_step', family: 6 },
      { window: 1, delta: +2, reason: 'drop_future_step', family: 6 },
      { window: 0, delta: 0, reason: 'pass_valid_syn' },
      { window: 0, delta: -1, reason: 'drop_stale_step' },
      { window: 0, delta: +1, reason: 'drop_future_step' },
      { window: 2, delta: -2, reason: 'pass_valid_syn' },
      { window: 2, delta: +2, reason: 'pass_valid_syn' },
      { window: 2, delta: -3, reason: 'drop_stale_step' },
      { window: 2, delta: +3, reason: 'drop_future_step' },
    ];
    for (const c of cases) {
      const d = c.delta === 0 ? 'now' : `now${c.delta > 0 ? '+' : ''}${c.delta}`;
      test(`IPv${c.family ?? 4}, window ${c.window}, step ${d} -> ${c.reason}`, async () => {
        useSetup({ stepSeconds, stepWindow: c.window });
        const now = await step();
        file.srv.expect(validSyn(FAMILIES[c.family ?? 4], now + c.delta), c.reason);
      });
    }

    test('step 0 -> drop_stale_step; step 0xffffffff -> drop_future_step', async () => {
      useSetup({ stepSeconds });
      await step();
      file.srv.expect(validSyn(FAMILIES[4], 0), 'drop_stale_step');
      file.srv.expect(validSyn(FAMILIES[4], 0xffffffff), 'drop_future_step');
    });
  });
}


/* ---------------------------------------------------------------------------------------------- */

describe('server: DNAT (tag bound to the dialled address and port)', () => {
  beforeEach(() => useSetup());
  const v4 = FAMILIES[4];
  const v6 = FAMILIES[6];

  test('198.51.100.1:8022 dialled as 203.0.113.10:2022: tag for 203.0.113.10:2022 -> pass_valid_syn', async () => {
    file.srv.expect(validSyn(v4, await step(), { dport: 8022, tag: { daddr: '203.0.113.10', dport: 2022 } }), 'pass_valid_syn');
    assert.deepEqual(decodeFlowKey(file.srv.flows.keys()[0]!), { saddr: v4.client, daddr: v4.server, sport: 40000, dport: 8022, proto: 6 },
      'the flow is recorded as the server sees it (after DNAT)');
  });

  test('tag for the local 198.51.100.1:8022 -> drop_bad_tag', async () => {
    file.srv.expect(validSyn(v4, await step(), { dport: 8022 }), 'drop_bad_tag');
  });

  test('tag for the dialled address but the local port -> drop_bad_tag', async () => {
    file.srv.expect(validSyn(v4, await step(), { dport: 8022, tag: { daddr: '203.0.113.10' } }), 'drop_bad_tag');
  });

  test('tag for the local address but the dialled port -> drop_bad_tag', async () => {
    file.srv.expect(validSyn(v4, await step(), { dport: 8022, tag: { dport: 2022 } }), 'drop_bad_tag');
  });

  test('port-only DNAT [2001:db8::1]:8022 dialled on 2022: tag for (2001:db8::1, 2022) -> pass_valid_syn', async () => {
    file.srv.expect(validSyn(v6, await step(), { dport: 8022, tag: { dport: 2022 } }), 'pass_valid_syn');
  });

  test('port-only DNAT: tag for (2001:db8::1, 8022) -> drop_bad_tag', async () => {
    file.srv.expect(validSyn(v6, await step(), { dport: 8022 }), 'drop_bad_tag');
  });

  test('the plain entry on port 22 is not affected by the DNAT entry of its address', async () => {
    file.srv.expect(validSyn(v4, await step()), 'pass_valid_syn');
  });
});

/* ---------------------------------------------------------------------------------------------- */

for (const e of Object.values(FAMILIES)) {
  describe(`server IPv${e.family}: source-bound destinations`, () => {
    const bound = (shape: 'single' | 'wildcard'): ServerSetup => ({
      ...DEFAULT_SETUP,
      protect: [{ address: shape === 'single' ? e.server : e.family === 4 ? '0.0.0.0' : '::', port: 22, bindSource: true }],
    });
    after(() => useSetup());

    for (const shape of ['single', 'wildcard'] as const) {
      test(`${shape}: a tag bound to the client's address -> pass_valid_syn`, async () => {
        file.srv.configure(bound(shape));
        file.srv.expect(validSyn(e, await step(), { tag: boundTo({ saddr: e.client }) }), 'pass_valid_syn');
      });

      test(`${shape}: an unbound tag -> drop_bad_tag`, async () => {
        file.srv.configure(bound(shape));
        file.srv.expect(validSyn(e, await step()), 'drop_bad_tag');
      });

      test(`${shape}: the client's option and sequence number sent first from another address -> drop_bad_tag, the client still gets in`, async () => {
        file.srv.configure(bound(shape));
        const now = await step();
        file.srv.expect(validSyn(e, now, { saddr: e.other, tag: boundTo({ saddr: e.client }) }), 'drop_bad_tag');
        assert.equal(file.srv.replay.keys().length, 0, 'the copied tag claimed nothing');
        file.srv.expect(validSyn(e, now, { tag: boundTo({ saddr: e.client }) }), 'pass_valid_syn');
      });

      test(`${shape}: a tag bound to another address -> drop_bad_tag`, async () => {
        file.srv.configure(bound(shape));
        file.srv.expect(validSyn(e, await step(), { tag: boundTo({ saddr: e.other }) }), 'drop_bad_tag');
      });
    }

    test('an unbound destination refuses a bound tag (the flags byte is in the tag) -> drop_bad_tag', async () => {
      useSetup();
      file.srv.expect(validSyn(e, await step(), { tag: boundTo({ saddr: e.client }) }), 'drop_bad_tag');
    });
  });
}


/* ---------------------------------------------------------------------------------------------- */

describe('server: configuration', () => {
  after(() => useSetup());

  test('an IPv4 v4-mapped tag address is not an IPv6 one: tag over ::ffff:198.51.100.1 verifies for IPv4', async () => {
    useSetup();
    file.srv.expect(validSyn(FAMILIES[4], await step(), { tag: { daddr: '::ffff:198.51.100.1' } }), 'pass_valid_syn');
  });
});

