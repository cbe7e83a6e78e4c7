// spak-test-timeout: 300
// The metrics endpoint on a unix socket (issue 12, low: client names in /metrics were readable by
// any local user over 127.0.0.1). `metrics.listen: "unix:/PATH"` with `mode`: served there (curl
// --unix-socket), the socket file has the mode asked for (0600 by default), and it is removed on stop.
// Host: server .1 only. The hook does not matter here: XDP only.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, run, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import { ADDR, serverConfig, skip, SRV, stopAndClean } from './common.js';

const PORT = 8080;

describe('metrics on a unix socket', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ tag: 'metricsock' });
    await lab.addHost(SRV, 1);
    await lab.startService(SRV, ADDR.v4, PORT, 'http');
  });

  after(async () => {
    await lab?.destroy();
  });

  const cases: [string, (sock: string) => { metrics?: Record<string, unknown>; args: string[] }, number][] = [
    ['metrics.listen unix:/PATH with mode 0660 in the file', (sock) => ({ metrics: { listen: `unix:${sock}`, mode: '0660' }, args: [] }), 0o660],
    ['--metrics unix:/PATH (default mode 0600)', (sock) => ({ args: ['--metrics', `unix:${sock}`] }), 0o600],
  ];

  for (const [what, how, mode] of cases) {
    it(`${what}: served there, mode as configured, removed on stop`, { timeout: 60_000 }, async () => {
      // A directory spak makes itself (step by step), as it would make /run/spak.
      const sock = path.join(lab.dir, `run-${mode.toString(8)}`, 'spak', 'metrics.sock');
      const h = how(sock);
      let server: SpakProcess | null = null;
      try {
        server = await startSpak(lab, SRV, 'server', { config: { ...serverConfig([PORT]), ...(h.metrics ? { metrics: h.metrics } : {}) } }, h.args);
        await server.proc.waitFor(new RegExp(`spak server: metrics on unix:${sock.replace(/[.]/g, '\\.')} \\(mode 0${mode.toString(8)}\\)`), 10_000);
        const st = statSync(sock);
        assert.ok(st.isSocket(), 'a unix socket');
        assert.equal((st.mode & 0o777).toString(8), mode.toString(8), 'the mode asked for');
        const r = await run(['curl', '-sS', '--max-time', '5', '--unix-socket', sock, 'http://localhost/metrics'], { timeoutMs: 15_000 });
        assert.equal(r.code, 0, `curl --unix-socket: ${r.stderr}`);
        assert.match(r.stdout, /^spak_info\{version="[^"]+"\} 1$/m, 'the metrics are served');
        assert.match(r.stdout, /^spak_verdicts_total\{interface="eth0",reason="pass_other"\} \d+$/m, 'the verdict counters too');
        const { output } = await server.stop();
        server = null;
        assert.match(output, /protection stays in force/, 'a normal stop');
        assert.equal(existsSync(sock), false, 'the socket is removed on stop');
      } finally {
        await stopAndClean(lab, [SRV], server);
      }
    });
  }
});
