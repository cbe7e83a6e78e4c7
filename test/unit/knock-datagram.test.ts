// spak-test-timeout: 120
// The knock datagram: layout byte by byte, round trip, every malformed form rejected with its reason,
// and keys (PEM, openssl-made keys, prefilter key agreement). The checks after the open: knock-decide.test.ts.
import { after, test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as W from '../../src/wire/knock.js';
import { decodePlain, encodePlain, knockClient, knockTag, KnockOpener, KnockSealer, KNOCK_REJECTS, type KnockClient, type KnockPlain } from '../../src/knock/datagram.js';
import { clientIdOf, generateX25519, loadPrivateKey, loadPublicKey, prefilterKey, privatePem, publicPem, rawPublic, writeFileMode } from '../../src/knock/keys.js';
import { siphash24 } from '../../src/wire/siphash.js';

const server = generateX25519();
const alice = generateX25519();
const bob = generateX25519();
const clients = new Map<number, KnockClient>([[clientIdOf(alice.publicKey), knockClient(server.privateKey, alice.publicKey, 'alice')]]);
const opener = new KnockOpener(server.privateKey, (id) => clients.get(id));
const sealer = new KnockSealer(alice.privateKey, server.publicKey);
const NOW = 1_800_000_000;
const request = { serverAddr: '198.51.100.1', allowAddr: null, durationS: 600, open: [{ proto: 'tcp' as const, port: 22 }, { proto: 'udp' as const, port: 51820 }], timestamp: NOW };

describe('plaintext', () => {
  test('byte by byte', () => {
    const nonce = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const b = encodePlain({ ...request, nonce, allowAddr: '2001:db8::7' });
    assert.equal(b.length, W.SPAK_KNOCK_PT_LEN);
    assert.equal(b.toString('hex'),
      '01' + '02' + '0000' + '00000258' + '000000006b49d200' + nonce.toString('hex') +
      '00000000000000000000ffffc6336401' + '20010db8000000000000000000000007' +
      '060016' + '11ca6c' + '00'.repeat(18));
    assert.deepEqual(decodePlain(b), { ok: true, plain: { ...request, nonce, allowAddr: '2001:db8::7' } });
  });

  test('refuses what it cannot carry', () => {
    const p: KnockPlain = { ...request, nonce: randomBytes(16) };
    assert.throws(() => encodePlain({ ...p, open: Array.from({ length: 9 }, () => ({ proto: 'tcp' as const, port: 1 })) }), RangeError);
    assert.throws(() => encodePlain({ ...p, open: [{ proto: 'tcp', port: 0 }] }), RangeError);
    assert.throws(() => encodePlain({ ...p, durationS: -1 }), RangeError);
    assert.throws(() => encodePlain({ ...p, nonce: Buffer.alloc(8) }), RangeError);
  });

  test('bad plaintexts are rejected with reasons', () => {
    const good = encodePlain({ ...request, nonce: randomBytes(16) });
    const mut = (f: (b: Buffer) => void): Buffer => { const b = Buffer.from(good); f(b); return b; };
    const reason = (b: Buffer): string | undefined => { const r = decodePlain(b); return r.ok ? undefined : r.reason; };
    assert.equal(reason(mut((b) => { b[0] = 2; })), 'bad_plain_version');
    assert.equal(reason(mut((b) => { b[1] = 9; })), 'bad_plain');
    assert.equal(reason(mut((b) => { b[2] = 1; })), 'bad_plain');
    assert.equal(reason(mut((b) => { b[64] = 1; })), 'bad_plain', 'protocol 1');
    assert.equal(reason(mut((b) => { b.writeUInt16BE(0, 65); })), 'bad_plain', 'port 0');
    assert.equal(reason(mut((b) => { b[70] = 6; })), 'bad_plain', 'entry past the count');
    assert.equal(reason(good.subarray(0, 87)), 'bad_plain');
  });
});

describe('datagram', () => {
  test('round trip; layout at the header\'s offsets', async () => {
    const d = await sealer.seal(request);
    assert.equal(d.length, W.SPAK_KNOCK_LEN);
    assert.equal(d[W.SPAK_KNOCK_OFF_VERSION], W.SPAK_KNOCK_VERSION);
    assert.deepEqual([...d.subarray(1, 4)], [0, 0, 0]);
    assert.equal(d.readUInt32BE(W.SPAK_KNOCK_OFF_CLIENT_ID), createHash('sha256').update(rawPublic(alice.publicKey)).digest().readUInt32BE(0));
    // The tag is SipHash-2-4 over bytes 16..151 under the prefilter key, which both ends derive alike.
    const key = prefilterKey(server.privateKey, alice.publicKey, 'server');
    assert.deepEqual(key, prefilterKey(alice.privateKey, server.publicKey, 'client'));
    assert.deepEqual(d.subarray(8, 16), siphash24(key, d.subarray(16)));
    const r = await opener.open(d);
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.client.name, 'alice');
    assert.equal(r.plain.timestamp, NOW);
    assert.deepEqual(r.plain.open, request.open);
    assert.equal(r.plain.serverAddr, '198.51.100.1');
    assert.equal(r.plain.allowAddr, null);
    assert.equal(r.plain.durationS, 600);
    // Two seals differ (ephemeral key, nonce).
    assert.notDeepEqual(await sealer.seal(request), d);
  });

  test('truncated at every length, oversized', async () => {
    const d = await sealer.seal(request);
    for (let n = 0; n < W.SPAK_KNOCK_LEN; n++) {
      const r = await opener.open(d.subarray(0, n));
      assert.equal(r.ok ? 'ok' : r.reason, 'truncated', `length ${n}`);
    }
    for (const extra of [1, 8, 1000]) {
      const r = await opener.open(Buffer.concat([d, Buffer.alloc(extra)]));
      assert.equal(r.ok ? 'ok' : r.reason, 'oversized');
    }
  });

  test('every byte flipped is rejected, each with the reason its field gives', async () => {
    const d = await sealer.seal(request);
    for (let i = 0; i < W.SPAK_KNOCK_LEN; i++) {
      const bad = Buffer.from(d);
      bad[i] = bad[i]! ^ 0x01;
      const r = await opener.open(bad);
      const want = i === 0 ? 'bad_version' : i < 4 ? 'bad_reserved' : i < 8 ? 'unknown_client' : 'bad_prefilter_tag';
      assert.equal(r.ok ? 'ok' : r.reason, want, `byte ${i}`);
    }
  });

  test('a retagged datagram with a changed enc, ciphertext or header fails HPKE', async () => {
    const d = await sealer.seal(request);
    const key = clients.get(sealer.clientId)!.prefilterKey;
    for (const i of [W.SPAK_KNOCK_OFF_ENC, W.SPAK_KNOCK_OFF_ENC + 31, W.SPAK_KNOCK_OFF_CT, W.SPAK_KNOCK_LEN - 1]) {
      const bad = Buffer.from(d);
      bad[i] = bad[i]! ^ 0x80;
      knockTag(key, bad).copy(bad, W.SPAK_KNOCK_OFF_TAG);
      const r = await opener.open(bad);
      assert.equal(r.ok ? 'ok' : r.reason, 'hpke_open_failed', `byte ${i}`);
    }
  });

  test('unknown client, wrong server key, a client posing as another', async () => {
    const fromBob = await new KnockSealer(bob.privateKey, server.publicKey).seal(request);
    const r1 = await opener.open(fromBob);
    assert.equal(r1.ok ? 'ok' : r1.reason, 'unknown_client');
    // Sealed to another server that shares nothing with ours: its prefilter key differs.
    const other = generateX25519();
    const r2 = await opener.open(await new KnockSealer(alice.privateKey, other.publicKey).seal(request));
    assert.equal(r2.ok ? 'ok' : r2.reason, 'bad_prefilter_tag');
    // Bob knows alice's id and public key but not her private key: the tag and the HPKE open fail.
    const forged = Buffer.from(fromBob);
    forged.writeUInt32BE(sealer.clientId, W.SPAK_KNOCK_OFF_CLIENT_ID);
    const r3 = await opener.open(forged);
    assert.equal(r3.ok ? 'ok' : r3.reason, 'bad_prefilter_tag');
    // Even with alice's prefilter key (leaked), bob's seal does not open as alice.
    knockTag(clients.get(sealer.clientId)!.prefilterKey, forged).copy(forged, W.SPAK_KNOCK_OFF_TAG);
    const r4 = await opener.open(forged);
    assert.equal(r4.ok ? 'ok' : r4.reason, 'hpke_open_failed');
  });

  test('no entries (the default access) round-trips', async () => {
    const r = await opener.open(await sealer.seal({ ...request, open: [] }));
    assert.ok(r.ok);
    assert.deepEqual(r.plain.open, []);
  });

  test('garbage of the right length never opens', async () => {
    for (let i = 0; i < 200; i++) {
      const g = randomBytes(W.SPAK_KNOCK_LEN);
      g[0] = 1; g[1] = 0; g[2] = 0; g[3] = 0;
      if (i % 2) g.writeUInt32BE(sealer.clientId, 4);
      const r = await opener.open(g);
      assert.ok(!r.ok && ['unknown_client', 'bad_prefilter_tag'].includes(r.reason));
    }
  });

  test('reasons are a fixed list', () => {
    assert.equal(new Set(KNOCK_REJECTS).size, KNOCK_REJECTS.length);
  });
});

describe('keys', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'spak-keys-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('PEM that openssl reads; 0600 private files; a public key from a private PEM', () => {
    const k = generateX25519();
    writeFileMode(path.join(dir, 'a.key'), privatePem(k.privateKey), 0o600);
    writeFileMode(path.join(dir, 'a.pub'), publicPem(k.publicKey), 0o644);
    assert.equal(statSync(path.join(dir, 'a.key')).mode & 0o777, 0o600);
    execFileSync('openssl', ['pkey', '-in', path.join(dir, 'a.key'), '-noout']);
    execFileSync('openssl', ['pkey', '-pubin', '-in', path.join(dir, 'a.pub'), '-noout']);
    assert.deepEqual(rawPublic(loadPublicKey(path.join(dir, 'a.pub'))), rawPublic(k.publicKey));
    assert.deepEqual(rawPublic(loadPublicKey(path.join(dir, 'a.key'))), rawPublic(k.publicKey));
    assert.throws(() => writeFileMode(path.join(dir, 'a.key'), 'x', 0o600), /exists/);
  });

  test('keys made by openssl genpkey load and knock', async () => {
    const sk = path.join(dir, 'srv.key');
    const pk = path.join(dir, 'srv.pub');
    const ck = path.join(dir, 'cli.key');
    execFileSync('openssl', ['genpkey', '-algorithm', 'X25519', '-out', sk]);
    execFileSync('openssl', ['pkey', '-in', sk, '-pubout', '-out', pk]);
    execFileSync('openssl', ['genpkey', '-algorithm', 'X25519', '-out', ck]);
    const srv = loadPrivateKey(sk);
    const cli = loadPrivateKey(ck);
    const cliPub = createPublicKey(cli);
    const d = await new KnockSealer(cli, loadPublicKey(pk)).seal(request);
    const o = new KnockOpener(srv, (id) => (id === clientIdOf(cliPub) ? knockClient(srv, cliPub, 'openssl') : undefined));
    const r = await o.open(d);
    assert.ok(r.ok);
    // The client id is reproducible with openssl alone.
    const der = execFileSync('openssl', ['pkey', '-in', ck, '-pubout', '-outform', 'DER']);
    assert.equal(createHash('sha256').update(der.subarray(der.length - 32)).digest().readUInt32BE(0), clientIdOf(cliPub));
  });

  test('other key types and garbage are refused with the file named', () => {
    const ed = path.join(dir, 'ed.key');
    execFileSync('openssl', ['genpkey', '-algorithm', 'ED25519', '-out', ed]);
    assert.throws(() => loadPrivateKey(ed), /ed\.key: an ed25519 key, expected X25519/);
    writeFileMode(path.join(dir, 'junk'), 'hello', 0o600);
    assert.throws(() => loadPrivateKey(path.join(dir, 'junk')), /junk: not a PEM private key/);
    assert.throws(() => loadPublicKey(path.join(dir, 'missing')), /missing: no such file/);
    assert.equal(readFileSync(path.join(dir, 'junk'), 'utf8'), 'hello');
  });
});
