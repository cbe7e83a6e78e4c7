// The enforcement mode a test file runs in. scripts/run-tests.mjs runs every file marked
// `// spak-test-modes: xdp tc` once per mode with SPAK_ENFORCEMENT set (and puts the mode in front of
// its test names); a file run on its own, without it, runs in xdp.
import { ENFORCEMENTS, type Enforcement } from '../src/server/server.js';

export function testEnforcement(): Enforcement {
  const e = process.env.SPAK_ENFORCEMENT ?? 'xdp';
  if (!(ENFORCEMENTS as readonly string[]).includes(e)) throw new Error(`SPAK_ENFORCEMENT="${e}": xdp or tc`);
  return e as Enforcement;
}
