// Preloaded (--import) into every test file by run-tests.mjs: gives each test() / it() without a timeout
// option the default bound SPAK_TEST_DEFAULT_TIMEOUT_MS, so a stuck test fails under its own name.
// (Node 20's --test-timeout bounds a whole file run by `node --test`, not the tests inside it.)
import { createRequire, syncBuiltinESMExports } from 'node:module';

const require = createRequire(import.meta.url);
const nodeTest = require('node:test');
const ms = Number(process.env.SPAK_TEST_DEFAULT_TIMEOUT_MS);

function withDefaultTimeout(fn) {
  const wrapped = (...args) => {
    // test([name][, options][, fn]): add or complete the options argument.
    const i = args.findIndex((a) => a !== null && typeof a === 'object');
    if (i === -1) args.splice(typeof args[0] === 'string' ? 1 : 0, 0, { timeout: ms });
    else if (args[i].timeout === undefined) args[i] = { ...args[i], timeout: ms };
    return fn(...args);
  };
  for (const variant of ['skip', 'todo', 'only']) if (typeof fn[variant] === 'function') wrapped[variant] = withDefaultTimeout(fn[variant]);
  return wrapped;
}

// In a file run per enforcement mode (SPAK_ENFORCEMENT, see run-tests.mjs), every top-level test and
// suite name starts with the mode, e.g. "[tc] server IPv4, single: flow gating".
const mode = process.env.SPAK_ENFORCEMENT;
let depth = 0; // suites being defined: their callbacks run synchronously, so only depth 0 is top level

function withModeName(fn, isSuite) {
  const wrapped = (...args) => {
    if (mode && depth === 0) {
      if (typeof args[0] === 'string') args[0] = `[${mode}] ${args[0]}`;
      else args.unshift(`[${mode}]`);
    }
    if (!isSuite) return fn(...args);
    const i = args.findIndex((a) => typeof a === 'function');
    if (i !== -1) {
      const body = args[i];
      args[i] = function (...a) {
        depth++;
        try {
          return body.apply(this, a);
        } finally {
          depth--;
        }
      };
    }
    return fn(...args);
  };
  for (const variant of ['skip', 'todo', 'only']) if (typeof fn[variant] === 'function') wrapped[variant] = withModeName(fn[variant], isSuite);
  return wrapped;
}

if (ms > 0) {
  nodeTest.test = withDefaultTimeout(nodeTest.test);
  nodeTest.it = withDefaultTimeout(nodeTest.it);
}
if (mode) {
  nodeTest.test = withModeName(nodeTest.test, false);
  nodeTest.it = withModeName(nodeTest.it, false);
  nodeTest.describe = withModeName(nodeTest.describe, true);
  nodeTest.suite = withModeName(nodeTest.suite, true);
}
syncBuiltinESMExports(); // `import { test } from 'node:test'` in the test files now sees the wrapped functions

// run-tests.mjs stops a file with SIGTERM to its process group, and `node --test` passes a SIGTERM on to
// the file's process too. The second must not cut short the cleanup the first started (the lab's one-shot
// SIGTERM listener removes its namespaces): with no listener left, Node would take the default action and
// die halfway. This listener keeps one there; alone (no lab), it ends the process as SIGTERM would.
if (!process.execArgv.includes('--test')) {
  process.on('SIGTERM', () => {
    if (process.listenerCount('SIGTERM') === 1) process.exit(143);
  });
}
