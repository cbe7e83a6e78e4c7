// spak-test-timeout: 300
// `spak doctor` run for real as root in a lab host (issue 7, section 3): the checks it prints,
// its exit code by severity, the interface probes leaving nothing attached, spak's own program
// recognised, and a broken configuration failing with the field named.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Lab, run, SPAK_BIN, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import { exitCodeFor, type CheckResult } from '../../src/observe/doctor.js';
import { ADDR, KEY, KEY_ID, serverConfig, skip, SRV } from './common.js';

const PORT = 8080;

describe('spak doctor on a lab host', { skip }, () => {
  let lab: Lab;
  let server: SpakProcess | null = null;

  before(async () => {
    lab = await Lab.create({ tag: 'doctor' });
    await lab.addHost(SRV, 1);
    await lab.startService(SRV, ADDR.v4, PORT, 'http');
  });
  after(async () => {
    await server?.stop().catch(() => undefined);
    await lab?.cleanupSpak(SRV);
    await lab?.destroy();
  });

  const configFile = (server: object) => lab.writeFile(`doctor-${Date.now()}-${Math.random().toString(36).slice(2, 8)}.json`, JSON.stringify({ server }));
  const goodConfig = () => configFile({ interface: 'eth0', ...serverConfig([PORT]) });

  async function doctor(args: string[]): Promise<{ code: number; results: CheckResult[]; stderr: string }> {
    const r = await lab.spak(SRV, ['doctor', '--json', ...args]);
    const out = JSON.parse(r.stdout) as { results: CheckResult[]; exitCode: number };
    assert.equal(out.exitCode, r.code, 'the JSON names the exit code');
    return { code: r.code ?? -1, results: out.results, stderr: r.stderr };
  }
  const find = (rs: CheckResult[], check: string) => {
    const hit = rs.find((x) => x.check === check);
    assert.ok(hit, `check ${check} in ${JSON.stringify(rs.map((x) => x.check))}`);
    return hit;
  };
  /** What is on eth0: link line (XDP shows there), qdiscs, and BPF links if bpftool is here. */
  async function hooks(): Promise<string> {
    const ns = lab.host(SRV).ns;
    const link = await run(['ip', '-n', ns, '-d', 'link', 'show', 'eth0'], { check: true });
    const qdisc = await run(['tc', '-n', ns, 'qdisc', 'show', 'dev', 'eth0'], { check: true });
    const links = await lab.execNet(SRV, ['sh', '-c', 'command -v bpftool >/dev/null && bpftool net show dev eth0 || true']);
    return [link.stdout.replace(/\s+\d+ bytes.*$/gm, ''), qdisc.stdout, links.stdout].join('\n---\n');
  }

  it('a good configuration: every check printed, exit code by the worst severity, nothing left attached', async () => {
    const before = await hooks();
    const { code, results } = await doctor(['--config', goodConfig()]);
    assert.equal(code, exitCodeFor(results));
    assert.ok(code === 0 || code === 1, `no failures: ${JSON.stringify(results.filter((x) => x.severity === 'fail'))}`);
    for (const c of ['kernel', 'btf', 'bpffs', 'privileges', 'libbpf', 'object server', 'object client', 'config', 'interface', 'xdp eth0', 'tc eth0', `listen tcp/${PORT}`])
      assert.equal(find(results, c).severity, 'ok', `${c}: ${find(results, c).detail}`);
    assert.match(find(results, 'xdp eth0').detail, /native XDP works/);
    assert.ok(['ok', 'warn'].includes(find(results, 'clock').severity));
    // 198.51.100.1:8080 is listened on and protected; [2001:db8::1]:8080 is protected with no listener: no scope gap.
    assert.equal(results.filter((x) => x.check === 'scope').length, 0);
    assert.equal(await hooks(), before, 'the probes left eth0 as they found it');

    const text = await lab.spak(SRV, ['doctor', '--config', goodConfig()]);
    assert.equal(text.code, code);
    assert.match(text.stdout, /^OK {4}kernel +Linux /m);
    assert.match(text.stdout, /^OK {4}xdp eth0 +native XDP works/m);
    assert.match(text.stdout, new RegExp(`\\d+ OK, \\d+ WARN, 0 FAIL \\(exit ${code}\\)\\n$`));
  });

  it('a scope gap and a port nobody listens on are warnings with the fix', async () => {
    const cfg = configFile({ interface: 'eth0', keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: ADDR.v6, port: PORT }, { address: ADDR.v4, port: 8443 }] });
    const { code, results } = await doctor(['--config', cfg]);
    assert.equal(code, exitCodeFor(results));
    assert.ok(code >= 1);
    assert.match(find(results, 'listen tcp/8443').detail, /nothing listens on tcp\/8443/);
    const scope = results.filter((x) => x.check === 'scope');
    assert.equal(scope.length, 1, JSON.stringify(scope));
    assert.match(scope[0]!.detail, /port 8080: .* listens on 198\.51\.100\.1:8080; 198\.51\.100\.1 is not protected/);
    assert.equal(scope[0]!.severity, 'warn');
  });

  it('with a spak server running: its program is recognised, not probed over', async () => {
    server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT]) }, ['--metrics', 'off']);
    const { results } = await doctor(['--config', goodConfig()]);
    const xdp = find(results, 'xdp eth0');
    assert.equal(xdp.severity, 'ok');
    assert.match(xdp.detail, /spak's program is attached \((native|generic)\)/);
    await server.stop();
    server = null;
    await lab.cleanupSpak(SRV);
  });

  it('a broken configuration: FAIL naming the field, exit 2', async () => {
    const cfg = configFile({ interface: 'eth0', keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: ADDR.v4, port: 70000 }] });
    const { code, results } = await doctor(['--config', cfg]);
    assert.equal(code, 2);
    const c = find(results, 'config');
    assert.equal(c.severity, 'fail');
    assert.match(c.detail, /server\.protect\[0\]\.port/);
    const text = await lab.spak(SRV, ['doctor', '--config', cfg]);
    assert.equal(text.code, 2);
    assert.match(text.stdout, /^FAIL +config +.*server\.protect\[0\]\.port/m);
    assert.match(text.stdout, /fix: correct the field named/);
    // A secret file that cannot be read is a configuration failure too, named by field.
    const missing = configFile({ interface: 'eth0', keys: [{ id: KEY_ID, secretFile: '/nonexistent/key' }], protect: [{ address: ADDR.v4, port: PORT }] });
    const m = await doctor(['--config', missing]);
    assert.equal(m.code, 2);
    assert.match(find(m.results, 'config').detail, /server\.keys\[0\]\.secretFile: cannot read \/nonexistent\/key/);
  });

  it('--no-probe: the interface is checked but nothing is attached to it', async () => {
    const { results } = await doctor(['--config', goodConfig(), '--no-probe']);
    assert.equal(find(results, 'interface').severity, 'ok');
    assert.match(find(results, 'xdp eth0').detail, /not probed: --no-probe/);
    assert.match(find(results, 'tc eth0').detail, /not probed: --no-probe/);
  });

  it('an interface that does not exist: FAIL', async () => {
    const { code, results } = await doctor(['--interface', 'nosuch9']);
    assert.equal(code, 2);
    assert.equal(find(results, 'interface').severity, 'fail');
  });
  it('without CAP_BPF and CAP_PERFMON (a container that dropped them): the objects fail with advice on capabilities and seccomp, not make build', async () => {
    const drop = '-bpf,-perfmon,-sys_admin';
    const r = await lab.execNet(SRV, ['setpriv', `--inh-caps=${drop}`, `--bounding-set=${drop}`, process.execPath, SPAK_BIN, 'doctor', '--json'], { timeoutMs: 60_000 });
    const out = JSON.parse(r.stdout) as { results: CheckResult[] };
    const obj = find(out.results, 'object server');
    assert.equal(obj.severity, 'fail', JSON.stringify(obj));
    assert.match(obj.detail, /EPERM|EACCES|not permitted/i, JSON.stringify(obj));
    assert.doesNotMatch(obj.fix ?? '', /make build/, JSON.stringify(obj));
    assert.match(obj.fix ?? '', /CAP_BPF.*CAP_PERFMON/, JSON.stringify(obj));
    assert.match(obj.fix ?? '', /--system-call-filter=bpf/, JSON.stringify(obj));
  });
});
