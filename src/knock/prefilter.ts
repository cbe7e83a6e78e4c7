// The XDP side of each knock client: its id and the prefilter key the server derives for it
// (keys.ts prefilterKey). The server's knock maps take these as plain bytes (server/knockmaps.ts).
import type { KeyObject } from 'node:crypto';
import type { KnockMapOptions } from '../server/knockmaps.js';
import { clientIdOf, formatClientId, parsePrivatePem, parsePublicPem, prefilterKey } from './keys.js';

/** Client id -> prefilter key, for every client key; two keys with one id cannot both be served. */
export function prefilterEntries(clients: readonly (KeyObject | string)[], serverKey: KeyObject | string): Map<number, Buffer> {
  const server = typeof serverKey === 'string' ? parsePrivatePem(serverKey, 'server key') : serverKey;
  const out = new Map<number, Buffer>();
  clients.forEach((c, i) => {
    const pub = typeof c === 'string' ? parsePublicPem(c, `knock client ${i + 1}`) : c;
    const id = clientIdOf(pub);
    if (out.has(id)) throw new Error(`knock client ${i + 1}: client id ${formatClientId(id)} is given twice (the same key, or a colliding one)`);
    out.set(id, prefilterKey(server, pub, 'server'));
  });
  return out;
}

/** Knock mode as people describe it (port, client keys, server key, rate) -> what the server's maps hold. */
export function knockMapOptions(o: {
  port: number; clients: readonly (KeyObject | string)[]; serverKey: KeyObject | string; rate?: number | undefined; burst?: number | undefined;
}): KnockMapOptions {
  return { port: o.port, clients: prefilterEntries(o.clients, o.serverKey), rate: o.rate, burst: o.burst };
}
