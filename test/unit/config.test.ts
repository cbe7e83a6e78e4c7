import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { newHexKey, parseHexKey } from '../../src/config/keys.js';
import { loadConfigFile, resolveSecret } from '../../src/config/schema.js';

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
  assert.equal(cfg.server?.stepSeconds, 30);
  assert.equal(cfg.server?.stepWindow, 1);
  assert.equal(cfg.server?.protect[1]?.dialPort, 2222);
  assert.equal(resolveSecret(cfg.server!.keys[1]!, 'k').toString('hex'), KEY);
  assert.equal(cfg.client?.destinations[0]?.keyId, 1);
});

test('errors name the field', () => {
  const cases: [unknown, RegExp][] = [
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 70000 }] } }, /server\.protect\[0\]\.port/],
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '1.2.3', port: 22 }] } }, /server\.protect\[0\]\.address: not an IPv4 or IPv6 address/],
    [{ server: { interface: 'eth0', keys: [{ id: 1, secret: 'abc' }], protect: [{ address: '198.51.100.1', port: 22 }] } }, /server\.keys\[0\]\.secret: must be 32 hex/],
    [{ server: { interface: 'eth0', keys: [], protect: [{ address: '198.51.100.1', port: 22 }] } }, /server\.keys/],
    [{ client: { interface: 'eth0', destinations: [{ address: '198.51.100.1', port: 22, keyId: 70000, secret: KEY }] } }, /client\.destinations\[0\]\.keyId/],
    [{ client: { interface: 'eth0', destinations: [], bogus: 1 } }, /client/],
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
