// The daemon's side of the config file (issue 7): several interfaces, user/group, and the plan a
// start or a reload runs with (planFromConfig), including the command-line overrides.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { planFromConfig } from '../../src/daemon/daemon.js';
import { resolveAccount } from '../../src/daemon/privdrop.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-daemon-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const KEY = '112233445566778899aabbccddeeff00';
let n = 0;

function config(server: Record<string, unknown>): string {
  const file = path.join(dir, `c${++n}.json`);
  writeFileSync(file, JSON.stringify({ server: { keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }], ...server } }));
  return file;
}

test('interfaces: a list with a mode and an enforcement each (default the section\'s), or the one interface of old', () => {
  const plan = planFromConfig(config({ xdpMode: 'generic', enforcement: 'tc', interfaces: [{ name: 'eth0', xdpMode: 'native' }, { name: 'eth1' }, { name: 'eth2', enforcement: 'xdp' }] }));
  assert.deepEqual(plan.interfaces, [
    { name: 'eth0', xdpMode: 'native', enforcement: 'tc' },
    { name: 'eth1', xdpMode: 'generic', enforcement: 'tc' },
    { name: 'eth2', xdpMode: 'generic', enforcement: 'xdp' },
  ]);
  assert.deepEqual(planFromConfig(config({ interface: 'eth0' })).interfaces, [{ name: 'eth0', xdpMode: 'native', enforcement: 'xdp' }]);
  // --enforcement on the command line wins for every interface.
  const tc = planFromConfig(config({ interfaces: [{ name: 'eth0', enforcement: 'xdp' }, { name: 'eth1' }] }), { enforcement: 'tc' });
  assert.deepEqual(tc.interfaces.map((i) => i.enforcement), ['tc', 'tc']);
  // --xdp-mode on the command line wins for every interface, at start and on reload.
  const forced = planFromConfig(config({ interfaces: [{ name: 'eth0', xdpMode: 'native' }, { name: 'eth1' }] }), { xdpMode: 'auto' });
  assert.deepEqual(forced.interfaces.map((i) => i.xdpMode), ['auto', 'auto']);
});

test('interfaces: bad lists are refused with the field named', () => {
  assert.throws(() => planFromConfig(config({})), /server\.interfaces: give exactly one of "interface" \(one\) or "interfaces" \(a list\)/);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', interfaces: [{ name: 'eth1' }] })), /exactly one of/);
  assert.throws(() => planFromConfig(config({ interfaces: [] })), /server\.interfaces/);
  assert.throws(() => planFromConfig(config({ interfaces: [{ name: 'eth0' }, { name: 'eth0' }] })), /server\.interfaces\[1\]\.name: eth0 is listed twice/);
  assert.throws(() => planFromConfig(config({ interfaces: [{ name: 'an-interface-name-too-long' }] })), /server\.interfaces\[0\]\.name: Too big/);
  assert.throws(() => planFromConfig(config({ interfaces: [{ name: 'eth 0' }] })), /server\.interfaces\[0\]\.name: not an interface name/);
  assert.throws(() => planFromConfig(config({ interfaces: [{ name: 'eth0', enforcement: 'nft' }] })), /server\.interfaces\[0\]\.enforcement/);
  assert.throws(() => planFromConfig(config({ interfaces: [{ name: 'eth0', mode: 'native' }] })), /server\.interfaces\[0\]/);
});

test('user and group: resolved before anything is attached', () => {
  const nobody = resolveAccount('nobody');
  assert.equal(nobody.uid, 65534);
  assert.equal(planFromConfig(config({ interface: 'eth0', user: 'nobody' })).account?.uid, 65534);
  assert.deepEqual(planFromConfig(config({ interface: 'eth0', user: 'nobody', group: 'root' })).account, { uid: 65534, gid: 0, label: 'nobody:root' });
  assert.deepEqual(planFromConfig(config({ interface: 'eth0', user: 4242, group: 4243 })).account, { uid: 4242, gid: 4243, label: '4242:4243' });
  assert.equal(planFromConfig(config({ interface: 'eth0' })).account, undefined);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', user: 'no-such-user-here' })), /user "no-such-user-here": no such user/);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', user: 'nobody', group: 'no-such-group-here' })), /group "no-such-group-here": no such group/);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', user: 'root' })), /is root/);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', group: 'nogroup' })), /server\.group: group goes with user/);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', user: 'bad name' })), /server\.user/);
});

test('the plan reads the key files; one it cannot read fails the whole plan', () => {
  const keyFile = path.join(dir, 'k2');
  writeFileSync(keyFile, `${KEY}\n`);
  const plan = planFromConfig(config({ interface: 'eth0', keys: [{ id: 1, secret: KEY }, { id: 2, secretFile: keyFile }] }));
  assert.deepEqual(plan.server.keys.map((k) => [k.id, k.key.toString('hex')]), [[1, KEY], [2, KEY]]);
  assert.throws(() => planFromConfig(config({ interface: 'eth0', keys: [{ id: 2, secretFile: path.join(dir, 'missing') }] })), /server\.keys\[0\]\.secretFile: cannot read .*missing: ENOENT/);
  assert.throws(() => planFromConfig(path.join(dir, 'no-such.json')), /cannot read config/);
});

test('command-line overrides win over the file', () => {
  const plan = planFromConfig(config({ interface: 'eth0', stepSeconds: 10, flowCapacity: 4096 }), { stepSeconds: 20, flowCapacity: 8192, seed: false, allAddresses: true });
  assert.equal(plan.server.stepSeconds, 20);
  assert.equal(plan.server.flowCapacity, 8192);
  assert.equal(plan.server.seedExisting, false);
  assert.deepEqual(plan.server.protect.map((d) => d.address), ['*']);
});
