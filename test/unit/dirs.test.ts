// makeDirectory (src/config/dirs.ts): step by step, bounded, one clear line when it cannot; and the
// metrics listen text for a unix socket (src/observe/metrics.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { makeDirectory } from '../../src/config/dirs.js';
import { parseListen } from '../../src/observe/metrics.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'spak-dirs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('makeDirectory: makes the missing levels with the mode, outermost first; again it makes nothing', () => {
  const dir = path.join(tmp, 'a', 'b', 'c');
  assert.deepEqual(makeDirectory(dir, 'state directory'), [path.join(tmp, 'a'), path.join(tmp, 'a', 'b'), dir]);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.deepEqual(makeDirectory(dir, 'state directory'), []);
});

test('makeDirectory: a filesystem that refuses (procfs) is one line, at once', () => {
  const t0 = Date.now();
  assert.throws(() => makeDirectory('/proc/spak-no-such/state', 'state directory'),
    { message: /^cannot create state directory \/proc\/spak-no-such\/state: the filesystem of \/proc does not allow making directories in it/ });
  assert.ok(Date.now() - t0 < 1_000, 'bounded work');
});

test('makeDirectory: a regular file on the way', () => {
  const file = path.join(tmp, 'file');
  writeFileSync(file, 'x');
  assert.throws(() => makeDirectory(path.join(file, 'x', 'y'), 'log directory'),
    { message: new RegExp(`^cannot create log directory ${file}/x/y: ${file} exists and is not a directory$`) });
});

test('makeDirectory: parents false makes only the last level', () => {
  const dir = path.join(tmp, 'p', 'q');
  assert.throws(() => makeDirectory(dir, 'log directory', 0o750, { parents: false }),
    { message: `cannot create log directory ${dir}: ${path.join(tmp, 'p')} does not exist` });
  assert.deepEqual(makeDirectory(path.join(tmp, 'p'), 'log directory', 0o750, { parents: false }), [path.join(tmp, 'p')]);
});

test('metrics listen: unix:/PATH is a socket, other text as before', () => {
  assert.deepEqual(parseListen('unix:/run/spak/metrics.sock'), { listen: 'unix:/run/spak/metrics.sock', port: 0 });
  assert.deepEqual(parseListen('127.0.0.1:9862'), { listen: '127.0.0.1', port: 9862 });
  assert.equal(parseListen('off'), null);
  assert.throws(() => parseListen('unix:relative.sock'), /unix:\/PATH/);
});
