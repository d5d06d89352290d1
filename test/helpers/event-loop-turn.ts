// Setup file for every test file (vitest.config.ts): one turn of the event loop after each test.
// A file of synchronous tests (test/native-backend.test.ts: ~300 native calls, ~50 s, more under
// load) otherwise runs start to end without reaching the event loop, so the worker's RPC replies
// wait behind it; past vitest's 60 s RPC timeout the run failed with 'Timeout calling
// "onTaskUpdate"' although every test passed (every run of that file over 60 s did, with another
// process busy on the second core; none did with this hook).
import { afterEach } from 'vitest';

afterEach(() => new Promise<void>((resolve) => setImmediate(resolve)));
