// spak-test-timeout: 30
// Lines for the journal (issue 13, item 5): the sd-daemon priority prefix of each level, one line per
// event, and the JOURNAL_STREAM check that decides it.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createLogger, journalLine, onJournal, withPriority } from '../../src/observe/log.js';

test('withPriority: every line gets the prefix of its level', () => {
  assert.equal(withPriority('fatal', 'spak: no such interface\n'), '<2>spak: no such interface\n');
  assert.equal(withPriority('error', 'a'), '<3>a');
  assert.equal(withPriority('warn', 'a\nb\n'), '<4>a\n<4>b\n');
  assert.equal(withPriority('info', 'counters:\n  x 1\n'), '<6>counters:\n<6>  x 1\n');
  assert.equal(withPriority('debug', 'd\n'), '<7>d\n');
});

test('journalLine: a pino record as one readable line with its priority, no time; plain lines\' twins dropped', () => {
  const rec = (level: number, extra: object = {}) => JSON.stringify({ level, time: 1_700_000_000_000, pid: 1, hostname: 'h', name: 'spak', msg: 'm', ...extra });
  assert.equal(journalLine(rec(60)), '<2>FATAL m\n');
  assert.equal(journalLine(rec(50, { event: 'sweep-failed' })), '<3>ERROR m event=sweep-failed\n');
  assert.equal(journalLine(rec(40)), '<4>WARN  m\n');
  assert.equal(journalLine(rec(30, { event: 'knock' })), '<6>INFO  m event=knock\n');
  assert.equal(journalLine(rec(20)), '<7>DEBUG m\n');
  // The daemon says these in a plain line of its own: once is enough.
  for (const event of ['attach', 'adopt', 'reload', 'reload-rejected']) assert.equal(journalLine(rec(50, { event })), '');
});

test('onJournal: true only for the stream JOURNAL_STREAM names (dev:ino)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'spak-journal-'));
  try {
    const file = path.join(dir, 'stream');
    const fd = openSync(file, 'w');
    try {
      const st = statSync(file);
      assert.equal(onJournal(fd, { JOURNAL_STREAM: `${st.dev}:${st.ino}` }), true);
      assert.equal(onJournal(fd, { JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }), false);
      assert.equal(onJournal(fd, {}), false);
      assert.equal(onJournal(fd, { JOURNAL_STREAM: 'garbage' }), false);
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('createLogger on the journal: each record once, prefixed by its level', () => {
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', journal: true, stderrStream: { write: (s: string) => lines.push(s) } });
  logger.fatal('f');
  logger.error({ event: 'reload-rejected' }, 'twin');
  logger.warn('w');
  logger.info('i');
  logger.debug('d');
  assert.deepEqual(lines, ['<2>FATAL f\n', '<4>WARN  w\n', '<6>INFO  i\n', '<7>DEBUG d\n']);
});
