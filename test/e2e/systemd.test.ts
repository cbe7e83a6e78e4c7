// spak-test-timeout: 600
// The systemd units (issue 7 §2): `systemd-analyze verify` passes on both with no warning, and the
// hardening does not break the daemons. This machine has no systemd as init, so the units' own
// CapabilityBoundingSet= and NoNewPrivileges= (parsed from the files, so they cannot drift) are
// applied with setpriv, the units' Environment= is passed, and the real `spak server` and
// `spak client` run in a lab: the server attaches, a keyless connect is blocked, a tagged client
// connects, and after a restart the server adopts its pins under the same bounds. Under strace, the
// daemon makes none of the system calls or socket families the units' filters would refuse.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, REPO_ROOT, SPAK_BIN, type LabProcess } from '../../src/lab/lab.js';
import { assertBlocked, KEY, KEY_ID, OTH, skip, SRV, CLI, threeHosts, ADDR } from './common.js';

const UNITS = path.join(REPO_ROOT, 'packaging', 'systemd');
const PORT = 8080;

/** A section of a unit ([Service] unless told): key -> every value given (comments and blank lines dropped). */
function serviceSection(file: string, want = 'Service'): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(\w+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || section !== want) continue;
    out.set(kv[1]!, [...(out.get(kv[1]!) ?? []), kv[2]!]);
  }
  return out;
}

function one(unit: Map<string, string[]>, key: string): string {
  const v = unit.get(key);
  assert.ok(v && v.length === 1, `${key}= once in the unit`);
  return v[0]!;
}

/** CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN -> ['bpf', 'net_admin'] (setpriv's names). */
function boundingCaps(unit: Map<string, string[]>): string[] {
  return one(unit, 'CapabilityBoundingSet').split(/\s+/).map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

/** Environment=K=V lines as an object. */
function unitEnv(unit: Map<string, string[]>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of unit.get('Environment') ?? [])
    for (const pair of v.split(/\s+/)) {
      const at = pair.indexOf('=');
      env[pair.slice(0, at)] = pair.slice(at + 1);
    }
  return env;
}

/** The unit's bounds, applied as systemd would to a root service: bounding set and no_new_privs. */
function setprivArgv(unit: Map<string, string[]>): string[] {
  assert.equal(one(unit, 'NoNewPrivileges'), 'yes');
  return ['setpriv', '--no-new-privs', '--inh-caps=-all', `--bounding-set=-all,${boundingCaps(unit).map((c) => `+${c}`).join(',')}`];
}

/** Bit mask of capabilities by name, numbered as setpriv numbers them (its --list-caps order). */
function capMask(names: string[]): bigint {
  const all = spawnSync('setpriv', ['--list-caps'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  return names.reduce((m, n) => {
    const bit = all.indexOf(n);
    assert.ok(bit >= 0, `setpriv knows cap ${n}`);
    return m | (1n << BigInt(bit));
  }, 0n);
}

function procStatus(pid: number, field: string): string {
  const m = new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `${field} in /proc/${pid}/status`);
  return m[1]!;
}

/** The one child of a process (strace's tracee). */
function childPid(pid: number): number {
  const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  assert.equal(kids.length, 1, `one child of ${pid}: ${kids.join(' ')}`);
  return kids[0]!;
}

/** The system calls in the groups a SystemCallFilter=~... line (and ProtectClock=) denies. */
function deniedSyscalls(unit: Map<string, string[]>): Set<string> {
  const groups = (unit.get('SystemCallFilter') ?? []).flatMap((v) => {
    assert.ok(v.startsWith('~'), 'a deny list');
    return v.slice(1).trim().split(/\s+/);
  });
  if (unit.get('ProtectClock')?.[0] === 'yes') groups.push('@clock');
  const out = new Set<string>();
  for (const g of groups) {
    const r = spawnSync('systemd-analyze', ['syscall-filter', g], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    for (const line of r.stdout.split('\n')) {
      const s = line.trim();
      if (s && !s.startsWith('#') && !s.startsWith('@')) out.add(s);
    }
  }
  assert.ok(out.has('ptrace') && out.has('reboot'), 'the groups were read');
  return out;
}

describe('systemd units', () => {
  const server = serviceSection(path.join(UNITS, 'spak-server.service'));
  const client = serviceSection(path.join(UNITS, 'spak-client.service'));

  test('systemd-analyze verify: both units pass with no warning', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-units-'));
    try {
      // verify wants ExecStart's (and ExecReload's) binary to exist: point the bare `spak` at this checkout's bin/spak.
      const files = ['spak-server.service', 'spak-client.service'].map((name) => {
        const text = readFileSync(path.join(UNITS, name), 'utf8');
        assert.match(text, /^ExecStart=spak (server|client)$/m, `${name}: the installed spak, default config`);
        const file = path.join(dir, name);
        writeFileSync(file, text.replace(/^(ExecStart|ExecReload)=spak /gm, `$1=${SPAK_BIN} `).replace(/^ExecStartPre=\+spak /m, `ExecStartPre=+${SPAK_BIN} `));
        return file;
      });
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('hardening present; what would break the daemon absent', () => {
    for (const unit of [server, client]) {
      for (const [k, v] of Object.entries({
        NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', ProtectKernelModules: 'yes',
        ProtectControlGroups: 'yes', SystemCallArchitectures: 'native', LockPersonality: 'yes', RestrictRealtime: 'yes',
        RestrictSUIDSGID: 'yes', RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6 AF_NETLINK', Restart: 'on-failure',
      }))
        assert.equal(one(unit, k), v, k);
      assert.equal(unit.has('MemoryDenyWriteExecute'), false, "Node's JIT needs W^X exceptions");
      assert.equal(unitEnv(unit).SPAK_CONFIG, '/etc/spak/spak.json');
    }
    assert.equal(server.has('ExecStop'), false, 'protection must outlive stops and restarts');
    assert.equal(one(server, 'Type'), 'notify', '`systemctl start` waits for READY=1 and fails when the daemon exits first');
    assert.equal(one(server, 'ReadWritePaths'), '/sys/fs/bpf');
    assert.equal(one(server, 'StateDirectory'), 'spak');
    assert.equal(one(server, 'RuntimeDirectory'), 'spak');
    assert.ok(!boundingCaps(client).includes('sys_admin'), 'the client needs no CAP_SYS_ADMIN');
  });

  test('reload asks the daemon on its control socket (spak server reload): no /bin/kill, no signal, no CAP_KILL', () => {
    // Minimal systems have no /bin/kill (203/EXEC), and after the drop a root kill lacks CAP_KILL.
    assert.equal(one(server, 'ExecReload'), 'spak server reload');
  });

  test('the server drops to a user of its own, spak: the unit creates it with the line of packaging/sysusers.d/spak.conf', () => {
    const pres = server.get('ExecStartPre') ?? [];
    const pre = pres.map((p) => /^\+systemd-sysusers --inline '([^']+)'$/.exec(p)).find((m) => m !== null);
    assert.ok(pre, `ExecStartPre=: ${pres.join(' | ')}`);
    const conf = readFileSync(path.join(REPO_ROOT, 'packaging', 'sysusers.d', 'spak.conf'), 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith('#'));
    assert.deepEqual(conf, [pre[1]], 'the unit and the sysusers.d file make the same user');
    // What the line makes, in a scratch root (this machine's users stay as they are).
    const root = mkdtempSync(path.join(os.tmpdir(), 'spak-sysusers-'));
    try {
      mkdirSync(path.join(root, 'etc'));
      const r = spawnSync('systemd-sysusers', [`--root=${root}`, '--inline', pre[1]!], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(readFileSync(path.join(root, 'etc', 'passwd'), 'utf8'), /^spak:x:\d+:\d+:[^:\n]*:\/var\/lib\/spak:\/usr\/sbin\/nologin$/m);
      assert.match(readFileSync(path.join(root, 'etc', 'group'), 'utf8'), /^spak:x:\d+:/m);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    // The unit starts as root (attaching needs it) and the daemon drops itself; pins and state keep one owner.
    for (const k of ['User', 'DynamicUser']) assert.equal(server.has(k), false, `${k}=`);
    const example = JSON.parse(readFileSync(path.join(REPO_ROOT, 'examples', 'spak.json'), 'utf8')) as { server: { user?: string } };
    assert.equal(example.server.user, 'spak', 'the example configuration (copied to /etc/spak/spak.json) names it');
  });

  test('no bpffs mounted: the unit mounts it with `spak bpffs mount` outside its sandbox, before its own namespace is set up', () => {
    // '+': full privileges and no sandbox, so in the host's mount namespace (where the server would refuse
    // to mount it) and before ReadWritePaths=/sys/fs/bpf is applied to ExecStart= (it needs the path).
    assert.ok((server.get('ExecStartPre') ?? []).includes('+spak bpffs mount'), `ExecStartPre=: ${server.get('ExecStartPre')?.join(' | ')}`);
    assert.equal(one(server, 'ReadWritePaths'), '/sys/fs/bpf');
  });

  test('a start that keeps failing ends in the failed state instead of restarting forever', () => {
    const unitSec = serviceSection(path.join(UNITS, 'spak-server.service'), 'Unit');
    const seconds = (v: string) => {
      const m = /^(\d+)(s|min)?$/.exec(v);
      assert.ok(m, `a time span: ${v}`);
      return Number(m[1]) * (m[2] === 'min' ? 60 : 1);
    };
    const interval = seconds(one(unitSec, 'StartLimitIntervalSec'));
    const burst = Number(one(unitSec, 'StartLimitBurst'));
    const restartSec = seconds(one(server, 'RestartSec'));
    // systemd counts starts within the interval: with RestartSec x burst beyond it the limit is never hit.
    assert.ok(burst >= 2 && burst * restartSec < interval, `StartLimitBurst=${burst} x RestartSec=${restartSec}s within StartLimitIntervalSec=${interval}s`);
  });

  test('the bounding set holds what the privilege drop needs (it removes them again)', () => {
    const caps = boundingCaps(server);
    for (const c of ['chown', 'dac_override', 'setuid', 'setgid', 'setpcap']) assert.ok(caps.includes(c), `CAP_${c.toUpperCase()} in CapabilityBoundingSet=`);
  });

  describe('the daemons under the units\' bounds, in a lab', { skip }, () => {
    let lab: Lab;
    let tmp: string;
    const running: LabProcess[] = [];

    before(async () => {
      tmp = mkdtempSync(path.join(os.tmpdir(), 'spak-systemd-'));
      lab = await Lab.create({ tag: 'systemd' });
      await threeHosts(lab);
      await lab.startService(SRV, ADDR.v4, PORT, 'echo');
      await lab.startService(SRV, ADDR.v6, PORT, 'echo');
    });

    after(async () => {
      for (const p of running) await p.stop().catch(() => undefined);
      await lab?.cleanupSpak(SRV);
      await lab?.cleanupSpak(CLI);
      await lab?.destroy();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    /** Starts spak as the unit would: its Environment= (SPAK_CONFIG pointed at our file), its bounds. */
    async function startUnder(host: string, unit: Map<string, string[]>, role: 'server' | 'client', config: unknown, env: Record<string, string>, extra: string[] = [], wrap: string[] = []) {
      const file = lab.writeFile(`${role}-${Date.now()}.json`, JSON.stringify(config));
      const argv = [...wrap, ...setprivArgv(unit), process.execPath, SPAK_BIN, ...one(unit, 'ExecStart').split(/\s+/).slice(1), ...extra];
      const proc = lab.spawn(host, argv, { ...unitEnv(unit), SPAK_CONFIG: file, ...env }, `spak ${role} under the unit's bounds`, 'nsenter');
      running.push(proc);
      const banner = await proc.waitForLine(role === 'server' ? /spak server: XDP/ : /spak client: TC egress/, 30_000);
      return { proc, banner };
    }

    const serverCfg = {
      server: {
        interface: 'eth0', xdpMode: 'generic', keys: [{ id: KEY_ID, secretFile: '' }],
        protect: [{ address: ADDR.v4, port: PORT }, { address: ADDR.v6, port: PORT }],
      },
    };
    const clientCfg = {
      client: { interface: 'eth0', destinations: [ADDR.v4, ADDR.v6].map((address) => ({ address, port: PORT, keyId: KEY_ID, secretFile: '' })) },
    };
    const targets = [{ addr: ADDR.v4, port: PORT }, { addr: ADDR.v6, port: PORT }];

    test('attaches, blocks a keyless connect, lets a tagged client in; restarts and adopts under the same bounds', { timeout: 240_000 }, async () => {
      const keyFile = path.join(tmp, 'key.hex');
      writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
      serverCfg.server.keys[0]!.secretFile = keyFile;
      for (const d of clientCfg.client.destinations) d.secretFile = keyFile;
      const trace = path.join(tmp, 'server.strace');

      // The environment wins over the file: a step of 10 s comes from SPAK_SERVER_STEP_SECONDS.
      const first = await startUnder(SRV, server, 'server', serverCfg, { SPAK_SERVER_STEP_SECONDS: '10' }, [],
        ['strace', '-f', '-qq', '-o', trace]);
      assert.match(first.banner, /XDP \(generic\) attached to eth0/);
      assert.match(first.banner, /step 10s/);
      await assertBlocked(lab, OTH, targets, 'keyless, server under the unit\'s bounds');

      const cli = await startUnder(CLI, client, 'client', clientCfg, { SPAK_CLIENT_STEP_SECONDS: '10' });
      assert.match(cli.banner, /TC egress attached to eth0/);
      const pid = cli.proc.pid!;
      assert.equal(procStatus(pid, 'NoNewPrivs'), '1');
      assert.equal(BigInt(`0x${procStatus(pid, 'CapBnd')}`), capMask(boundingCaps(client)), 'client CapBnd is the unit\'s');
      for (const t of targets) assert.deepEqual(await lab.tcpConnect(CLI, t.addr, t.port, 5_000), { ok: true }, `tagged connect to ${t.addr}`);

      // A restart, as Restart=on-failure or `systemctl restart` does: the new daemon adopts the pins.
      // A flag wins over the environment: --step-seconds 10 given, SPAK_SERVER_STEP_SECONDS=20 ignored.
      // strace is the spawned process: the SIGTERM goes to the daemon under it, as systemd sends it.
      const daemon = childPid(first.proc.pid!);
      assert.match(readFileSync(`/proc/${daemon}/cmdline`, 'utf8'), /spak\0server/);
      assert.equal(procStatus(daemon, 'NoNewPrivs'), '1');
      process.kill(daemon, 'SIGTERM');
      await first.proc.stop(10_000);
      assert.match(first.proc.output, /SIGTERM: exiting; protection stays in force/);
      const second = await startUnder(SRV, server, 'server', serverCfg, { SPAK_SERVER_STEP_SECONDS: '20' }, ['--step-seconds', '10']);
      assert.match(second.banner, /adopted on eth0/);
      assert.match(second.banner, /step 10s/);
      const spid = second.proc.pid!;
      assert.equal(procStatus(spid, 'NoNewPrivs'), '1');
      assert.equal(BigInt(`0x${procStatus(spid, 'CapBnd')}`), capMask(boundingCaps(server)), 'server CapBnd is the unit\'s');
      await assertBlocked(lab, OTH, targets, 'keyless, after the restart');
      for (const t of targets) assert.deepEqual(await lab.tcpConnect(CLI, t.addr, t.port, 5_000), { ok: true }, `tagged connect to ${t.addr} after the restart`);
      await second.proc.stop();
      await cli.proc.stop();

      // What the first daemon did under strace: nothing the units' filters would refuse.
      const calls = readFileSync(trace, 'utf8');
      const used = new Set([...calls.matchAll(/^\d+\s+(\w+)\(/gm)].map((m) => m[1]!));
      assert.ok(used.has('bpf'), 'the trace has the daemon in it');
      const denied = [...deniedSyscalls(server)].filter((s) => used.has(s));
      assert.deepEqual(denied, [], 'system calls the unit denies');
      const families = new Set([...calls.matchAll(/\bsocket\((AF_\w+)/g)].map((m) => m[1]!));
      const allowed = one(server, 'RestrictAddressFamilies').split(/\s+/);
      assert.deepEqual([...families].filter((f) => !allowed.includes(f)), [], 'socket families the unit refuses');
      assert.doesNotMatch(calls, /^\d+\s+(unshare|setns)\(/m, 'RestrictNamespaces=yes');
    });

    test('Type=notify: READY=1 after the banner and the drop (as the user), STOPPING=1 on SIGTERM; a refused start sends none', { timeout: 180_000 }, async () => {
      await lab.cleanupSpak(SRV);
      // A notify socket the dropped user can reach, as /run/systemd/notify is.
      const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-notify-'));
      chmodSync(dir, 0o711);
      const sock = path.join(dir, 'notify');
      const listen = 'import os,socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1]);os.chmod(sys.argv[1],0o777)\nprint("bound",flush=True)\n' +
        'while True:\n  print("got "+s.recv(4096).decode().replace("\\n"," | "),flush=True)\n';
      const listener = lab.spawn(SRV, ['python3', '-c', listen, sock], {}, 'notify socket', 'nsenter');
      running.push(listener);
      try {
        await listener.waitForLine(/^bound$/, 10_000);
        const keyFile = path.join(tmp, 'key-notify.hex');
        writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
        const base = { ...serverCfg.server, keys: [{ id: KEY_ID, secretFile: keyFile }] };
        // Refused before attach (no such user): no READY=1.
        const bad = lab.spawn(SRV, [...setprivArgv(server), process.execPath, SPAK_BIN, 'server', '--metrics', 'off'],
          { ...unitEnv(server), SPAK_CONFIG: lab.writeFile('bad.json', JSON.stringify({ server: { ...base, user: 'spak-no-such-user' } })), NOTIFY_SOCKET: sock }, 'refused start', 'nsenter');
        await bad.exited;
        assert.notEqual(bad.exitCode, 0, bad.output);
        const ok = await startUnder(SRV, server, 'server', { server: { ...base, user: 'nobody' } }, { NOTIFY_SOCKET: sock }, ['--metrics', 'off']);
        await ok.proc.waitForLine(/^spak server: running as nobody/, 10_000);
        const ready = await listener.waitForLine(/^got READY=1/, 10_000);
        assert.match(ready, /STATUS=protecting eth0/);
        assert.equal(listener.stdout.split('\n').filter((l) => l.startsWith('got ')).length, 1, `only the good start's READY=1: ${listener.stdout}`);
        assert.equal(procStatus(ok.proc.pid!, 'Uid').split(/\s+/)[0], '65534', 'sent after the drop');
        await ok.proc.stop(10_000);
        await listener.waitForLine(/^got STOPPING=1/, 10_000);
      } finally {
        await listener.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test('with "user" set: drops to it under the unit\'s bounds, and the next start (as root) adopts the pins the user owns', { timeout: 180_000 }, async () => {
      await lab.cleanupSpak(SRV);
      const keyFile = path.join(tmp, 'key-user.hex');
      writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
      const cfg = { server: { ...serverCfg.server, user: 'nobody', keys: [{ id: KEY_ID, secretFile: keyFile }] } };
      const first = await startUnder(SRV, server, 'server', cfg, {}, ['--metrics', 'off']);
      assert.match(first.banner, /XDP \(generic\) attached to eth0/);
      await first.proc.waitForLine(/^spak server: running as nobody/, 10_000);
      await assertBlocked(lab, OTH, targets, 'keyless, dropped to nobody under the unit\'s bounds');
      await first.proc.stop(10_000);
      assert.match(first.proc.output, /SIGTERM: exiting; protection stays in force/);
      const second = await startUnder(SRV, server, 'server', cfg, {}, ['--metrics', 'off']);
      assert.match(second.banner, /adopted on eth0/);
      await second.proc.waitForLine(/^spak server: running as nobody/, 10_000);
      await assertBlocked(lab, OTH, targets, 'keyless, after the restart under the unit\'s bounds');
      await second.proc.stop(10_000);
    });
  });
});
