/**
 * The client bundle NAME.spak: everything `spak knock` needs, in one 0600 JSON file: the
 * client's private key and the server's public key (PEM), the client id, optionally host and port.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { clientIdOf, formatClientId, parsePrivatePem, parsePublicPem, privatePem, publicPem, writeFileMode } from './keys.js';

export interface Bundle {
  name: string;
  clientId: number;
  clientKey: KeyObject;   // private
  serverKey: KeyObject;   // public
  host?: string;
  port?: number;
}

const FORMAT = 'spak-knock-bundle';

export function bundleText(b: Bundle): string {
  const out: Record<string, unknown> = {
    format: FORMAT,
    version: 1,
    name: b.name,
    clientId: formatClientId(b.clientId),
    clientKey: privatePem(b.clientKey),
    serverKey: publicPem(b.serverKey),
  };
  if (b.host !== undefined) out.host = b.host;
  if (b.port !== undefined) out.port = b.port;
  return `${JSON.stringify(out, null, 2)}\n`;
}

/** Parses a bundle; `what` (a file name) prefixes every error. */
export function parseBundle(text: string, what: string): Bundle {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`${what}: not a spak bundle (not JSON)`);
  }
  if (j === null || typeof j !== 'object' || j.format !== FORMAT) throw new Error(`${what}: not a spak bundle (format is not "${FORMAT}")`);
  if (j.version !== 1) throw new Error(`${what}: bundle version ${String(j.version)} is not supported (1 is)`);
  const str = (k: string): string => {
    if (typeof j[k] !== 'string') throw new Error(`${what}: ${k} is missing or not a string`);
    return j[k] as string;
  };
  const clientKey = parsePrivatePem(str('clientKey'), `${what}: clientKey`);
  const serverKey = parsePublicPem(str('serverKey'), `${what}: serverKey`);
  const clientId = clientIdOf(createPublicKey(clientKey));
  if (str('clientId') !== formatClientId(clientId)) throw new Error(`${what}: clientId ${str('clientId')} does not belong to clientKey (${formatClientId(clientId)})`);
  const b: Bundle = { name: str('name'), clientId, clientKey, serverKey };
  if (j.host !== undefined) b.host = str('host');
  if (j.port !== undefined) {
    if (!Number.isInteger(j.port) || (j.port as number) < 1 || (j.port as number) > 65535) throw new Error(`${what}: port must be 1-65535`);
    b.port = j.port as number;
  }
  return b;
}

export function loadBundle(file: string): Bundle {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  return parseBundle(text, file);
}

export function saveBundle(file: string, b: Bundle, overwrite = false): void {
  writeFileMode(file, bundleText(b), 0o600, overwrite);
}
