// spak-test-timeout: 300
// spak-test-modes: xdp tc
// Admin commands see the daemon in every context (issue 13, item 4). A container as nspawn makes
// one: a pid namespace of its own (its /proc/1 is the container's init, in the container's network
// namespace), the daemon running without CAP_SYS_PTRACE (as under the unit, whose bounding set lacks
// it), so /proc/1/ns/net is unreadable to it; `spak status`, `spak stats` and `spak server stop` run
// from a root shell in the same container and must find its pins and its lock.
// Hosts: server .1/::1 (the container's network namespace), third host .3/::3 (keyless).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { labEnforcement, netnsInode, run, SPAK_BIN, SPAK_BPFFS_DIR, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { Lab as LabClass } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, assertConnects, KEY, KEY_ID, OTH, skip, SRV, threeHosts } from './common.js';

const PORT = 8080;

describe('one pin directory from every context', { skip }, () => {
  let lab: Lab;
  const procs: LabProcess[] = [];
  /** The container's init (host pid): SIGKILL to it ends the pid namespace and all in it (unshare ignores SIGTERM). */
  let containerInit: number | null = null;
  const targets = [{ addr: ADDR.v4, port: PORT }];

  before(async () => {
    lab = await LabClass.create({ tag: 'scope' });
    await threeHosts(lab);
    await lab.startService(SRV, ADDR.v4, PORT, 'http');
  });

  after(async () => {
    if (containerInit !== null) {
      try {
        process.kill(containerInit, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const p of procs.reverse()) await p.stop(2_000).catch(() => undefined);
    await lab?.cleanupSpak(SRV);
    await lab?.destroy();
  });

  /** The pid (as the host sees it) of the only child of pid, once it exists. */
  async function childOf(pid: number): Promise<number> {
    for (let i = 0; i < 100; i++) {
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((x) => x);
      if (kids.length > 0) return Number(kids[0]);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`pid ${pid} has no child`);
  }

  it('the daemon without CAP_SYS_PTRACE and a root shell in a container agree: status, stats and stop find it', { timeout: 120_000 }, async () => {
    // The container: a pid namespace with /proc of its own, in the server's network namespace.
    // Its init and a second process (pid 2, as in any booted container) are root with every capability.
    const unshare = lab.spawn(SRV, ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc', 'sleep', '600'], {}, 'container init', 'nsenter');
    procs.push(unshare);
    const init = await childOf(unshare.pid!);
    containerInit = init;
    const enter = ['nsenter', `--target=${init}`, '--pid', '--mount'];
    procs.push(lab.spawn(SRV, [...enter, 'sleep', '600'], {}, 'container pid 2', 'nsenter'));
    const noPtrace = ['setpriv', '--inh-caps=-sys_ptrace', '--bounding-set=-sys_ptrace'];

    // The premise: without CAP_SYS_PTRACE /proc/1/ns/net cannot be read; the root shell can.
    const hidden = await lab.execNet(SRV, [...enter, ...noPtrace, 'stat', '-L', '-c', '%i', '/proc/1/ns/net']);
    assert.notEqual(hidden.code, 0, `without CAP_SYS_PTRACE /proc/1/ns/net is unreadable: ${hidden.stdout}`);
    const shown = await lab.execNet(SRV, [...enter, 'stat', '-L', '-c', '%i', '/proc/1/ns/net']);
    assert.equal(shown.code, 0, shown.stderr);

    const file = path.join(lab.dir, 'scope.json');
    const mode = labEnforcement() === 'tc' ? { enforcement: 'tc' } : {};
    writeFileSync(file, JSON.stringify({ server: { interface: 'eth0', keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: ADDR.v4, port: PORT }], ...mode } }), { mode: 0o600 });
    const daemon = lab.spawn(SRV, [...enter, ...noPtrace, process.execPath, SPAK_BIN, 'server', '--config', file], {}, 'spak server in the container', 'nsenter');
    procs.push(daemon);
    const banner = await daemon.waitForLine(/^spak server: .*pinned at/, 30_000);
    const pinDir = /pinned at (\S+)/.exec(banner)![1]!;
    await assertBlocked(lab, OTH, targets, 'keyless, daemon in the container');

    // The root shell of the container (CAP_SYS_PTRACE, /proc/1 readable).
    const shell = (args: string[]) => run([...enter, '--net', process.execPath, SPAK_BIN, ...args], { timeoutMs: 30_000 });
    const status = await shell(['status', '--json', '--sample', '0']);
    assert.equal(status.code, 0, `spak status from the root shell: ${status.stderr}`);
    const st = JSON.parse(status.stdout) as { interfaces: { iface: string; pinDir: string; daemonPid: number | null }[] };
    assert.equal(st.interfaces[0]?.pinDir, pinDir, 'status reads the daemon\'s pin directory');
    assert.notEqual(st.interfaces[0]?.daemonPid, null, 'status sees the daemon holding its lock');
    const stats = await shell(['stats', 'eth0', '--json']);
    assert.equal(stats.code, 0, `spak stats from the root shell: ${stats.stderr}`);

    const stop = await shell(['server', 'stop', 'eth0']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stdout, /stopped the spak server daemon/, stop.stdout);
    assert.match(stop.stdout, /removed \d+ pin\(s\) and /, stop.stdout);
    assert.doesNotMatch(stop.stdout, /nothing of spak's/, stop.stdout);
    await assertConnects(lab, OTH, targets, 'keyless after spak server stop from the root shell');
  });
  it('an upgrade: pins an earlier version left directly under spak/ are read there, then moved by the next start, protection kept throughout', { timeout: 120_000 }, async () => {
    // A veth pair with a name of its own: the legacy place (spak/NAME) is shared by every namespace.
    const name = `spkmig${process.pid % 100000}`;
    await run(['ip', '-n', lab.host(SRV).ns, 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`], { check: true });
    await run(['ip', '-n', lab.host(SRV).ns, 'link', 'set', name, 'up'], { check: true });
    await run(['ip', '-n', lab.host(SRV).ns, 'link', 'set', `${name}p`, 'up'], { check: true });
    const inode = netnsInode(lab.host(SRV).ns)!;
    const current = path.join(SPAK_BPFFS_DIR, `netns-${inode}`, name);
    const legacy = path.join(SPAK_BPFFS_DIR, name);
    const file = path.join(lab.dir, 'upgrade.json');
    const mode = labEnforcement() === 'tc' ? { enforcement: 'tc' } : { xdpMode: 'generic' };
    writeFileSync(file, JSON.stringify({ server: { interface: name, keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: ADDR.v4, port: PORT }], ...mode } }), { mode: 0o600 });
    const start = async () => {
      const p = lab.spawn(SRV, [process.execPath, SPAK_BIN, 'server', '--config', file], {}, 'spak server (upgrade)', 'nsenter');
      procs.push(p);
      return { p, banner: await p.waitForLine(/^spak server: .*pinned at/, 30_000) };
    };
    try {
      const first = await start();
      await first.p.stop(10_000); // protection stays pinned
      // What an earlier version would have left: the same pins directly under spak/.
      renameSync(current, legacy);
      const status = await lab.spak(SRV, ['status', name, '--json', '--sample', '0']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { interfaces: { pinDir: string }[] }).interfaces[0]?.pinDir, legacy, 'status reads the earlier place');
      const second = await start();
      assert.match(second.banner, /adopted on/, 'the pinned program is adopted, not attached anew');
      assert.ok(second.banner.endsWith(`pinned at ${current}`), second.banner);
      assert.equal(existsSync(legacy), false, 'the earlier place is empty');
      assert.match(second.p.output, /moved the pins of an earlier version/, second.p.output);
      await second.p.stop(10_000);
      const stop = await lab.spak(SRV, ['server', 'stop', name]);
      assert.match(stop.stdout, /removed \d+ pin\(s\)/, stop.stdout);
    } finally {
      if (existsSync(legacy)) rmSync(legacy, { recursive: true, force: true });
      await run(['ip', '-n', lab.host(SRV).ns, 'link', 'del', name]).catch(() => undefined);
    }
  });
});
