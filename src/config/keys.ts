// Keys: 128-bit SipHash keys written as 32 hex characters.
import { randomBytes } from 'node:crypto';

/** Parses a 32-hex-character key; `what` names it in the error. */
export function parseHexKey(hex: string, what = 'key'): Buffer {
  const s = hex.trim();
  if (!/^[0-9a-fA-F]*$/.test(s)) throw new Error(`${what} is not hexadecimal: expected 32 hex characters (128 bits)`);
  if (s.length !== 32) throw new Error(`${what} has ${s.length} hex characters: expected 32 (128 bits)`);
  return Buffer.from(s, 'hex');
}

/** A new random key as 32 hex characters. */
export function newHexKey(): string {
  return randomBytes(16).toString('hex');
}
