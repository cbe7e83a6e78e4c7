// The CLI as a user meets it: --help everywhere, one-line errors with a non-zero exit for bad
// input, and nothing left attached after a failed start.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Lab, SPAK_BIN as SPAK } from '../../src/lab/lab.js';

const KEY = '112233445566778899aabbccddeeff00';
// The lab removes its namespaces at exit and on SIGINT/SIGTERM, also when a test fails.
let lab: Lab;
let NS = '';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/**
 * Runs spak in our network namespace (nsenter --net: `ip netns exec` would also give it a private
 * mount namespace, where spak refuses to pin); returns exit status and the output lines.
 */
function spak(args: string[], env: Record<string, string | undefined> = { SECRET_KEY: KEY }, timeoutMs = 20_000, via = inNetns()) {
  const r = spawnSync(via[0]!, [...via.slice(1), SPAK, ...args], {
    encoding: 'utf8',
    env: { ...process.env, SECRET_KEY: undefined, ...env },
    timeout: timeoutMs,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, errLines: r.stderr.trim().split('\n').filter(Boolean) };
}

function inNetns(): string[] {
  return ['nsenter', `--net=/run/netns/${NS}`];
}

function xdpAttached(dev: string): boolean {
  return /prog\/xdp|xdpgeneric|xdpdrv|\bxdp\b/.test(ip('-n', NS, '-d', 'link', 'show', 'dev', dev));
}

function tcFilters(dev: string): string {
  return execFileSync('ip', ['netns', 'exec', NS, 'tc', 'filter', 'show', 'dev', dev, 'egress'], { encoding: 'utf8' });
}

before(async () => {
  lab = await Lab.create({ tag: 'cli' });
  NS = (await lab.addHost('h', 10)).ns;
  ip('-n', NS, 'link', 'add', 'name', 'spk0', 'type', 'veth', 'peer', 'name', 'spk1');
  for (const dev of ['spk0', 'spk1']) ip('-n', NS, 'link', 'set', 'dev', dev, 'up');
});

after(async () => {
  await lab.destroy();
});

test('--help works for the tool and every command', () => {
  for (const args of [['--help'], ['server', '--help'], ['client', '--help'], ['keygen', '--help'], ['stats', '--help'], ['status', '--help'], ['doctor', '--help']]) {
    const r = spak(args);
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout, /Usage: spak/);
  }
});

test('keygen prints a fresh 128-bit key', () => {
  const a = spak(['keygen']).stdout.trim();
  const b = spak(['keygen']).stdout.trim();
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.notEqual(a, b);
});

test('bad input: one clear line, non-zero exit, nothing attached', () => {
  const cases: { args: string[]; env?: Record<string, string | undefined>; re: RegExp }[] = [
    { args: ['server', '198.51.100.1'], re: /needs <ip> <port> <key_id> <iface>/ },
    { args: ['server'], env: { SPAK_CONFIG: '/nonexistent/spak.json' }, re: /cannot read config \/nonexistent\/spak\.json: ENOENT/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0'], env: { SECRET_KEY_FILE: '/nonexistent/key' }, re: /SECRET_KEY_FILE: cannot read \/nonexistent\/key: ENOENT/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0'], env: {}, re: /SECRET_KEY is not set/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0'], env: { SECRET_KEY: 'xyz' }, re: /SECRET_KEY is not hexadecimal/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0'], env: { SECRET_KEY: 'abcd' }, re: /SECRET_KEY has 4 hex characters/ },
    { args: ['server', '198.51.100.300', '22', '1', 'spk0'], re: /bad address/ },
    { args: ['server', '198.51.100.1', '0', '1', 'spk0'], re: /bad port 0/ },
    { args: ['server', '198.51.100.1', 'ssh', '1', 'spk0'], re: /bad port "ssh"/ },
    { args: ['server', '198.51.100.1', '22', '65536', 'spk0'], re: /bad key_id 65536/ },
    { args: ['server', '198.51.100.1', '22', '1', 'nosuch9'], re: /looking up interface nosuch9: no such device/ },
    { args: ['client', '2001:db8::1', '22', '1', 'nosuch9'], re: /looking up interface nosuch9: no such device/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0', '--xdp-mode', 'fast'], re: /fast.*invalid|Allowed choices/i },
    { args: ['server', '--config', '/nonexistent/spak.json'], re: /cannot read config \/nonexistent\/spak\.json: ENOENT/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0', '--config', '/x.json'], re: /either <ip> <port> <key_id> <iface> or --config/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0'], env: { SECRET_KEY: KEY, SPAK_BPF_DIR: '/nonexistent' }, re: /eBPF object \/nonexistent\/server\.bpf\.o not found: run make build/ },
    { args: ['client', '198.51.100.1', '22', '1', 'spk0'], env: { SECRET_KEY: KEY, SPAK_BPF_DIR: '/nonexistent' }, re: /client\.bpf\.o not found/ },
    // Loopback has no native XDP: the missing feature is named, nothing is attached.
    { args: ['server', '198.51.100.1', '22', '1', 'lo'], re: /attaching XDP link to lo: .*not supported/i },
    { args: ['server', '*', '22', '1', 'spk0', '--dial-address', '203.0.113.1'], re: /dial address needs one protected address/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0', '--replay-capacity', '10'], re: /bad replay capacity 10/ },
    { args: ['client', '*', '22', '1', 'spk0'], re: /bad address "\*"/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0', '--metrics', 'localhost:80'], re: /--metrics.*bad metrics address "localhost:80"/ },
    { args: ['server', '198.51.100.1', '22', '1', 'spk0', '--log-file', '/nonexistent/dir/spak.log'], re: /cannot open log file \/nonexistent\/dir\/spak\.log: ENOENT/ },
  ];
  for (const c of cases) {
    const r = spak(c.args, c.env ?? { SECRET_KEY: KEY });
    const what = `spak ${c.args.join(' ')}`;
    assert.notEqual(r.status, 0, `${what} should fail`);
    assert.equal(r.errLines.length, 1, `${what}: one error line, got ${JSON.stringify(r.errLines)}`);
    assert.match(r.errLines[0]!, c.re, what);
    assert.match(r.errLines[0]!, /^spak: /, what);
    assert.equal(xdpAttached('spk0'), false, `${what} left XDP attached`);
    assert.equal(xdpAttached('lo'), false, `${what} left XDP attached`);
    assert.equal(tcFilters('spk0').trim(), '', `${what} left a tc filter`);
  }
});

test('not root: refused with one line', () => {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, SPAK, 'server', '198.51.100.1', '22', '1', 'lo'], {
    encoding: 'utf8',
    env: { ...process.env, SECRET_KEY: KEY },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.trim(), /^spak: spak server must run as root/);
});

test('under `ip netns exec` (a private mount namespace, where pins would vanish) the server refuses and says what to do', () => {
  const r = spak(['server', '198.51.100.1', '22', '1', 'spk0'], { SECRET_KEY: KEY }, 20_000, ['ip', 'netns', 'exec', NS]);
  assert.notEqual(r.status, 0);
  assert.equal(r.errLines.length, 1, JSON.stringify(r.errLines));
  assert.match(r.errLines[0]!, /^spak: .*private mount namespace.*nsenter --net=\/run\/netns\/NAME/);
  assert.equal(xdpAttached('spk0'), false);
});

test('--xdp-mode auto falls back to generic XDP with a warning; SIGTERM leaves it in force, server stop removes it', async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn('nsenter', [`--net=/run/netns/${NS}`, SPAK, 'server', '198.51.100.1', '22', '1', 'lo', '--xdp-mode', 'auto'], {
    env: { ...process.env, SECRET_KEY: KEY },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  try {
    const deadline = Date.now() + 15_000;
    while (!/XDP \(generic\) attached to lo/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /XDP \(generic\) attached to lo/);
    assert.match(err, /generic/i, 'a warning says native XDP was not possible');
    assert.equal(xdpAttached('lo'), true);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  assert.match(out, /spak server counters:/);
  assert.match(out, /protection stays in force on lo \(spak server stop lo removes it\)/);
  assert.equal(xdpAttached('lo'), true, 'SIGTERM leaves the program in force');
  const stop = spak(['server', 'stop', 'lo']);
  assert.equal(stop.status, 0, stop.stderr);
  assert.match(stop.stdout, /^spak server stop: detached XDP link \d+ \(program id \d+\) from lo$/m);
  assert.match(stop.stdout, /^spak server stop: removed \d+ pin\(s\) and \/sys\/fs\/bpf\/spak\/netns-\d+\/lo$/m);
  assert.equal(xdpAttached('lo'), false);
  assert.match(spak(['server', 'stop', 'lo']).stdout, /nothing of spak's on lo/);
});
