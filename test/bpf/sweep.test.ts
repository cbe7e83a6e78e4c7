// The daemon's flow sweep on the real maps of a loaded (not attached) server program:
// idle flows go, closing flows go after the FIN window, and a flow a blind FIN/RST marked
// closing is reopened while the kernel's socket is still established.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { monotonicNs } from '../../src/bpf/clock.js';
import type { KernelSocket } from '../../src/server/seed.js';
import { SpakServer } from '../../src/server/server.js';
import { decodeFlow, encodeFlow, encodeFlowKey, SPAK_FLOW_CLOSING, SPAK_FLOW_OPEN } from '../../src/wire/layout.js';

const NS = 1_000_000_000n;
const server = new SpakServer({
  iface: 'none',
  xdpMode: 'native',
  keys: [{ id: 1, key: Buffer.alloc(16, 7) }],
  protect: [{ address: '198.51.100.1', port: 22 }],
  stepSeconds: 30,
  stepWindow: 1,
  flowIdleSeconds: 300,
  flowFinSeconds: 10,
  seedExisting: false,
});

before(() => {
  server.load();
});
after(() => server.stop());

function flow(sport: number, state: number, ageSeconds: number) {
  const key = encodeFlowKey({ saddr: '198.51.100.2', daddr: '198.51.100.1', sport, dport: 22 });
  server.map('spak_flows').update(key, encodeFlow({ lastSeenNs: monotonicNs() - BigInt(ageSeconds) * NS, state }));
  return key;
}

function socket(remotePort: number, state: number): KernelSocket {
  return { localAddr: '198.51.100.1', localPort: 22, remoteAddr: '198.51.100.2', remotePort, state };
}

test('sweep: idle and finished flows go, live ones stay, a wrongly closed one is reopened', () => {
  const fresh = flow(40001, SPAK_FLOW_OPEN, 5);
  const idle = flow(40002, SPAK_FLOW_OPEN, 301);
  const closed = flow(40003, SPAK_FLOW_CLOSING, 11);
  const closing = flow(40004, SPAK_FLOW_CLOSING, 2);
  const blind = flow(40005, SPAK_FLOW_CLOSING, 2); // a blind RST marked it; the socket disagrees
  const halfClosed = flow(40006, SPAK_FLOW_CLOSING, 60); // client sent FIN, server still sending
  const sockets = [socket(40005, 0x01), socket(40004, 0x08 /* CLOSE_WAIT: a real close */), socket(40006, 0x08)];

  const r = server.sweepFlows(sockets);
  assert.deepEqual(r, { removed: 2, reopened: 1 });
  assert.equal(decodeFlow(server.map('spak_flows').lookup(halfClosed)!).state, SPAK_FLOW_CLOSING);
  assert.ok(decodeFlow(server.map('spak_flows').lookup(halfClosed)!).lastSeenNs > monotonicNs() - 5n * NS, 'kept fresh');
  const flows = server.map('spak_flows');
  assert.equal(decodeFlow(flows.lookup(fresh)!).state, SPAK_FLOW_OPEN);
  assert.equal(flows.lookup(idle), null);
  assert.equal(flows.lookup(closed), null);
  assert.equal(decodeFlow(flows.lookup(closing)!).state, SPAK_FLOW_CLOSING);
  assert.equal(decodeFlow(flows.lookup(blind)!).state, SPAK_FLOW_OPEN);
});
