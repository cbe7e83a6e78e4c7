// The rate-limited decision log (src/observe/limiter.ts), the daemon logger's outputs
// (src/observe/log.ts), and the small parsers of the observability options.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { RateLimitedLog } from '../../src/observe/limiter.js';
import { createLogger, prettyLine } from '../../src/observe/log.js';
import { parseListen } from '../../src/observe/metrics.js';
import { parsePromText, sampleValue } from '../support/promtext.js';
import { observeSettings } from '../../src/observe/setup.js';
import { counterRates } from '../../src/observe/status.js';
import { parseSample } from '../../src/cli/status.js';
import { serverSchema } from '../../src/config/schema.js';

function sink() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: object, msg: string) => void lines.push({ level, obj: obj as Record<string, unknown>, msg });
  return { lines, log: { info: at('info'), warn: at('warn'), error: at('error') } };
}

test('limiter: N lines a second, the rest counted by kind and reported once when the second is over', () => {
  const s = sink();
  let now = 10_000;
  const l = new RateLimitedLog(s.log, { perSecond: 3, name: 'knock', now: () => now, autoFlush: false });
  for (let i = 0; i < 7; i++) l.write('warn', { i }, `rejected ${i}`, 'knock_rejected');
  for (let i = 0; i < 2; i++) l.write('info', { i }, `accepted ${i}`, 'knock_accepted');
  assert.deepEqual(s.lines.map((x) => x.msg), ['rejected 0', 'rejected 1', 'rejected 2']);
  assert.equal(l.pending, 6);
  now += 1000; // the next second: its first line brings the summary first
  assert.equal(l.write('info', {}, 'accepted later', 'knock_accepted'), true);
  assert.deepEqual(s.lines.slice(3).map((x) => [x.level, x.msg]), [['warn', 'knock: 6 log line(s) suppressed'], ['info', 'accepted later']]);
  assert.deepEqual(s.lines[3]!.obj, { suppressed: 6, byKind: { knock_rejected: 4, knock_accepted: 2 } });
  assert.equal(l.pending, 0);
  l.flush();
  assert.equal(s.lines.length, 5, 'nothing held back: flush writes nothing');
});

test('limiter: every line is either written or counted in a summary', () => {
  const s = sink();
  let now = 0;
  const l = new RateLimitedLog(s.log, { perSecond: 5, now: () => now, autoFlush: false });
  for (let i = 0; i < 1000; i++) {
    now = i * 7; // 1000 lines over 7 s
    l.write('info', {}, 'x');
  }
  l.flush();
  const shown = s.lines.filter((x) => x.level === 'info').length;
  const suppressed = s.lines.filter((x) => x.level === 'warn').reduce((a, x) => a + (x.obj.suppressed as number), 0);
  assert.equal(shown, 5 * 7);
  assert.equal(shown + suppressed, 1000);
});

test('limiter: the summary comes by itself about a second later when the flood stops', async () => {
  const s = sink();
  const l = new RateLimitedLog(s.log, { perSecond: 1, name: 'n' });
  l.write('info', {}, 'a');
  l.write('info', {}, 'b');
  assert.equal(s.lines.length, 1);
  const until = Date.now() + 5000;
  while (s.lines.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.equal(s.lines[1]?.msg, 'n: 1 log line(s) suppressed');
});

test('log file: JSON lines appended, at the level asked; stderr JSON when not a terminal', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'spak-log-'));
  try {
    const file = path.join(dir, 'sub', 'spak.log');
    const err: string[] = [];
    const log = createLogger({ level: 'info', file, stderrStream: { write: (s: string) => err.push(s), isTTY: false } });
    log.debug('not at info');
    log.info({ client: 'alice', src: '198.51.100.2' }, 'knock accepted');
    log.warn('second');
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]!.msg, 'knock accepted');
    assert.equal(lines[0]!.client, 'alice');
    assert.equal(lines[0]!.level, 30);
    assert.equal(lines[1]!.level, 40);
    assert.equal(err.length, 2);
    assert.equal(JSON.parse(err[0]!).msg, 'knock accepted');
    // A second logger appends.
    createLogger({ level: 'info', file, stderr: 'off' }).error('third');
    assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stderr on a terminal: one readable line per event', () => {
  const err: string[] = [];
  const log = createLogger({ level: 'info', stderrStream: { write: (s: string) => err.push(s), isTTY: true } });
  log.warn({ reason: 'replayed', src: '198.51.100.2', detail: 'two words' }, 'knock rejected');
  assert.equal(err.length, 1);
  assert.match(err[0]!, /^\d\d:\d\d:\d\d\.\d{3} WARN  knock rejected reason=replayed src=198\.51\.100\.2 detail="two words"\n$/);
  assert.equal(prettyLine('not json'), 'not json\n');
});

test('a log file that cannot be opened, or a bad level, is one clear error', () => {
  assert.throws(() => createLogger({ level: 'info', file: '/proc/nope/spak.log', stderr: 'off' }), /^Error: cannot open log file \/proc\/nope\/spak\.log/);
  assert.throws(() => createLogger({ level: 'loud' }), /bad log level "loud"/);
});

test('--metrics ADDR:PORT, [v6]:PORT or off', () => {
  assert.deepEqual(parseListen('127.0.0.1:9862'), { listen: '127.0.0.1', port: 9862 });
  assert.deepEqual(parseListen('[::1]:0'), { listen: '::1', port: 0 });
  assert.equal(parseListen('off'), null);
  for (const bad of ['9862', 'localhost:9862', '::1:9862', '127.0.0.1:99999', '127.0.0.1:']) assert.throws(() => parseListen(bad), /bad metrics/, bad);
});

test('observe settings: command line over file over defaults', () => {
  const cfg = serverSchema.parse({
    interface: 'eth0', keys: [{ id: 1, secret: '00112233445566778899aabbccddeeff' }], protect: [{ address: '198.51.100.1', port: 22 }],
    metrics: { listen: '::1', port: 9100 }, log: { file: '/var/log/spak.log', level: 'warn' },
  });
  const cli = (names: string[]) => (n: string) => names.includes(n);
  assert.deepEqual(observeSettings({ logLevel: 'info' }, cli([])), { log: { level: 'info', file: undefined }, metrics: { listen: '127.0.0.1', port: 9862, explicit: false } });
  assert.deepEqual(observeSettings({ logLevel: 'info' }, cli([]), cfg), { log: { level: 'warn', file: '/var/log/spak.log' }, metrics: { listen: '::1', port: 9100, explicit: true } });
  assert.deepEqual(observeSettings({ logLevel: 'debug', metrics: 'off', logFile: '/tmp/x.log' }, cli(['logLevel', 'metrics']), cfg),
    { log: { level: 'debug', file: '/tmp/x.log' }, metrics: null });
  const off = serverSchema.parse({ ...cfg, metrics: { enabled: false } });
  assert.equal(observeSettings({ logLevel: 'info' }, cli([]), off).metrics, null);
  assert.equal(serverSchema.safeParse({ ...cfg, metrics: { port: 70000 } }).success, false);
  assert.equal(serverSchema.safeParse({ ...cfg, log: { level: 'loud' } }).success, false);
});

test('status: --sample and counter rates', () => {
  assert.equal(parseSample('1s'), 1000);
  assert.equal(parseSample('500ms'), 500);
  assert.equal(parseSample('0'), 0);
  assert.equal(parseSample('2'), 2000);
  assert.throws(() => parseSample('1m'));
  assert.throws(() => parseSample('61s'));
  assert.deepEqual(counterRates({ a: 10, b: 5 }, { a: 30, b: 5, c: 4 }, 2), { a: 10, c: 2 });
  assert.deepEqual(counterRates({ a: 1 }, { a: 2 }, 0), {});
});

test('Prometheus text: samples with labels, escapes, comments skipped', () => {
  const s = parsePromText([
    '# HELP spak_verdicts_total x', '# TYPE spak_verdicts_total counter',
    'spak_verdicts_total{interface="eth0",reason="pass_flow"} 12', 'spak_info{version="0.1.0"} 1',
    'spak_knocks_total{client="a \\"b\\"",result="accepted"} 3', '',
  ].join('\n'));
  assert.equal(sampleValue(s, 'spak_verdicts_total', { reason: 'pass_flow' }), 12);
  assert.equal(sampleValue(s, 'spak_knocks_total', { client: 'a "b"' }), 3);
  assert.equal(sampleValue(s, 'spak_info'), 1);
  assert.equal(sampleValue(s, 'nothing'), undefined);
  assert.throws(() => parsePromText('bad line here x'), /not a Prometheus sample/);
});
