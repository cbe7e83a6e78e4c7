// spak-test-timeout: 120
// Knock mode from the command line, as a user runs it: keygen into a temp dir (modes checked), a real
// UDP knock to 127.0.0.1 and [::1] that the test receives and opens with the server key, profiles
// from files and from the environment, and `spak knock PROFILE -- cmd` passing the exit code through.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KnockOpener, knockClient } from '../../src/knock/datagram.js';
import { clientIdOf, loadPrivateKey, loadPublicKey } from '../../src/knock/keys.js';
import { loadBundle } from '../../src/knock/bundle.js';
import { getProfile, listProfiles } from '../../src/knock/profiles.js';

const SPAK = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/spak');
const dir = mkdtempSync(path.join(tmpdir(), 'spak-knock-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const env = { ...process.env, XDG_CONFIG_HOME: path.join(dir, 'cfg') };

interface Run { code: number; stdout: string; stderr: string }
function spak(args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SPAK, ...args], { env: { ...env, ...extraEnv }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}
const mode = (f: string): number => statSync(f).mode & 0o777;

describe('keygen', () => {
  test('bare keygen still prints a 128-bit hex key', async () => {
    const r = await spak(['keygen']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^[0-9a-f]{32}\n$/);
  });

  test('server and client keys, bundle, modes; refuses to overwrite', async () => {
    const s = await spak(['keygen', 'server', '--out', path.join(dir, 'srv')]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(mode(path.join(dir, 'srv/server.key')), 0o600);
    assert.equal(mode(path.join(dir, 'srv/server.pub')), 0o644);
    const c = await spak(['keygen', 'client', '--name', 'laptop', '--server-pub', path.join(dir, 'srv/server.pub'), '--out', path.join(dir, 'cli'), '--host', '127.0.0.1', '--port', '9']);
    assert.equal(c.code, 0, c.stderr);
    for (const f of ['laptop.key', 'laptop.spak']) assert.equal(mode(path.join(dir, 'cli', f)), 0o600, f);
    const b = loadBundle(path.join(dir, 'cli/laptop.spak'));
    assert.equal(b.clientId, clientIdOf(loadPublicKey(path.join(dir, 'cli/laptop.pub'))));
    assert.match(c.stdout, new RegExp(`id ${b.clientId.toString(16).padStart(8, '0')}`));
    assert.deepEqual(b.serverKey.export({ format: 'jwk' }), loadPublicKey(path.join(dir, 'srv/server.pub')).export({ format: 'jwk' }));
    const again = await spak(['keygen', 'server', '--out', path.join(dir, 'srv')]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^spak: .*server\.key exists/);
  });

  test('usage errors: one spak: line, exit 2', async () => {
    for (const args of [['keygen', 'bogus'], ['keygen', 'client', '--name', 'x'], ['keygen', 'client', '--name', 'Bad Name', '--server-pub', 'f', '--out', dir]]) {
      const r = await spak(args);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, /^spak: /);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('knock', () => {
  for (const [family, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']] as const) {
    test(`sends one datagram to ${host} that opens with the server key`, async () => {
      const sock = createSocket(family);
      await new Promise<void>((r) => sock.bind(0, host, r));
      const port = sock.address().port;
      const got = new Promise<{ msg: Buffer; from: string }>((r) => sock.once('message', (msg, rinfo) => r({ msg, from: rinfo.address })));
      const target = family === 'udp6' ? `[${host}]` : host;
      const r = await spak(['knock', target, '--port', String(port), '--bundle', path.join(dir, 'cli/laptop.spak'), '--open', 'tcp/22,udp/51820', '--address', '203.0.113.9', '--duration', '120']);
      assert.equal(r.code, 0, r.stderr);
      const { msg, from } = await got;
      sock.close();
      assert.equal(from, host);
      const srv = loadPrivateKey(path.join(dir, 'srv/server.key'));
      const cliPub = loadPublicKey(path.join(dir, 'cli/laptop.pub'));
      const opened = await new KnockOpener(srv, (id) => (id === clientIdOf(cliPub) ? knockClient(srv, cliPub, 'laptop') : undefined)).open(msg);
      assert.ok(opened.ok, JSON.stringify(opened));
      assert.equal(opened.plain.serverAddr, host);
      assert.equal(opened.plain.allowAddr, '203.0.113.9');
      assert.equal(opened.plain.durationS, 120);
      assert.deepEqual(opened.plain.open, [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }]);
      assert.ok(Math.abs(opened.plain.timestamp - Date.now() / 1000) < 30);
    });
  }

  for (const [family, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']] as const) {
    test(`without --address the knock names the address it is sent from (${host})`, async () => {
      const sock = createSocket(family);
      await new Promise<void>((r) => sock.bind(0, host, r));
      const got = new Promise<{ msg: Buffer; from: string }>((r) => sock.once('message', (msg, rinfo) => r({ msg, from: rinfo.address })));
      const r = await spak(['knock', family === 'udp6' ? `[${host}]` : host, '--port', String(sock.address().port), '--bundle', path.join(dir, 'cli/laptop.spak')]);
      assert.equal(r.code, 0, r.stderr);
      const { msg, from } = await got;
      sock.close();
      const srv = loadPrivateKey(path.join(dir, 'srv/server.key'));
      const cliPub = loadPublicKey(path.join(dir, 'cli/laptop.pub'));
      const opened = await new KnockOpener(srv, (id) => (id === clientIdOf(cliPub) ? knockClient(srv, cliPub, 'laptop') : undefined)).open(msg);
      assert.ok(opened.ok, JSON.stringify(opened));
      assert.equal(opened.plain.allowAddr, from, 'the named address is the packet source');
      assert.match(r.stderr, new RegExp(`from ${host.replace(/\./g, '\\.')}`));
    });
  }

  test('bad input', async () => {
    const bundle = path.join(dir, 'cli/laptop.spak');
    for (const [args, code] of [
      [['knock', '127.0.0.1', '--port', '9', '--bundle', bundle, '--open', 'sctp/1'], 2],
      [['knock', '127.0.0.1', '--port', '70000', '--bundle', bundle], 2],
      [['knock', '127.0.0.1', '--port', '9', '--bundle', bundle, '--address', 'nope'], 2],
      [['knock', 'no-such-profile'], 2],
      [['knock', '127.0.0.1', '--port', '9', '--bundle', path.join(dir, 'missing.spak')], 1],
      [['knock', '127.0.0.1', '--port', '9', '--bundle', path.join(dir, 'srv/server.pub')], 1],
    ] as const) {
      const r = await spak([...args]);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^spak: /);
    }
  });
});

describe('profiles', () => {
  test('create, list, show, set, delete; files 0600', async () => {
    const bundle = path.join(dir, 'cli/laptop.spak');
    assert.equal((await spak(['profile', 'create', 'home', '--bundle', bundle, '--open', 'tcp/22'])).code, 0);
    assert.equal((await spak(['profile', 'create', 'home', '--bundle', bundle])).code, 1, 'exists');
    const file = path.join(dir, 'cfg/spak/profiles/home.json');
    assert.equal(mode(file), 0o600);
    assert.equal(mode(path.dirname(file)), 0o700);
    assert.equal((await spak(['profile', 'list'])).stdout, 'home\n');
    assert.equal((await spak(['profile', 'set', 'home', '--host', '::1', '--port', '4000'])).code, 0);
    const show = await spak(['profile', 'show', 'home']);
    assert.match(show.stdout, /host: ::1\nport: 4000\nopen: tcp\/22/);
    assert.doesNotMatch(show.stdout, /PRIVATE/);
    assert.ok(readFileSync(file, 'utf8').includes('PRIVATE KEY'), 'the profile holds the key');
    assert.equal((await spak(['profile', 'delete', 'home'])).code, 0);
    assert.equal((await spak(['profile', 'show', 'home'])).code, 1);
  });

  test('from the environment, overriding a file field by field', () => {
    const e = { XDG_CONFIG_HOME: path.join(dir, 'cfg2'), SPAK_PROFILE_CI_RUNNER_HOST: '192.0.2.1', SPAK_PROFILE_CI_RUNNER_PORT: '62201',
      SPAK_PROFILE_CI_RUNNER_BUNDLE: readFileSync(path.join(dir, 'cli/laptop.spak'), 'utf8'), SPAK_PROFILE_CI_RUNNER_OPEN: 'tcp/443' };
    assert.deepEqual(listProfiles(e), ['ci_runner']);
    const p = getProfile('ci_runner', e);
    assert.equal(p?.source, 'env');
    assert.deepEqual([p?.host, p?.port, p?.open, p?.bundle?.name], ['192.0.2.1', 62201, 'tcp/443', 'laptop']);
    assert.equal(getProfile('ci-runner', e)?.host, '192.0.2.1', "'-' in a name is '_' in the variable");
    assert.equal(getProfile('ci_runner', { ...e, SPAK_PROFILE_CI_RUNNER_BUNDLE: path.join(dir, 'cli/laptop.spak') })?.bundle?.name, 'laptop', 'a bundle path works too');
    assert.throws(() => getProfile('ci_runner', { ...e, SPAK_PROFILE_CI_RUNNER_PORT: 'x' }), /SPAK_PROFILE_CI_RUNNER_PORT: bad port/);
    assert.equal(getProfile('other', e), undefined);
  });

  test('knock PROFILE -- cmd: knocks, waits for the TCP port, runs the command, passes its exit code', async () => {
    const tcp = createServer((s) => s.destroy());
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const tport = (tcp.address() as { port: number }).port;
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    let knocks = 0;
    udp.on('message', () => knocks++);
    const e = { SPAK_PROFILE_LAB_HOST: '127.0.0.1', SPAK_PROFILE_LAB_PORT: String(udp.address().port),
      SPAK_PROFILE_LAB_BUNDLE: path.join(dir, 'cli/laptop.spak'), SPAK_PROFILE_LAB_OPEN: `tcp/${tport}` };
    const r = await spak(['knock', 'lab', '--', 'sh', '-c', 'echo ran; exit 7'], e);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'ran\n');
    assert.equal(knocks, 1);
    tcp.close();
    const closed = await spak(['knock', 'lab', '--wait', '1', '--', 'true'], e);
    assert.equal(closed.code, 1);
    assert.match(closed.stderr, /did not answer within 1 s/);
    udp.close();
  });
});
