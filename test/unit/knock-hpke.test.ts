// spak-test-timeout: 120
// HPKE for knocks against RFC 9180 A.2.3 (mode_auth, X25519, HKDF-SHA256, ChaCha20-Poly1305), and the
// node:crypto primitives against @hpke/core's stock ones.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { A23 } from './fixtures/rfc9180-a23.js';
import { NodeHkdfSha256, hpkePrivate, hpkePublic, knockSuite, stockSuite } from '../../src/knock/hpke.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const toHex = (b: ArrayBuffer | Uint8Array): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');
const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'ascii'));
const aad = (seq: number): Buffer => Buffer.from(`Count-${seq}`, 'ascii');

describe('RFC 9180 A.2.3', () => {
  test('DeriveKeyPair(ikm) gives the vectors\' keys', async () => {
    const suite = knockSuite();
    for (const [ikm, sk, pk] of [[A23.ikmE, A23.skEm, A23.pkEm], [A23.ikmR, A23.skRm, A23.pkRm], [A23.ikmS, A23.skSm, A23.pkSm]] as const) {
      const kp = await suite.kem.deriveKeyPair(hex(ikm));
      assert.equal(toHex(await suite.kem.serializePrivateKey(kp.privateKey)), sk);
      assert.equal(toHex(await suite.kem.serializePublicKey(kp.publicKey)), pk);
    }
  });

  test('AuthDecap gives the shared secret', async () => {
    const suite = knockSuite();
    const ss = await suite.kem.decap({
      recipientKey: { privateKey: hpkePrivate(hex(A23.skRm)), publicKey: hpkePublic(hex(A23.pkRm)) },
      enc: hex(A23.enc), senderPublicKey: hpkePublic(hex(A23.pkSm)),
    });
    assert.equal(toHex(ss), A23.sharedSecret);
  });

  test('key schedule: context, secret, key, base_nonce, exporter_secret', async () => {
    const kdf = new NodeHkdfSha256();
    const suiteId = Buffer.concat([Buffer.from('HPKE'), Buffer.from([0, A23.kemId, 0, A23.kdfId, 0, A23.aeadId])]);
    kdf.init(new Uint8Array(suiteId));
    const empty = new Uint8Array(0);
    const pskIdHash = await kdf.labeledExtract(empty, ascii('psk_id_hash'), empty);
    const infoHash = await kdf.labeledExtract(empty, ascii('info_hash'), new Uint8Array(hex(A23.info)));
    const ctx = Buffer.concat([Buffer.from([A23.mode]), Buffer.from(pskIdHash), Buffer.from(infoHash)]);
    assert.equal(ctx.toString('hex'), A23.keyScheduleContext);
    const secret = await kdf.labeledExtract(hex(A23.sharedSecret), ascii('secret'), empty);
    assert.equal(toHex(secret), A23.secret);
    const c = new Uint8Array(ctx);
    assert.equal(toHex(await kdf.labeledExpand(secret, ascii('key'), c, 32)), A23.key);
    assert.equal(toHex(await kdf.labeledExpand(secret, ascii('base_nonce'), c, 12)), A23.baseNonce);
    assert.equal(toHex(await kdf.labeledExpand(secret, ascii('exp'), c, 32)), A23.exporterSecret);
  });

  for (const variant of ['node', 'stock'] as const) {
    test(`${variant} suite: sealing with the vectors' ephemeral key gives enc and every ciphertext; opening reverses it; exports`, async () => {
      const suite = variant === 'node' ? knockSuite() : await stockSuite();
      const e = await suite.kem.deriveKeyPair(hex(A23.ikmE));
      const r = await suite.kem.deriveKeyPair(hex(A23.ikmR));
      const s = await suite.kem.deriveKeyPair(hex(A23.ikmS));
      const info = hex(A23.info);
      const sender = await suite.createSenderContext({ recipientPublicKey: r.publicKey, senderKey: s, info, ekm: e });
      assert.equal(toHex(sender.enc), A23.enc);
      const recipient = await suite.createRecipientContext({ recipientKey: r, enc: hex(A23.enc), senderPublicKey: s.publicKey, info });
      const want = new Map<number, string>(A23.encryptions.map((x) => [x.seq, x.ct]));
      for (let seq = 0; seq <= 256; seq++) {
        const ct = await sender.seal(hex(A23.plaintext), aad(seq));
        if (want.has(seq)) assert.equal(toHex(ct), want.get(seq), `ciphertext ${seq}`);
        assert.equal(toHex(await recipient.open(ct, aad(seq))), A23.plaintext, `open ${seq}`);
      }
      for (const x of A23.exports) {
        assert.equal(toHex(await sender.export(hex(x.context), x.length)), x.value, `export ${x.context}`);
        assert.equal(toHex(await recipient.export(hex(x.context), x.length)), x.value);
      }
    });
  }

  test('a wrong sender key, a changed enc, ciphertext or aad fail to open', async () => {
    const suite = knockSuite();
    const r = await suite.kem.deriveKeyPair(hex(A23.ikmR));
    const s = await suite.kem.deriveKeyPair(hex(A23.ikmS));
    const other = await suite.kem.generateKeyPair();
    const ct = hex(A23.encryptions[0]!.ct);
    const open = async (o: { enc?: Buffer; sender?: CryptoKey; ct?: Buffer; aad?: Buffer }): Promise<void> => {
      const ctx = await suite.createRecipientContext({ recipientKey: r, enc: o.enc ?? hex(A23.enc), senderPublicKey: o.sender ?? s.publicKey, info: hex(A23.info) });
      await ctx.open(o.ct ?? ct, o.aad ?? aad(0));
    };
    await open({}); // the unchanged message opens
    await assert.rejects(open({ sender: other.publicKey }));
    const enc = hex(A23.enc); enc[5] = enc[5]! ^ 1;
    await assert.rejects(open({ enc }));
    const bad = Buffer.from(ct); bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    await assert.rejects(open({ ct: bad }));
    await assert.rejects(open({ aad: aad(1) }));
  });
});

test('node and stock suites interoperate both ways on fresh keys', async () => {
  const node = knockSuite();
  const stock = await stockSuite();
  const r = await node.kem.generateKeyPair();
  const s = await node.kem.generateKeyPair();
  const raw = async (k: CryptoKey, priv: boolean): Promise<ArrayBuffer> => (priv ? node.kem.serializePrivateKey(k) : node.kem.serializePublicKey(k));
  const rStock = { privateKey: await stock.kem.deserializePrivateKey(await raw(r.privateKey, true)), publicKey: await stock.kem.deserializePublicKey(await raw(r.publicKey, false)) };
  const sStock = { privateKey: await stock.kem.deserializePrivateKey(await raw(s.privateKey, true)), publicKey: await stock.kem.deserializePublicKey(await raw(s.publicKey, false)) };
  const pt = Buffer.from('knock knock');
  const a = await node.seal({ recipientPublicKey: r.publicKey, senderKey: s }, pt, aad(0));
  assert.equal(Buffer.from(await stock.open({ recipientKey: rStock, enc: a.enc, senderPublicKey: sStock.publicKey }, a.ct, aad(0))).toString(), 'knock knock');
  const b = await stock.seal({ recipientPublicKey: rStock.publicKey, senderKey: sStock }, pt, aad(0));
  assert.equal(Buffer.from(await node.open({ recipientKey: r, enc: b.enc, senderPublicKey: s.publicKey }, b.ct, aad(0))).toString(), 'knock knock');
});

test('NodeHkdfSha256 agrees with RFC 5869 test case 1 and long outputs', async () => {
  const kdf = new NodeHkdfSha256();
  const ikm = Buffer.alloc(22, 0x0b);
  const salt = hex('000102030405060708090a0b0c');
  const info = hex('f0f1f2f3f4f5f6f7f8f9');
  const prk = await kdf.extract(salt, ikm);
  assert.equal(toHex(prk), '077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5');
  assert.equal(toHex(await kdf.expand(prk, info, 42)), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  assert.equal(toHex(await kdf.extract(new Uint8Array(0), ikm)), createHmac('sha256', Buffer.alloc(32)).update(ikm).digest('hex'));
});

describe('the sender does not hang', () => {
  // Ephemeral keys once came from generateKeyPairSync + a JWK export, where Node 20 can deadlock
  // (a GC during the export runs the key-gen job's destructor, which takes the mutex the export
  // holds): a process sealing ~30,000 knocks hung within 120 s. Run in a child, as a hang would
  // stop this process with it.
  test('15,000 seals in a child process finish', { timeout: 100_000 }, () => {
    const datagram = new URL('../../src/knock/datagram.js', import.meta.url).href;
    const keys = new URL('../../src/knock/keys.js', import.meta.url).href;
    const script = `
      const { KnockSealer } = await import(${JSON.stringify(datagram)});
      const { generateX25519 } = await import(${JSON.stringify(keys)});
      const c = generateX25519(), s = generateX25519();
      const sealer = new KnockSealer(c.privateKey, s.publicKey);
      for (let i = 0; i < 15000; i++) await sealer.seal({ serverAddr: '198.51.100.1', allowAddr: '198.51.100.2', durationS: 0, open: [] });
      console.log('sealed');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 90_000 });
    assert.equal(r.signal, null, `the sealing child hung (killed by ${r.signal})`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /sealed/);
  });
});
