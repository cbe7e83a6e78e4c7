// spak-test-timeout: 300
// spak-test-modes: xdp tc
// A directory spak cannot make (issue 12, low: knock.stateDir on /proc hung the daemon at 100 % CPU
// with XDP attached, in Node's recursive mkdir). Now: one error line, a non-zero exit within a few
// seconds, nothing attached, nothing pinned. Also a state directory below a regular file.
// Host: server .1 only. The bound asserted (10 s to exit) is generous on purpose: the hang never exits.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hasServerHook, Lab, netnsInode, SPAK_BIN, SPAK_BPFFS_DIR, sleep } from '../../src/lab/lab.js';
import { ADDR, serverConfig, skip, spakOk, SRV, stopAndClean } from './common.js';
import { labEnforcement } from '../../src/lab/lab.js';

const PORT = 8080;
const EXIT_WITHIN_MS = 10_000;

describe('a state directory that cannot be made', { skip }, () => {
  let lab: Lab;
  let keysDir: string;
  let clientsDir: string;

  before(async () => {
    lab = await Lab.create({ tag: 'statedir' });
    await lab.addHost(SRV, 1);
    await lab.startService(SRV, ADDR.v4, PORT, 'http');
    keysDir = path.join(lab.dir, 'server-keys');
    clientsDir = path.join(lab.dir, 'clients');
    mkdirSync(clientsDir, { recursive: true });
    await spakOk(lab, SRV, ['keygen', 'server', '--out', keysDir]);
  });

  after(async () => {
    await lab?.destroy();
  });

  const cases: [string, () => string, RegExp][] = [
    ['on /proc', () => '/proc/spak-no-such-dir/state', /^spak: cannot create state directory \/proc\/spak-no-such-dir\/state: .*\/proc/],
    ['below a regular file', () => {
      const file = path.join(lab.dir, 'a-file');
      writeFileSync(file, 'not a directory\n');
      return path.join(file, 'state');
    }, /^spak: cannot create state directory .*a-file\/state: .*a-file exists and is not a directory/],
  ];

  for (const [what, stateDir, line] of cases) {
    it(`knock.stateDir ${what}: one error line, exit within seconds, nothing attached or pinned`, { timeout: 60_000 }, async () => {
      const dir = stateDir();
      const config = {
        server: {
          interface: 'eth0', ...serverConfig([PORT]), protect: [{ address: ADDR.v4, port: PORT }],
          knock: { port: 62201, serverKeyFile: path.join(keysDir, 'server.key'), clientsDir, stateDir: dir },
        },
      };
      const file = lab.writeFile(`statedir-${what.replace(/\W+/g, '-')}.json`, JSON.stringify(config));
      const mode = labEnforcement() === 'tc' ? ['--enforcement', 'tc'] : [];
      const proc = lab.spawn(SRV, [process.execPath, SPAK_BIN, 'server', '--config', file, ...mode], {}, `spak server (${what})`, 'nsenter');
      try {
        const t0 = Date.now();
        await Promise.race([proc.exited, sleep(EXIT_WITHIN_MS)]);
        const ms = Date.now() - t0;
        assert.ok(!proc.running, `the daemon exited within ${EXIT_WITHIN_MS} ms (still running after ${ms} ms): ${proc.output}`);
        assert.notEqual(proc.exitCode, 0, `a non-zero exit: ${proc.output}`);
        const lines = proc.stderr.trim().split('\n').filter((l) => l !== '');
        assert.equal(lines.length, 1, `one error line: ${proc.stderr}`);
        assert.match(lines[0]!, line);
        assert.equal(proc.stdout.trim(), '', `no banner: ${proc.stdout}`);
        assert.equal(await hasServerHook(lab, SRV), false, 'no server program attached to eth0');
        const inode = netnsInode(lab.host(SRV).ns);
        assert.ok(inode !== null);
        assert.equal(existsSync(path.join(SPAK_BPFFS_DIR, `netns-${inode}`, 'eth0')), false, 'no pins left');
        assert.equal(existsSync(dir), false, 'the directory was not made');
      } finally {
        await stopAndClean(lab, [SRV], { stop: () => proc.stop(1_000, 'SIGKILL') });
      }
    });
  }
});
