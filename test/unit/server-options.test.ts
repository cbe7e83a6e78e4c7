// The server's one validation step (src/server/options.ts): checkConfig refuses what the maps
// cannot express, hands out a frozen Checked value and lets it through again unchanged;
// SpakServer.setKnock checks only the knock part and keeps it for later reloads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkConfig, SpakServer, type ServerOptions } from '../../src/server/server.js';

const OPTS: ServerOptions = {
  iface: 'none', xdpMode: 'native', keys: [{ id: 1, key: Buffer.alloc(16, 1) }], protect: [{ address: '198.51.100.1', port: 22 }],
  stepSeconds: 30, stepWindow: 1, flowIdleSeconds: 300, flowFinSeconds: 10, seedExisting: false,
};
const KNOCK = { port: 62201, clients: new Map([[1, Buffer.alloc(16, 2)]]) };

test('checkConfig: refuses bad destinations, knock and always-allow entries', () => {
  assert.throws(() => checkConfig({ ...OPTS, keys: [] }), /no keys/);
  assert.throws(() => checkConfig({ ...OPTS, knock: { ...KNOCK, port: 0 } }), /knock port 0/);
  assert.throws(() => checkConfig({ ...OPTS, alwaysAllow: ['198.51.100.1/24'] }), /host bits/);
});

test('checkConfig: a checked value is frozen and passes through again as it is', () => {
  const c = checkConfig(OPTS);
  assert.ok(Object.isFrozen(c));
  assert.notEqual(c, OPTS);
  assert.equal(checkConfig(c), c);
});

test('setKnock: checks the knock options and keeps them in the server options', () => {
  const s = new SpakServer(OPTS);
  assert.equal(s.options.knock, undefined);
  assert.throws(() => s.setKnock({ ...KNOCK, clients: new Map([[1, Buffer.alloc(8)]]) }), /prefilter key of 8 bytes/);
  assert.equal(s.options.knock, undefined);
  s.setKnock(KNOCK);
  assert.equal(s.options.knock, KNOCK);
  assert.deepEqual(s.options.protect, OPTS.protect);
  s.setKnock(undefined);
  assert.equal(s.options.knock, undefined);
});
