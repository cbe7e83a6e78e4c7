// The daemon's sweep on the real maps of a loaded (not attached) server program. Flows go
// only when the kernel has no socket for them (idle past flowIdle when open, past flowFin
// when closing); a flow a blind FIN/RST marked closing is reopened while the socket is still
// established; a flow whose socket lives is never expired. Replay entries go by time step.
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import type { KernelSocket } from '../../src/server/seed.js';
import { sweepFlows, sweepReplay } from '../../src/server/sweep.js';
import { SpakServer } from '../../src/server/server.js';
import { serverTestOptions } from '../support/server-options.js';
import {
  decodeFlow,
  encodeFlow,
  encodeFlowKey,
  encodeReplay,
  SPAK_FLOW_CLOSING,
  SPAK_FLOW_OPEN,
} from '../../src/wire/layout.js';

const server = new SpakServer(serverTestOptions());

const NOW = 100_000;

before(() => {
  server.load();
});
after(() => server.stop());
beforeEach(() => {
  for (const name of ['spak_flows', 'spak_replay'] as const) for (const k of server.map(name).keys()) server.map(name).delete(k);
});

function flow(sport: number, state: number, ageSeconds: number) {
  const key = encodeFlowKey({ saddr: '198.51.100.2', daddr: '198.51.100.1', sport, dport: 22 });
  server.map('spak_flows').update(key, encodeFlow({ seenS: NOW - ageSeconds, state }));
  return key;
}

function socket(remotePort: number, state: number): KernelSocket {
  return { localAddr: '198.51.100.1', localPort: 22, remoteAddr: '198.51.100.2', remotePort, state, inode: 0 };
}

const settings = { nowS: NOW, idleS: 300, finS: 10 };

test('flows: gone sockets go, live ones stay (however idle), a wrongly closed one is reopened', () => {
  const fresh = flow(40001, SPAK_FLOW_OPEN, 5);
  const idleGone = flow(40002, SPAK_FLOW_OPEN, 301);
  const closedGone = flow(40003, SPAK_FLOW_CLOSING, 11);
  const closingRecent = flow(40004, SPAK_FLOW_CLOSING, 2);
  const blind = flow(40005, SPAK_FLOW_CLOSING, 11); // a blind RST marked it; the socket disagrees
  const halfClosed = flow(40006, SPAK_FLOW_CLOSING, 60); // client sent FIN, server still sending
  const idleLive = flow(40007, SPAK_FLOW_OPEN, 7200 + 5); // an idle ssh session past keepalive
  const timeWait = flow(40008, SPAK_FLOW_CLOSING, 20);
  const sockets = [socket(40005, 0x01), socket(40006, 0x08 /* CLOSE_WAIT */), socket(40007, 0x01), socket(40008, 0x06 /* TIME_WAIT */)];

  const r = sweepFlows(server.map('spak_flows'), settings, () => sockets);
  assert.deepEqual(r, { flows: 8, flowsRemoved: 2, flowsReopened: 1, socketChecks: 6 });
  const flows = server.map('spak_flows');
  const get = (k: Buffer) => (flows.lookup(k) ? decodeFlow(flows.lookup(k)!) : null);
  assert.equal(get(fresh)?.state, SPAK_FLOW_OPEN);
  assert.equal(get(idleGone), null);
  assert.equal(get(closedGone), null);
  assert.equal(get(closingRecent)?.state, SPAK_FLOW_CLOSING);
  assert.deepEqual(get(blind), { seenS: NOW, state: SPAK_FLOW_OPEN });
  assert.deepEqual(get(halfClosed), { seenS: NOW, state: SPAK_FLOW_CLOSING }, 'kept, checked again after flowFin');
  assert.deepEqual(get(idleLive), { seenS: NOW, state: SPAK_FLOW_OPEN }, 'a flow whose socket exists is never expired');
  assert.equal(get(timeWait)?.state, SPAK_FLOW_CLOSING, 'kept while the socket is in TIME_WAIT');
});

test('flows: no candidate, no socket read', () => {
  flow(40001, SPAK_FLOW_OPEN, 5);
  flow(40002, SPAK_FLOW_CLOSING, 3);
  let reads = 0;
  const r = sweepFlows(server.map('spak_flows'), settings, () => {
    reads++;
    return [];
  });
  assert.equal(reads, 0);
  assert.deepEqual(r, { flows: 2, flowsRemoved: 0, flowsReopened: 0, socketChecks: 0 });
});

test('flows: thousands at once, batched', () => {
  for (let i = 0; i < 5000; i++) flow(1000 + i, i % 2 ? SPAK_FLOW_OPEN : SPAK_FLOW_CLOSING, i % 3 ? 1 : 400);
  const r = sweepFlows(server.map('spak_flows'), settings, () => []);
  const stale = Array.from({ length: 5000 }, (_, i) => i).filter((i) => i % 3 === 0).length;
  assert.deepEqual(r, { flows: 5000, flowsRemoved: stale, flowsReopened: 0, socketChecks: stale });
  assert.equal(server.map('spak_flows').keys().length, 5000 - stale);
});

test('replay: entries go once their time step is past the window, never before', () => {
  const replay = server.map('spak_replay');
  const tag = (i: number) => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(i);
    return b;
  };
  const step = 1_000_000;
  for (const [i, s] of [[1, step - 2], [2, step - 1], [3, step], [4, step + 1], [5, step - 50]] as const)
    replay.update(tag(i), encodeReplay({ saddr: '198.51.100.2', sport: 40000 + i, timeStep: s }));
  const r = sweepReplay(replay, step, 1);
  assert.deepEqual(r, { replay: 5, replayRemoved: 2 });
  assert.equal(replay.lookup(tag(1)), null, 'step - 2 is outside a window of 1');
  assert.equal(replay.lookup(tag(5)), null);
  for (const i of [2, 3, 4]) assert.ok(replay.lookup(tag(i)), `entry ${i} is still valid and kept`);
});

test('flows: UDP flows have no socket to ask: they go after idleS of silence, TCP ones as before', () => {
  const udp = (sport: number, age: number) => {
    const key = encodeFlowKey({ saddr: '198.51.100.2', daddr: '198.51.100.1', sport, dport: 51820, proto: 17 });
    server.map('spak_flows').update(key, encodeFlow({ seenS: NOW - age, state: SPAK_FLOW_OPEN }));
    return key;
  };
  const quiet = udp(50001, 301);
  const talking = udp(50002, 5);
  const tcpIdle = flow(40001, SPAK_FLOW_OPEN, 301);
  let reads = 0;
  const r = sweepFlows(server.map('spak_flows'), settings, () => {
    reads++;
    return [socket(40001, 0x01)];
  });
  assert.deepEqual(r, { flows: 3, flowsRemoved: 1, flowsReopened: 0, socketChecks: 1 });
  assert.equal(reads, 1, 'only the TCP candidate needs the socket tables');
  assert.equal(server.map('spak_flows').lookup(quiet), null);
  assert.ok(server.map('spak_flows').lookup(talking));
  assert.ok(server.map('spak_flows').lookup(tcpIdle), 'its socket lives');
});
