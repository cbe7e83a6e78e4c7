// spak-test-modes: xdp tc
// The server (build/server.bpf.o: spak_server at XDP, spak_server_tc at TC in the tc run) through
// BPF_PROG_TEST_RUN: every case asserts the verdict (XDP_PASS / XDP_DROP, or TC_ACT_OK / TC_ACT_SHOT)
// and the one reason counter that moved. Needs root and `make bpf`.
// Setup and shapes: see server-fixtures.ts.
// This file: flow gating and the capacity of the flow and replay tables.
import { beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeConfig, decodeFlow, encodeFlow, SPAK_FLOW_CLOSING, SPAK_FLOW_OPEN } from '../../src/wire/layout.js';
import {
  DEFAULT_SETUP, FAMILIES, ISN, fileServer, segment, shapeSetup, SHAPES, validSyn, flowKey,
  unprotectedAddrReason
} from './server-fixtures.js';
import { ServerHarness, settledStep, type TaggedSynParams } from './harness.js';

const file = fileServer();
const step = file.step;

/* ---------------------------------------------------------------------------------------------- */

for (const shape of SHAPES) for (const e of Object.values(FAMILIES)) {
  describe(`server IPv${e.family}, ${shape}: flow gating`, () => {
    beforeEach(() => file.srv.configure(shapeSetup(shape, e)));

    /** Opens the flow with a valid SYN. */
    async function open(): Promise<void> {
      file.srv.expect(validSyn(e, await step()), 'pass_valid_syn');
    }

    test('SYN-ACK to the protected port without a flow -> drop_flow_miss', () => {
      file.srv.expect(segment(e, { syn: true, ack: true }), 'drop_flow_miss');
    });

    test('ACK with no flow -> drop_flow_miss', () => {
      file.srv.expect(segment(e, { ack: true }), 'drop_flow_miss');
    });

    test('data segment with no flow -> drop_flow_miss', () => {
      file.srv.expect(segment(e, { ack: true, psh: true }, { payload: Buffer.from('SSH-2.0-x\r\n') }), 'drop_flow_miss');
    });

    test('RST with no flow -> drop_flow_miss', () => {
      file.srv.expect(segment(e, { rst: true }), 'drop_flow_miss');
    });

    test('ACK of another flow (other source port) -> drop_flow_miss', async () => {
      await open();
      file.srv.expect(segment(e, { ack: true }, { sport: 40001 }), 'drop_flow_miss');
    });

    test('after a valid SYN: the ACK -> pass_flow, data -> pass_flow', async () => {
      await open();
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
      file.srv.expect(segment(e, { ack: true, psh: true }, { payload: Buffer.from('SSH-2.0-x\r\n') }), 'pass_flow');
    });

    test('FIN -> pass_flow_end, flow CLOSING; later ACKs and a retransmitted FIN still pass', async () => {
      await open();
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
      file.srv.expect(segment(e, { fin: true, ack: true }), 'pass_flow_end');
      assert.equal(decodeFlow(file.srv.flows.lookup(flowKey(e))!).state, SPAK_FLOW_CLOSING);
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
      file.srv.expect(segment(e, { fin: true, ack: true }), 'pass_flow_end');
      assert.equal(decodeFlow(file.srv.flows.lookup(flowKey(e))!).state, SPAK_FLOW_CLOSING);
    });

    test('a blind RST (sequence number far off) marks the flow closing but never ends it', async () => {
      // The kernel judges the RST (RFC 5961); only the daemon's sweep removes flows, and only
      // when the socket is gone (test/bpf/sweep.test.ts).
      await open();
      file.srv.expect(segment(e, { rst: true }, { seq: (ISN + 0x80000000) >>> 0 }), 'pass_flow_end');
      for (let i = 0; i < 3; i++) file.srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test('a closing flow last seen long ago still passes (no expiry in the program)', () => {
      file.srv.flows.update(flowKey(e), encodeFlow({ seenS: 1, state: SPAK_FLOW_CLOSING }));
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test('an open flow last seen long ago passes and records the current flow clock', () => {
      file.srv.flows.update(flowKey(e), encodeFlow({ seenS: 1, state: SPAK_FLOW_OPEN }));
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
      const clock = decodeConfig(file.srv.config.lookup(Buffer.alloc(4))!).flowClockS;
      assert.equal(decodeFlow(file.srv.flows.lookup(flowKey(e))!).seenS, clock);
      assert.ok(clock > 1);
    });

    test('a flow written by hand (seeded connection) passes without any SYN', () => {
      file.srv.flows.update(flowKey(e), encodeFlow({ seenS: 1, state: SPAK_FLOW_OPEN }));
      file.srv.expect(segment(e, { ack: true }), 'pass_flow');
    });

    test(`ACK to port 22 of ${e.unprotected}, no flow -> ${unprotectedAddrReason(shape)}`, () => {
      file.srv.expect(segment(e, { ack: true }, { daddr: e.unprotected }), unprotectedAddrReason(shape));
    });

    test('ACK to an unprotected port, no flow -> pass_other', () => {
      file.srv.expect(segment(e, { ack: true }, { dport: 80 }), 'pass_other');
    });
  });
}


/* ---------------------------------------------------------------------------------------------- */

describe('server: table capacity (the daemon sizes both tables)', () => {
  const e = FAMILIES[4];
  const synFrom = (i: number, now: number, o: Partial<TaggedSynParams> = {}) =>
    validSyn(e, now, { sport: 10000 + i, seq: (ISN + i * 7919) >>> 0, ...o });

  test('replay table of 1024: every valid tag is kept for its window; past capacity SYNs are refused (drop_replay_full), captured ones stay refused', async () => {
    const small = new ServerHarness({ replay: 1024, flows: 4096 });
    try {
      small.configure(DEFAULT_SETUP);
      const now = await settledStep(30, 5000);
      for (let i = 0; i < 1024; i++) small.expect(synFrom(i, now), 'pass_valid_syn');
      for (let i = 1024; i < 1100; i++) small.expect(synFrom(i, now), 'drop_replay_full');
      // Every one of the 1024 recorded tags is still refused from a third host.
      for (const i of [0, 1, 511, 1023]) small.expect(synFrom(i, now, { saddr: e.other }), 'drop_replay');
      assert.equal(small.replay.keys().length, 1024);
    } finally {
      small.close();
    }
  });

  test('flow table of 1024: the next valid SYN is refused (drop_flow_full), established flows are untouched', async () => {
    const small = new ServerHarness({ replay: 4096, flows: 1024 });
    try {
      small.configure(DEFAULT_SETUP);
      const now = await settledStep(30, 5000);
      for (let i = 0; i < 1024; i++) small.expect(synFrom(i, now), 'pass_valid_syn');
      small.expect(synFrom(2000, now), 'drop_flow_full');
      small.expect(segment(e, { ack: true }, { sport: 10000 }), 'pass_flow');
      small.expect(segment(e, { ack: true }, { sport: 10000 + 1023 }), 'pass_flow');
    } finally {
      small.close();
    }
  });
});

