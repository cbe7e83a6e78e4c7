// spak-test-timeout: 180
// spak-test-exclusive
// Loading server.bpf.o while the process is flooded with signals (issue 12, signal storm): the
// verifier gives up with EAGAIN when the loading thread has a signal pending, so a load on the main
// thread (where Node takes its signals) fails under a storm, retries or not. openAndLoad runs the
// verifier on a worker thread: the same storm does not reach it, and every load succeeds.
// The storm: a shell sending SIGUSR2 (handled, ignored) to this process every millisecond, bounded.
// Needs root and `make bpf`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BpfObject, openAndLoad, openAndLoadSync } from '../../src/bpf/libbpf.js';
import { REPO_ROOT } from '../../src/bpf/object-files.js';

const FILE = path.join(REPO_ROOT, 'build', 'server.bpf.o');
const skip = process.geteuid?.() !== 0 ? 'needs root' : !existsSync(FILE) ? 'run make bpf first' : false;

test('a signal storm: loads on the worker thread succeed (main-thread loads are printed for comparison)', { skip, timeout: 120_000 }, async () => {
  const ignore = () => undefined;
  process.on('SIGUSR2', ignore);
  const storm = spawn('bash', ['-c', `for i in $(seq 1 20000); do kill -USR2 ${process.pid} 2>/dev/null || exit 0; sleep 0.001; done`], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 200)); // the storm is under way
    const main: string[] = [];
    for (let i = 0; i < 3; i++) {
      const obj = BpfObject.open(FILE);
      try {
        obj.load();
        main.push('ok');
      } catch (err) {
        main.push((err as { code?: string }).code ?? String(err));
      } finally {
        obj.close();
      }
    }
    try {
      openAndLoadSync(FILE, () => undefined).close();
      main.push('retried: ok');
    } catch (err) {
      main.push(`retried: ${(err as { code?: string }).code ?? String(err)}`);
    }
    console.log(`main-thread loads during the storm: ${main.join(', ')}`);
    for (let i = 0; i < 5; i++) {
      const obj = await openAndLoad(FILE, () => undefined);
      obj.close();
    }
    assert.equal(storm.exitCode, null, 'the storm lasted through every load');
  } finally {
    storm.kill();
    process.off('SIGUSR2', ignore);
  }
});
