// spak-test-timeout: 300
// Logs on the journal (issue 13, item 5): the daemon runs as systemd runs it, with stdout and stderr
// on one stream and JOURNAL_STREAM naming that stream's dev:ino. Every line then carries the
// sd-daemon priority of its level (a fatal error <2>, a rejected reload <3>, the banner and a good
// reload <6>), and no event is written twice (no JSON twin of a plain line).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SPAK_BIN, type Lab, type LabProcess } from '../../src/lab/lab.js';
import { Lab as LabClass } from '../../src/lab/lab.js';
import { ADDR, skip, SRV, threeHosts } from './common.js';

const PORT = 8080;

describe('lines for the journal', { skip }, () => {
  let lab: Lab;
  let configFile: string;
  const procs: LabProcess[] = [];

  before(async () => {
    lab = await LabClass.create({ tag: 'journal' });
    await threeHosts(lab);
    configFile = path.join(lab.dir, 'spak.json');
  });

  after(async () => {
    for (const p of procs) await p.stop(2_000).catch(() => undefined);
    await lab?.cleanupSpak(SRV);
    await lab?.destroy();
  });

  const writeConfig = (iface: string, keyId: number) => writeFileSync(configFile, JSON.stringify({
    server: { interface: iface, keys: [{ id: keyId, secret: randomBytes(16).toString('hex') }], protect: [{ address: ADDR.v4, port: PORT }] },
  }), { mode: 0o600 });

  /** `spak server --config FILE` as under systemd: stdout on stderr's stream, JOURNAL_STREAM its dev:ino. */
  const journald = (label: string) => {
    const script = `exec 1>&2; JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); export JOURNAL_STREAM; exec "$0" "$1" server --config "$2"`;
    const p = lab.spawn(SRV, ['sh', '-c', script, process.execPath, SPAK_BIN, configFile], {}, label, 'nsenter');
    procs.push(p);
    return p;
  };

  /** Every non-empty line starts with a priority prefix; none is JSON. */
  function allPrefixed(output: string): void {
    for (const line of output.split('\n').filter((l) => l.trim() !== '')) {
      assert.match(line, /^<[0-7]>/, `a line without a priority: ${JSON.stringify(line)}\n${output}`);
      assert.doesNotMatch(line, /^<\d>\{/, `a JSON line on the journal: ${line}`);
    }
  }
  const count = (output: string, re: RegExp) => output.split('\n').filter((l) => re.test(l)).length;

  it('a fatal error: one line, priority 2', async () => {
    writeConfig('nosuch0', 1);
    const p = journald('spak server (bad interface)');
    await p.waitForLine(/spak: /, 30_000).catch(() => undefined);
    await p.stop(10_000);
    allPrefixed(p.output);
    assert.match(p.output, /^<2>spak: .*nosuch0/m, p.output);
    assert.equal(count(p.output, /nosuch0/), 1, `the error once: ${p.output}`);
  });

  it('banner and a good reload <6>, a rejected reload <3>, each once', { timeout: 120_000 }, async () => {
    writeConfig('eth0', 1);
    const p = journald('spak server (journal)');
    await p.waitForLine(/^<6>spak server: .*pinned at/, 30_000);
    writeFileSync(configFile, '{ "server": ', { mode: 0o600 });
    const bad = await lab.spak(SRV, ['server', 'reload', 'eth0'], { timeoutMs: 60_000 });
    assert.notEqual(bad.code, 0, bad.stderr);
    await p.waitForLine(/reload rejected/, 10_000);
    writeConfig('eth0', 2);
    const good = await lab.spak(SRV, ['server', 'reload', 'eth0'], { timeoutMs: 60_000 });
    assert.equal(good.code, 0, good.stderr);
    await p.waitForLine(/reloaded/, 10_000);
    await p.stop(15_000);
    allPrefixed(p.output);
    assert.match(p.output, /^<3>spak server: reload rejected, the old configuration stays in force: /m, p.output);
    assert.match(p.output, /^<6>spak server: reloaded /m, p.output);
    assert.match(p.output, /^<6>spak server: SIGTERM: exiting/m, p.output);
    assert.equal(count(p.output, /reload rejected/), 1, `the rejected reload once: ${p.output}`);
    assert.equal(count(p.output, /reloaded /), 1, `the reload once: ${p.output}`);
    assert.equal(count(p.output, /attached|adopted/), 1, `the attach once: ${p.output}`);
  });
});
