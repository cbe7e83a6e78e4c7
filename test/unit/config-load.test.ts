// Where the configuration comes from: the default path, SPAK_CONFIG, SPAK_* overrides derived from
// the schema, *_FILE, and the one-line errors with a fix for each common mistake.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { REPO_ROOT } from '../../src/bpf/object-files.js';
import { envFields, readEnv, screamingSnake, type Env } from '../../src/config/env.js';
import { configPath, DEFAULT_CONFIG_PATH, loadConfig, secretKeyFromEnv } from '../../src/config/load.js';
import { configSchema, validateConfig } from '../../src/config/schema.js';
import { checkDestinations } from '../../src/server/destinations.js';
import { getProfile, listProfiles } from '../../src/knock/profiles.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-config-load-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const KEY = '112233445566778899aabbccddeeff00';
const SPAK = path.join(REPO_ROOT, 'bin', 'spak');

function write(name: string, body: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
  return file;
}

const SERVER = { interface: 'eth0', keys: [{ id: 1, secret: KEY }], protect: [{ address: '198.51.100.1', port: 22 }] };
const CLIENT = { interface: 'eth0', destinations: [{ address: '198.51.100.1', port: 22, keyId: 1, secret: KEY }] };
const good = write('good.json', { server: SERVER, client: CLIENT });
const load = (env: Env, file = good) => loadConfig({ file, from: '--config' }, env);

/** The error message of fn, which must throw. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const msg = (err as Error).message;
    assert.ok(!msg.includes('\n'), `one line: ${msg}`);
    return msg;
  }
  assert.fail('expected an error');
}

describe('which file', () => {
  test('--config wins over SPAK_CONFIG, which wins over the default path', () => {
    assert.equal(DEFAULT_CONFIG_PATH, '/etc/spak/spak.json');
    assert.deepEqual(configPath(undefined, {}), { file: '/etc/spak/spak.json', from: 'default' });
    assert.deepEqual(configPath(undefined, { SPAK_CONFIG: good }), { file: good, from: 'SPAK_CONFIG' });
    assert.deepEqual(configPath('/x.json', { SPAK_CONFIG: good }), { file: '/x.json', from: '--config' });
    assert.deepEqual(configPath(undefined, { SPAK_CONFIG_FILE: write('cfgname', `${good}\n`) }), { file: good, from: 'SPAK_CONFIG' });
  });

  test('SPAK_CONFIG is read', () => {
    const file = write('other.json', { server: { ...SERVER, interface: 'veth7' } });
    assert.equal(loadConfig(configPath(undefined, { SPAK_CONFIG: file }), {}).server?.interface, 'veth7');
  });

  test('a missing default file says what to do', () => {
    const msg = errorOf(() => loadConfig({ file: path.join(dir, 'nope', 'spak.json'), from: 'default' }, {}));
    assert.match(msg, /^no configuration: .*nope\/spak\.json does not exist \(write it, see examples\/spak\.json; or give --config FILE, SPAK_CONFIG=FILE/);
    assert.match(errorOf(() => load({}, path.join(dir, 'gone.json'))), /cannot read config .*gone\.json: ENOENT/);
  });

  test('spak server and spak client with no arguments use SPAK_CONFIG, else /etc/spak/spak.json', (t) => {
    const run = (role: string, env: Record<string, string | undefined>) =>
      spawnSync(process.execPath, [SPAK, role], { encoding: 'utf8', env: { ...process.env, SPAK_CONFIG: undefined, ...env }, timeout: 20_000 });
    // A bad port in the file named by SPAK_CONFIG: the error names that file, so that file was read.
    const bad = write('badport.json', { server: { ...SERVER, protect: [{ address: '198.51.100.1', port: 0 }] } });
    const s = run('server', { SPAK_CONFIG: bad });
    assert.equal(s.status, 1, s.stderr);
    assert.equal(s.stderr, `spak: ${bad}: server.protect[0].port: Too small: expected number to be >=1; a port is 1-65535\n`);
    const badClient = write('badclient.json', { client: { ...CLIENT, interface: '' } });
    const c = run('client', { SPAK_CONFIG: badClient });
    assert.equal(c.status, 1, c.stderr);
    assert.equal(c.stderr, `spak: ${badClient}: client.interface: Too small: expected string to have >=1 characters\n`);
    if (existsSync(DEFAULT_CONFIG_PATH)) return t.skip(`${DEFAULT_CONFIG_PATH} exists on this machine`);
    for (const role of ['server', 'client']) {
      const d = run(role, {});
      assert.equal(d.status, 1);
      assert.match(d.stderr, /^spak: no configuration: \/etc\/spak\/spak\.json does not exist/);
    }
  });
});

describe('SPAK_* variables', () => {
  test('derived from the schema: every scalar field, nested objects included, no arrays', () => {
    const names = envFields(configSchema).map((f) => f.name);
    for (const n of ['SPAK_SERVER_INTERFACE', 'SPAK_SERVER_XDP_MODE', 'SPAK_SERVER_STEP_SECONDS', 'SPAK_SERVER_FLOW_IDLE_SECONDS',
      'SPAK_SERVER_SEED_EXISTING', 'SPAK_SERVER_KNOCK_PORT', 'SPAK_SERVER_KNOCK_SERVER_KEY_FILE', 'SPAK_CLIENT_INTERFACE', 'SPAK_CLIENT_STEP_SECONDS'])
      assert.ok(names.includes(n), n);
    assert.ok(!names.some((n) => /_KEYS|_PROTECT|_DESTINATIONS|_ALWAYS_ALLOW/.test(n)), names.join(' '));
    assert.equal(screamingSnake('flowIdleSeconds'), 'FLOW_IDLE_SECONDS');
    assert.equal(new Set(names).size, names.length, 'one variable per field');
  });

  test('they win over the file, typed by the schema', () => {
    const cfg = load({
      SPAK_SERVER_INTERFACE: 'veth9', SPAK_SERVER_STEP_SECONDS: '10', SPAK_SERVER_XDP_MODE: 'generic', SPAK_SERVER_SEED_EXISTING: 'false',
      SPAK_CLIENT_STEP_SECONDS: '15', SPAK_SERVER_REPLAY_CAPACITY: '2048',
    });
    assert.equal(cfg.server?.interface, 'veth9');
    assert.equal(cfg.server?.stepSeconds, 10);
    assert.equal(cfg.server?.xdpMode, 'generic');
    assert.equal(cfg.server?.seedExisting, false);
    assert.equal(cfg.server?.replayCapacity, 2048);
    assert.equal(cfg.client?.stepSeconds, 15);
    assert.equal(cfg.client?.interface, 'eth0', 'untouched fields keep the file value');
    assert.equal(load({}).server?.stepSeconds, 30, 'no variables: the file and the defaults');
  });

  test('nested sections are made when the file has none', () => {
    const knockKey = write('knock-key-name', '/etc/spak/knock/server.key\n');
    const cfg = load({ SPAK_SERVER_KNOCK_PORT: '62201', SPAK_SERVER_KNOCK_SERVER_KEY_FILE_FILE: knockKey, SPAK_SERVER_KNOCK_CLIENTS_DIR: '/etc/spak/clients' });
    assert.equal(cfg.server?.knock?.port, 62201);
    assert.equal(cfg.server?.knock?.serverKeyFile, '/etc/spak/knock/server.key');
    assert.equal(cfg.server?.knock?.windowSeconds, 30, 'defaults filled in');
  });

  test('X_FILE: the value from a file, one trailing newline trimmed; both given is an error', () => {
    const f = write('iface', 'veth3\n');
    assert.equal(readEnv('SPAK_SERVER_INTERFACE', { SPAK_SERVER_INTERFACE_FILE: f }), 'veth3');
    assert.equal(readEnv('X', { X_FILE: write('two', 'a\n\n') }), 'a\n');
    assert.equal(readEnv('X', { X: '' }), undefined, 'empty is unset');
    assert.equal(load({ SPAK_SERVER_INTERFACE_FILE: f }).server?.interface, 'veth3');
    assert.equal(errorOf(() => load({ SPAK_SERVER_INTERFACE: 'a', SPAK_SERVER_INTERFACE_FILE: f })),
      'SPAK_SERVER_INTERFACE and SPAK_SERVER_INTERFACE_FILE are both set: give one of them');
    assert.match(errorOf(() => load({ SPAK_SERVER_INTERFACE_FILE: path.join(dir, 'none') })), /^SPAK_SERVER_INTERFACE_FILE: cannot read .*none: ENOENT$/);
  });

  test('SECRET_KEY or SECRET_KEY_FILE for the positional form', () => {
    const f = write('key.hex', `${KEY}\n`);
    assert.equal(secretKeyFromEnv({ SECRET_KEY: KEY }).toString('hex'), KEY);
    assert.equal(secretKeyFromEnv({ SECRET_KEY_FILE: f }).toString('hex'), KEY);
    assert.match(errorOf(() => secretKeyFromEnv({ SECRET_KEY: KEY, SECRET_KEY_FILE: f })), /SECRET_KEY and SECRET_KEY_FILE are both set/);
    assert.match(errorOf(() => secretKeyFromEnv({})), /SECRET_KEY is not set: .*SECRET_KEY_FILE/);
    assert.match(errorOf(() => secretKeyFromEnv({ SECRET_KEY_FILE: write('short.hex', 'abcd\n') })), /SECRET_KEY_FILE .*short\.hex has 4 hex characters/);
  });

  test('bad values name the variable, not the file', () => {
    assert.equal(errorOf(() => load({ SPAK_SERVER_STEP_SECONDS: 'abc' })), 'SPAK_SERVER_STEP_SECONDS="abc": not a number');
    assert.equal(errorOf(() => load({ SPAK_SERVER_STEP_SECONDS: '7200' })),
      'SPAK_SERVER_STEP_SECONDS (server.stepSeconds): Too big: expected number to be <=3600');
    assert.match(errorOf(() => load({ SPAK_SERVER_XDP_MODE: 'fast' })), /^SPAK_SERVER_XDP_MODE \(server\.xdpMode\): Invalid option: expected one of "native"\|"generic"\|"auto"/);
    assert.equal(errorOf(() => load({ SPAK_SERVER_SEED_EXISTING: 'maybe' })), 'SPAK_SERVER_SEED_EXISTING="maybe": expected true or false');
    assert.equal(errorOf(() => load({ SPAK_SERVER_KNOCK_PORT: '70000' })).split(';')[0], 'SPAK_SERVER_KNOCK_PORT (server.knock.port): Too big: expected number to be <=65535');
    assert.match(errorOf(() => load({ SPAK_SERVER_KNOCK_PORT: '70000' })), /; a port is 1-65535$/);
  });

  test('knock profiles take *_FILE too', () => {
    const host = write('profile-host', '192.0.2.7\n');
    const env = { XDG_CONFIG_HOME: path.join(dir, 'noprofiles'), SPAK_PROFILE_CI_HOST_FILE: host, SPAK_PROFILE_CI_PORT: '62201' };
    assert.equal(getProfile('ci', env)?.host, '192.0.2.7');
    assert.deepEqual(listProfiles(env), ['ci']);
    assert.match(errorOf(() => getProfile('ci', { ...env, SPAK_PROFILE_CI_HOST: 'x' })), /SPAK_PROFILE_CI_HOST and SPAK_PROFILE_CI_HOST_FILE are both set/);
  });

  test('an unknown variable under SPAK_SERVER_ / SPAK_CLIENT_ is an error with a suggestion', () => {
    assert.equal(errorOf(() => load({ SPAK_SERVER_STEP_SECOND: '10' })), 'SPAK_SERVER_STEP_SECOND: no such setting; did you mean SPAK_SERVER_STEP_SECONDS?');
    assert.equal(errorOf(() => load({ SPAK_CLIENT_INTERFAC_FILE: '/x' })), 'SPAK_CLIENT_INTERFAC_FILE: no such setting; did you mean SPAK_CLIENT_INTERFACE_FILE?');
    assert.match(errorOf(() => load({ SPAK_SERVER_ZZZZZZZZZZZZZZ: '1' })), /no such setting \(see README: Configuration\)/);
    assert.equal(load({ SPAK_PROFILE_X_HOST: 'h', SPAK_BPF_DIR: '/x' }).server?.interface, 'eth0', 'other SPAK_ variables are not ours');
  });
});

describe('errors name the field and the fix', () => {
  const cases: [string, unknown, string][] = [
    ['unknown key', { server: { ...SERVER, stepSecond: 5 } }, 'server: unknown key "stepSecond"; did you mean "stepSeconds"?'],
    ['unknown key, snake case', { server: { ...SERVER, step_seconds: 5 } }, 'server: unknown key "step_seconds"; did you mean "stepSeconds"?'],
    ['unknown section', { servre: SERVER }, '(top level): unknown key "servre"; did you mean "server"?'],
    ['unknown key, nothing close', { server: { ...SERVER, zzzzzzzzzz: 1 } }, 'server: unknown key "zzzzzzzzzz"; known keys here: interface, '],
    ['bad port', { server: { ...SERVER, protect: [{ address: '198.51.100.1', port: 70000 }] } },
      'server.protect[0].port: Too big: expected number to be <=65535; a port is 1-65535'],
    ['port in quotes', { server: { ...SERVER, protect: [{ address: '198.51.100.1', port: '22' }] } },
      'server.protect[0].port: Invalid input: expected number, received string; a port is 1-65535'],
    ['missing keys', { server: { interface: 'eth0', protect: SERVER.protect } },
      'server.keys: missing; add keys: [{"id": 1, "secretFile": "/etc/spak/key1.hex"}] (spak keygen makes a key)'],
    ['empty keys', { server: { ...SERVER, keys: [] } }, 'server.keys: Too small: expected array to have >=1 items; add keys: [{"id": 1, '],
    ['missing protect', { server: { interface: 'eth0', keys: SERVER.keys } }, 'server.protect: missing; add protect: [{"address": "198.51.100.1", "port": 22}]'],
    ['missing interface', { client: { destinations: CLIENT.destinations } }, 'client.interface: missing; add interface: "eth0" (`ip link` lists the interfaces)'],
    ['missing destinations', { client: { interface: 'eth0' } }, 'client.destinations: missing; add destinations: [{"address"'],
    ['long interface', { server: { ...SERVER, interface: 'a-very-long-interface' } }, 'server.interface: Too big: expected string to have <=15 characters; interface names are at most 15 characters'],
    ['bad key id', { client: { ...CLIENT, destinations: [{ ...CLIENT.destinations[0], keyId: 70000 }] } }, 'client.destinations[0].keyId: Too big: expected number to be <=65535; a key id is 0-65535'],
    ['bad server key id', { server: { ...SERVER, keys: [{ id: -1, secret: KEY }] } }, 'server.keys[0].id: Too small: expected number to be >=0; a key id is 0-65535'],
    ['bad secret', { server: { ...SERVER, keys: [{ id: 1, secret: 'abc' }] } }, 'server.keys[0].secret: must be 32 hex characters (128 bits); 32 hex characters; spak keygen makes a key (or use secretFile)'],
    ['bad address', { server: { ...SERVER, protect: [{ address: '1.2.3', port: 22 }] } },
      'server.protect[0].address: not an IPv4 or IPv6 address, nor "*"; write it like 198.51.100.1 or 2001:db8::1, or "*" for every address'],
    ['bad client address', { client: { ...CLIENT, destinations: [{ ...CLIENT.destinations[0], address: 'host' }] } },
      'client.destinations[0].address: not an IPv4 or IPv6 address; write it like 198.51.100.1 or 2001:db8::1'],
    ['capacity', { server: { ...SERVER, flowCapacity: 10 } }, 'server.flowCapacity: Too small: expected number to be >=1024; a capacity is 1024-16777216 entries'],
    ['number in quotes', { server: { ...SERVER, stepSeconds: '30' } }, 'server.stepSeconds: Invalid input: expected number, received string; write the number without quotes'],
    ['boolean in quotes', { server: { ...SERVER, seedExisting: 'yes' } }, 'server.seedExisting: Invalid input: expected boolean, received string; write true or false without quotes'],
    ['missing knock key file', { server: { ...SERVER, knock: { port: 62201, clientsDir: '/c' } } },
      'server.knock.serverKeyFile: missing; add serverKeyFile: the server\'s private key (spak keygen server makes one)'],
    ['missing clients directory', { server: { ...SERVER, knock: { port: 62201, serverKeyFile: '/k' } } },
      'server.knock.clientsDir: missing; add clientsDir: the directory of NAME.pub client keys'],
    ['any other missing field', { server: { ...SERVER, protect: [{ port: 22 }] } }, 'server.protect[0].address: missing; add address'],
  ];
  for (const [name, body, expected] of cases)
    test(name, () => {
      const file = write(`hint-${name.replace(/\W+/g, '-')}.json`, body);
      const msg = errorOf(() => load({}, file));
      assert.ok(msg.startsWith(`${file}: ${expected}`), `${msg}\n  does not start with\n${file}: ${expected}`);
    });
});

describe('examples/ stay valid', () => {
  test('examples/spak.json: a server with keys from files, v4 and v6, knock and always-allow', () => {
    const file = path.join(REPO_ROOT, 'examples', 'spak.json');
    const cfg = loadConfig({ file, from: '--config' }, {});
    const s = cfg.server!;
    assert.ok(s.keys.every((k) => k.secretFile !== undefined && k.secret === undefined), 'keys from files');
    assert.ok(s.protect.some((d) => d.address.includes(':')) && s.protect.some((d) => d.address.includes('.')), 'v4 and v6');
    assert.ok(s.knock && s.alwaysAllow.length > 0);
    checkDestinations(s.protect, s.keys.map((k) => ({ id: k.id, key: Buffer.alloc(16) })));
  });

  test('examples/client.json: a client with keys from files', () => {
    const file = path.join(REPO_ROOT, 'examples', 'client.json');
    const cfg = validateConfig(JSON.parse(JSON.stringify(loadConfig({ file, from: '--config' }, {}))), file);
    assert.ok(cfg.client!.destinations.length > 0);
    assert.ok(cfg.client!.destinations.every((d) => d.secretFile !== undefined && d.secret === undefined));
  });
});
