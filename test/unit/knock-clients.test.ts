// spak-test-timeout: 120
// The knock daemon's pieces that need no eBPF: the knock config section, client policies and
// networks, the clients directory scan and the log rate limit (the replay memory: knock-replay.test.ts).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema, formatZodError, knockSchema } from '../../src/config/schema.js';
import { scanClientsDir } from '../../src/knock/directory.js';
import { parsePolicy, type PolicyDefaults } from '../../src/knock/policy.js';
import { inNetwork, parseNetwork } from '../../src/wire/address.js';
import { clientIdOf, generateX25519, privatePem, publicPem } from '../../src/knock/keys.js';
import { knockOptionsFromConfig } from '../../src/knock/service.js';
import { addrTo16 } from '../../src/wire/address.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'spak-kclients-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const server = generateX25519();
const DEFAULTS: PolicyDefaults = { allow: ['tcp/22'], maxDurationSeconds: 3600, defaultDurationSeconds: 300, fromNetworks: [], nat: false, maxAddresses: 4, idleExtensionSeconds: 0, graceSeconds: 0 };

describe('config: server.knock', () => {
  const base = { interface: 'eth0', keys: [{ id: 1, secret: '00'.repeat(16) }], protect: [{ address: '198.51.100.1', port: 22 }] };
  const knock = { port: 62201, serverKeyFile: '/etc/spak/server.key', clientsDir: '/etc/spak/clients' };
  const error = (k: object): string => {
    const r = configSchema.safeParse({ server: { ...base, knock: { ...knock, ...k } } });
    assert.equal(r.success, false);
    return formatZodError('c.json', r.error!);
  };

  test('defaults', () => {
    const k = knockSchema.parse(knock);
    assert.deepEqual(
      { d: k.defaultDurationSeconds, m: k.maxDurationSeconds, w: k.windowSeconds, a: k.allow, f: k.fromNetworks, s: k.serverAddresses },
      { d: 300, m: 3600, w: 30, a: [], f: [], s: [] });
  });

  test('errors name the field', () => {
    assert.match(error({ port: 0 }), /^c\.json: server\.knock\.port: /);
    assert.match(error({ allow: ['tcp/22', 'icmp/1'] }), /^c\.json: server\.knock\.allow\[1\]: expected tcp\/PORT or udp\/PORT$/);
    assert.match(error({ allow: ['udp/70000'] }), /server\.knock\.allow\[0\]: port above 65535/);
    assert.match(error({ fromNetworks: ['10.0.0.0/33'] }), /server\.knock\.fromNetworks\[0\]: 10\.0\.0\.0\/33: prefix length must be 0\.\.32/);
    assert.match(error({ defaultDurationSeconds: 7200 }), /server\.knock\.defaultDurationSeconds: defaultDurationSeconds is above maxDurationSeconds/);
    assert.match(error({ serverKeyFile: undefined }), /server\.knock\.serverKeyFile: /);
    assert.match(error({ portt: 1 }), /server\.knock: .*portt/);
  });
});

describe('policies and networks', () => {
  test('NAME.json overrides the defaults field by field', () => {
    const p = parsePolicy(JSON.stringify({ allow: ['tcp/22', 'udp/51820'], fromNetworks: ['198.51.100.0/24', '2001:db8::/32'], graceSeconds: 5 }), DEFAULTS);
    assert.deepEqual(p.allow, [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }]);
    assert.equal(p.maxDurationSeconds, 3600);
    assert.equal(p.graceSeconds, 5);
    assert.deepEqual(p.fromNetworks.map((n) => n.prefixLen), [120, 32]);
    assert.deepEqual(parsePolicy(null, DEFAULTS).allow, [{ proto: 'tcp', port: 22 }]);
  });

  test('bad policies: one line naming the file and the field', () => {
    assert.throws(() => parsePolicy('{', DEFAULTS, 'a.json'), /^Error: a\.json: not valid JSON/);
    assert.throws(() => parsePolicy('{"allow": "tcp/22"}', DEFAULTS, 'a.json'), /^Error: a\.json: allow: /);
    assert.throws(() => parsePolicy('{"maxDurationSeconds": 60}', DEFAULTS, 'a.json'), /a\.json: defaultDurationSeconds 300 is above maxDurationSeconds 60/);
    assert.throws(() => parsePolicy('{"open": []}', DEFAULTS, 'a.json'), /a\.json: .*open/);
  });

  test('network membership, IPv4 (mapped) and IPv6, odd prefix lengths', () => {
    const has = (net: string, a: string) => inNetwork(addrTo16(a), parseNetwork(net));
    assert.equal(has('198.51.100.0/24', '198.51.100.77'), true);
    assert.equal(has('198.51.100.0/24', '198.51.101.1'), false);
    assert.equal(has('198.51.100.0/23', '198.51.101.1'), true);
    assert.equal(has('198.51.100.128/25', '198.51.100.127'), false);
    assert.equal(has('0.0.0.0/0', '203.0.113.1'), true);
    assert.equal(has('0.0.0.0/0', '2001:db8::1'), false, 'an IPv4 network holds no IPv6 address');
    assert.equal(has('2001:db8::/32', '2001:db8:ffff::1'), true);
    assert.equal(has('2001:db8::/33', '2001:db8:8000::1'), false);
    assert.equal(has('::1', '::1'), true);
    assert.equal(has('203.0.113.5', '203.0.113.6'), false);
  });
});

describe('the clients directory', () => {
  const dir = path.join(tmp, 'clients');
  mkdirSync(dir);
  const alice = generateX25519();
  writeFileSync(path.join(dir, 'alice.pub'), publicPem(alice.publicKey));
  writeFileSync(path.join(dir, 'alice.json'), '{"allow": ["udp/51820"]}');
  writeFileSync(path.join(dir, 'bob.pub'), publicPem(generateX25519().publicKey));
  writeFileSync(path.join(dir, 'bob.json'), '{"allow": [22]}');
  writeFileSync(path.join(dir, 'copy.pub'), privatePem(alice.privateKey)); // a private key PEM: its public half
  writeFileSync(path.join(dir, 'orphan.json'), '{}');
  writeFileSync(path.join(dir, '.alice.pub.123.tmp'), 'half written');

  test('ids as keygen derives them; duplicates refused naming both files; bad files skipped', () => {
    const r = scanClientsDir(dir, server.privateKey, DEFAULTS);
    assert.deepEqual([...r.clients.values()].map((c) => c.name), []);
    assert.equal(r.problems.length, 3, r.problems.join('\n'));
    assert.ok(r.problems.some((p) => p.includes(`${path.join(dir, 'alice.pub')} and ${path.join(dir, 'copy.pub')}: both have client id ${clientIdOf(alice.publicKey).toString(16).padStart(8, '0')}`)));
    assert.ok(r.problems.some((p) => p.startsWith('client bob not served: ') && p.includes('bob.json: allow[0]')));
    assert.ok(r.problems.some((p) => p.includes('orphan.json: no orphan.pub')));
    rmSync(path.join(dir, 'copy.pub'));
    const r2 = scanClientsDir(dir, server.privateKey, DEFAULTS);
    const a = r2.clients.get(clientIdOf(alice.publicKey));
    assert.equal(a?.name, 'alice');
    assert.deepEqual(a?.policy.allow, [{ proto: 'udp', port: 51820 }]);
    // Unchanged files reuse what was derived.
    assert.equal(scanClientsDir(dir, server.privateKey, DEFAULTS, r2.clients).clients.get(a!.id), a);
  });

  test('a missing directory: no clients, one problem line', () => {
    const r = scanClientsDir(path.join(tmp, 'nope'), server.privateKey, DEFAULTS);
    assert.equal(r.clients.size, 0);
    assert.equal(r.unreadable, false);
    assert.match(r.problems[0]!, /no such directory/);
  });

  test('knockOptionsFromConfig: the XDP side for SpakServer, from the same files', () => {
    const keyFile = path.join(tmp, 'server.key');
    writeFileSync(keyFile, privatePem(server.privateKey));
    const o = knockOptionsFromConfig(knockSchema.parse({ port: 62201, serverKeyFile: keyFile, clientsDir: dir, rate: 5 }));
    assert.equal(o.maps.port, 62201);
    assert.equal(o.maps.rate, 5);
    assert.equal(o.maps.clients.size, 1);
  });
});

