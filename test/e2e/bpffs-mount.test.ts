// spak-test-timeout: 300
// spak-test-modes: xdp tc
// A machine where nothing mounted bpffs (issue 13, item 2). In a private mount namespace
// (`unshare -m`) with /sys/fs/bpf unmounted, as the packaged unit's own namespace would be:
// `spak doctor` says there is no bpffs and that spak server will refuse to mount it there;
// `spak bpffs mount` (the unit's ExecStartPre=+, which runs in the host's namespace) mounts it;
// doctor then says it is mounted, and spak server attaches, pins under it and blocks a keyless
// connect. The unit file itself: test/e2e/systemd.test.ts (`systemd-analyze verify`).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { labEnforcement, Lab, SPAK_BIN, type LabProcess } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, FAMILIES, KEY, KEY_ID, OTH, skip, SRV, threeHosts } from './common.js';

const PORT = 8080;

interface Doctor { results: { check: string; severity: string; detail: string; fix?: string }[] }

describe('no bpffs mounted: spak bpffs mount, doctor and the server agree', { skip }, () => {
  let lab: Lab;
  let proc: LabProcess | null = null;

  before(async () => {
    lab = await Lab.create({ tag: 'bpffs' });
    await threeHosts(lab);
    for (const f of FAMILIES) await lab.startService(SRV, ADDR[f], PORT, 'echo');
  });

  after(async () => {
    await proc?.stop().catch(() => undefined);
    await lab?.cleanupSpak(SRV);
    await lab?.destroy();
  });

  it('in a private mount namespace with nothing mounted: doctor fails bpffs, the server refuses; spak bpffs mount mounts it, doctor is OK, the server runs', { timeout: 180_000 }, async () => {
    const server = {
      interface: 'eth0', xdpMode: 'generic', keys: [{ id: KEY_ID, secret: KEY }],
      protect: FAMILIES.map((f) => ({ address: ADDR[f], port: PORT })),
    };
    const file = lab.writeFile('spak.json', JSON.stringify({ server }));
    const out = (name: string) => path.join(lab.dir, name);
    const spak = `'${process.execPath}' '${SPAK_BIN}'`;
    const mode = labEnforcement() === 'tc' ? '--enforcement tc' : '';
    // One private mount namespace for every step; what the test checks is written to files.
    const script = [
      'set -u',
      'while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf; done',
      `stat -f -c %T /sys/fs/bpf > '${out('fstype-before')}'`,
      `${spak} doctor --json --no-probe > '${out('doctor-before.json')}'`,
      `${spak} server --config '${file}' --metrics off ${mode} > '${out('refused.out')}' 2>&1; echo $? >> '${out('refused.out')}'`,
      `${spak} bpffs mount > '${out('mount.out')}' 2>&1 || { cat '${out('mount.out')}'; exit 1; }`,
      `${spak} bpffs mount > '${out('mount-again.out')}' 2>&1`,
      `stat -f -c %T /sys/fs/bpf > '${out('fstype-after')}'`,
      `${spak} doctor --json --no-probe > '${out('doctor-after.json')}'`,
      `exec ${spak} server --config '${file}' --metrics off ${mode}`,
    ].join('\n');
    proc = lab.spawn(SRV, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script], {}, 'spak in a private mount namespace', 'nsenter');
    const banner = await proc.waitForLine(/^spak server: (XDP|TC ingress)/, 60_000);
    const read = (name: string) => readFileSync(out(name), 'utf8').trim();

    assert.notEqual(read('fstype-before'), 'bpf_fs', 'nothing mounted at first');
    const before = (JSON.parse(read('doctor-before.json')) as Doctor).results.find((r) => r.check === 'bpffs');
    assert.equal(before?.severity, 'fail', JSON.stringify(before));
    assert.match(before!.detail, /spak server will refuse to mount it here/);
    assert.match(before!.fix!, /spak bpffs mount/);
    assert.match(read('refused.out'), /cannot mount bpffs at \/sys\/fs\/bpf: .*private mount namespace[\s\S]*\n1$/, 'the server refuses, as doctor said');

    assert.match(read('mount.out'), /^spak bpffs: mounted bpffs at \/sys\/fs\/bpf, mode 0700 \(in a private mount namespace/);
    assert.equal(read('mount-again.out'), 'spak bpffs: bpffs already mounted at /sys/fs/bpf');
    assert.equal(read('fstype-after'), 'bpf_fs');
    const after_ = (JSON.parse(read('doctor-after.json')) as Doctor).results.find((r) => r.check === 'bpffs');
    assert.equal(after_?.severity, 'ok', JSON.stringify(after_));

    assert.match(banner, /attached to eth0.*pinned at \/sys\/fs\/bpf\/spak\//);
    await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT })), 'keyless, server pinned on the bpffs spak mounted');
    await proc.stop();
    proc = null;
  });
});
