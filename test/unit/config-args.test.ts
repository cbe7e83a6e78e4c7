// Command-line values go through the configuration schema (src/config/args.ts): the ranges and
// defaults are the schema's, the errors name the argument as written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configFromArgs, numberArg, schemaDefault, wholeNumber, type ArgText } from '../../src/config/args.js';

const args = (pairs: [string, string, string][]) => new Map<string, ArgText>(pairs.map(([p, what, text]) => [p, { what, text }]));

function server(port: string, keyId: string, address = '198.51.100.1') {
  return {
    json: { server: { interface: 'eth0', keys: [{ id: wholeNumber(keyId) }], protect: [{ address, port: wholeNumber(port) }] } },
    args: args([['server.protect.0.port', 'port', port], ['server.keys.0.id', 'key_id', keyId], ['server.protect.0.address', 'address', address]]),
  };
}

test('a valid positional form gets the schema defaults', () => {
  const { json, args: a } = server('22', '1');
  const cfg = configFromArgs(json, a).server!;
  assert.equal(cfg.stepSeconds, 30);
  assert.equal(cfg.replayCapacity, 131072);
  assert.equal(cfg.protect[0]!.protocol, 'tcp');
  assert.equal(cfg.seedExisting, true);
});

test('bad values are named as written, with the schema range', () => {
  const cases: [ReturnType<typeof server>, RegExp][] = [
    [server('0', '1'), /: bad port 0: must be from 1 to 65535$/],
    [server('ssh', '1'), /: bad port "ssh": expected a whole number from 1 to 65535$/],
    [server('22', '65536'), /: bad key_id 65536: must be from 0 to 65535$/],
    [server('22', '1', '198.51.100.300'), /: bad address "198.51.100.300": not an IPv4 or IPv6 address/],
  ];
  for (const [{ json, args: a }, re] of cases) assert.throws(() => configFromArgs(json, a), re);
});

test('a flag over the file is checked by its field', () => {
  assert.equal(numberArg('server', 'replayCapacity', { what: 'replay capacity', text: '4096' }), 4096);
  assert.throws(() => numberArg('server', 'replayCapacity', { what: 'replay capacity', text: '10' }), /: bad replay capacity 10: must be from 1024 to 16777216$/);
  assert.throws(() => numberArg('server', 'flowIdleSeconds', { what: 'flow idle seconds', text: '0' }), /: bad flow idle seconds 0: must be at least 1$/);
  assert.throws(() => numberArg('client', 'stepSeconds', { what: 'step seconds', text: '1.5' }), /: bad step seconds "1.5": expected a whole number from 1 to 3600$/);
});

test('--help shows the schema defaults', () => {
  assert.equal(schemaDefault('server', 'stepSeconds'), '30');
  assert.equal(schemaDefault('server', 'xdpMode'), 'native');
  assert.equal(schemaDefault('client', 'stepSeconds'), '30');
});
