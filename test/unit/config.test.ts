import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { newHexKey, parseHexKey } from '../../src/config/keys.js';
import { loadConfigFile, resolveSecret } from '../../src/config/schema.js';
import { checkDestinations } from '../../src/server/destinations.js';
import { parseCidr } from '../../src/wire/address.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const KEY = '112233445566778899aabbccddeeff00';

function write(name: string, body: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
  return file;
}

test('keys: 32 hex characters, errors say what is wrong', () => {
  assert.equal(parseHexKey(KEY).toString('hex'), KEY);
  assert.throws(() => parseHexKey('zz'), /not hexadecimal/);
  assert.throws(() => parseHexKey('abcd', 'SECRET_KEY'), /SECRET_KEY has 4 hex characters: expected 32/);
  assert.match(newHexKey(), /^[0-9a-f]{32}$/);
  assert.notEqual(newHexKey(), newHexKey());
});

test('a full config loads with defaults filled in', () => {
  const file = write('ok.json', {
    server: {
      interface: 'eth0',
      keys: [{ id: 1, secret: KEY }, { id: 2, secretFile: write('k2', `${KEY}\n`) }],
      protect: [{ address: '198.51.100.1', port: 22 }, { address: '2001:db8::1', port: 22, dialAddress: '203.0.113.9', dialPort: 2222 }],
    },
    client: { interface: 'eth0', destinations: [{ address: '198.51.100.1', port: 22, keyId: 1, secret: KEY }] },
  });
  const cfg = loadConfigFile(file);
  assert.equal(cfg.server?.xdpMode, 'native');
  assert.equal(cfg.server?.enforcement, 'xdp');
  assert.equal(cfg.server?.stepSeconds, 30);
  assert.equal(cfg.server?.stepWindow, 1);
  assert.equal(cfg.server?.protect[1]?.dialPort, 2222);
  assert.equal(resolveSecret(cfg.server!.keys[1]!, 'k').toString('hex'), KEY);
  assert.equal(cfg.client?.destinations[0]?.keyId, 1);
  assert.equal(cfg.server?.protect[0]?.protocol, 'tcp');
  assert.deepEqual(cfg.server?.alwaysAllow, []);
  assert.equal(cfg.server?.stealth, false);
  assert.equal(cfg.server?.stealthUdp, false);
});

test('stealth: two booleans, anything else names the field', () => {
  const base = { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }] };
  const cfg = loadConfigFile(write('stealth.json', { server: { ...base, stealth: true, stealthUdp: true } })).server!;
  assert.equal(cfg.stealth, true);
  assert.equal(cfg.stealthUdp, true);
  assert.throws(() => loadConfigFile(write('badstealth.json', { server: { ...base, stealth: 'yes' } })), /server\.stealth/);
  assert.throws(() => loadConfigFile(write('badstealthudp.json', { server: { ...base, stealthUdp: 1 } })), /server\.stealthUdp/);
});

test('protocol per protected destination and the always-allow list', () => {
  const file = write('allow.json', {
    server: {
      interface: 'eth0', keys: [{ id: 1, secret: KEY }],
      protect: [{ address: '198.51.100.1', port: 51820, protocol: 'udp' }, { address: '198.51.100.1', port: 51820 }],
      alwaysAllow: ['198.51.100.0/24', '2001:db8::/64', '203.0.113.7', '2001:db8:1::1'],
    },
  });
  const cfg = loadConfigFile(file).server!;
  assert.deepEqual(cfg.protect.map((d) => d.protocol), ['udp', 'tcp']);
  assert.equal(cfg.alwaysAllow.length, 4);
  assert.deepEqual(parseCidr('198.51.100.0/24'), { addr: Buffer.from('00000000000000000000ffffc6336400', 'hex'), prefixLen: 120 });
  assert.equal(parseCidr('203.0.113.7').prefixLen, 128);
  assert.equal(parseCidr('2001:db8::/64').prefixLen, 64);
  assert.equal(parseCidr('0.0.0.0/0').prefixLen, 96);
  const bad: [unknown, RegExp][] = [
    [{ address: '198.51.100.1', port: 22, protocol: 'sctp' }, /server\.protect\[0\]\.protocol/],
  ];
  for (const [dest, re] of bad)
    assert.throws(() => loadConfigFile(write('badproto.json', { server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [dest] } })), re);
  for (const [entry, re] of [['198.51.100.1/24', /host bits/], ['10.0.0.0/33', /prefix length/], ['example.org', /not an IPv4/]] as const)
    assert.throws(() => loadConfigFile(write('badallow.json', {
      server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }], alwaysAllow: [entry] },
    })), (err: Error) => re.test(err.message) && /server\.alwaysAllow\[0\]/.test(err.message));
});

test('enforcement: xdp (default) or tc', () => {
  const file = write('tc.json', { server: { interface: 'eth0', enforcement: 'tc', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }] } });
  assert.equal(loadConfigFile(file).server?.enforcement, 'tc');
});

test('errors name the field', () => {
  const cases: [unknown, RegExp][] = [
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 70000 }] } }, /server\.protect\[0\]\.port/],
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '1.2.3', port: 22 }] } }, /server\.protect\[0\]\.address: not an IPv4 or IPv6 address/],
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: 'abc' }], protect: [{ address: '198.51.100.1', port: 22 }] } }, /server\.keys\[0\]\.secret: must be 32 hex/],
    [{ server: { interface: 'eth0', keys: [], protect: [{ address: '198.51.100.1', port: 22 }] } }, /server\.keys/],
    [{ client: { interface: 'eth0', destinations: [{ address: '198.51.100.1', port: 22, keyId: 70000, secret: KEY }] } }, /client\.destinations\[0\]\.keyId/],
    [{ client: { interface: 'eth0', destinations: [], bogus: 1 } }, /client/],
    [{ server: { interface: 'eth0', enforcement: 'ebpf', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }] } }, /server\.enforcement/],
    [{ servre: {} }, /servre|top level|Unrecognized/i],
  ];
  cases.forEach(([body, re], i) => {
    const file = write(`bad${i}.json`, body);
    assert.throws(() => loadConfigFile(file), (err: Error) => {
      assert.match(err.message, re);
      assert.ok(err.message.startsWith(file), err.message);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    });
  });
});

test('unreadable and non-JSON files give one clear line', () => {
  assert.throws(() => loadConfigFile(path.join(dir, 'missing.json')), /cannot read config .*missing\.json: ENOENT/);
  assert.throws(() => loadConfigFile(write('bad.json', '{ nope')), /not valid JSON/);
  assert.throws(() => resolveSecret({ id: 1 } as never, 'server.keys[0]'), /exactly one of secret or secretFile/);
  assert.throws(() => resolveSecret({ secretFile: path.join(dir, 'nokey') }, 'server.keys[0]'), /cannot read/);
});

test('destinations: tcp and udp on one port are two; SYN-tag settings are tcp only', () => {
  const keys = [{ id: 1, key: Buffer.alloc(16) }];
  checkDestinations([{ address: '198.51.100.1', port: 53, protocol: 'udp' }, { address: '198.51.100.1', port: 53 }], keys);
  checkDestinations([{ address: '*', port: 53, protocol: 'udp' }, { address: '198.51.100.1', port: 53 }], keys);
  assert.throws(() => checkDestinations([{ address: '198.51.100.1', port: 53, protocol: 'udp' }, { address: '198.51.100.1', port: 53, protocol: 'udp' }], keys), /protected twice/);
  assert.throws(() => checkDestinations([{ address: '198.51.100.1', port: 53, protocol: 'udp', bindSource: true }], keys), /tcp only/);
  assert.throws(() => checkDestinations([{ address: '*', port: 53, protocol: 'udp' }, { address: '198.51.100.1', port: 53, protocol: 'udp' }], keys), /"\*" already/);
});
