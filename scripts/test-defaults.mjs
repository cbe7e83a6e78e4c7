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

if (ms > 0) {
  nodeTest.test = withDefaultTimeout(nodeTest.test);
  nodeTest.it = withDefaultTimeout(nodeTest.it);
  syncBuiltinESMExports(); // `import { test } from 'node:test'` in the test files now sees the wrapped functions
}
