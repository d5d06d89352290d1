/**
 * A tiny describe/it/expect harness for code that runs inside a browser page (vitest itself runs in
 * Node and drives the page with playwright-core). It implements only the matchers the op suite uses;
 * each failed expectation throws with the same kind of message vitest would print.
 */

type Fn = () => void | Promise<void>;
interface TestCase {
  name: string;
  fn: Fn;
}

const tests: TestCase[] = [];
const stack: string[] = [];

/** Group tests under a name (synchronous body, as in vitest). */
export function describe(name: string, body: () => void): void {
  stack.push(name);
  try {
    body();
  } finally {
    stack.pop();
  }
}

/** Register one test. */
export function it(name: string, fn: Fn): void {
  tests.push({ name: [...stack, name].join(' > '), fn });
}

/** Thrown by a failed expectation. */
export class AssertionError extends Error {}

function show(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  return false;
}

interface Matchers {
  toBe(want: unknown): void;
  toEqual(want: unknown): void;
  toBeLessThanOrEqual(want: number): void;
  toBeGreaterThanOrEqual(want: number): void;
  toBeNaN(): void;
  toBeNull(): void;
  toContain(item: unknown): void;
  toThrow(want?: RegExp | string | (new (...args: never[]) => Error)): void;
}

function matchers(got: unknown, label: string | undefined, negate: boolean): Matchers {
  const check = (ok: boolean, what: string): void => {
    if (ok === negate) throw new AssertionError(`${label ? label + ': ' : ''}expected ${show(got)} ${negate ? 'not ' : ''}${what}`);
  };
  return {
    toBe: (want) => check(Object.is(got, want), `to be ${show(want)}`),
    toEqual: (want) => check(deepEqual(got, want), `to equal ${show(want)}`),
    toBeLessThanOrEqual: (want) => check((got as number) <= want, `to be <= ${want}`),
    toBeGreaterThanOrEqual: (want) => check((got as number) >= want, `to be >= ${want}`),
    toBeNaN: () => check(Number.isNaN(got), 'to be NaN'),
    toBeNull: () => check(got === null, 'to be null'),
    toContain: (item) => check(Array.isArray(got) && got.includes(item), `to contain ${show(item)}`),
    toThrow: (want) => {
      let err: unknown = null;
      let threw = false;
      try {
        (got as () => unknown)();
      } catch (e) {
        threw = true;
        err = e;
      }
      const msg = err instanceof Error ? err.message : String(err);
      let ok = threw;
      if (threw && want instanceof RegExp) ok = want.test(msg);
      else if (threw && typeof want === 'string') ok = msg.includes(want);
      else if (threw && typeof want === 'function') ok = err instanceof want;
      const what = want === undefined ? 'to throw' : `to throw ${want instanceof RegExp || typeof want === 'string' ? String(want) : want.name}`;
      if (ok === negate) {
        throw new AssertionError(`${label ? label + ': ' : ''}expected function ${negate ? 'not ' : ''}${what}${threw ? ` (threw ${err instanceof Error ? err.name : ''}: ${msg})` : ' (did not throw)'}`);
      }
    },
  };
}

/** expect(value, label?).matcher(...) and expect(...).not.matcher(...). */
export function expect(got: unknown, label?: string): Matchers & { not: Matchers } {
  return Object.assign(matchers(got, label, false), { not: matchers(got, label, true) });
}
/** Fail the current test with a message. */
expect.fail = (message: string): never => {
  throw new AssertionError(message);
};

/** Outcome of one test. */
export interface TestResult {
  name: string;
  ok: boolean;
  error?: string;
  ms: number;
}

/** Run every registered test in order (optionally only names matching filter); never throws. */
export async function runAll(filter?: RegExp, onResult?: (r: TestResult) => void): Promise<TestResult[]> {
  const results: TestResult[] = [];
  for (const t of tests) {
    if (filter && !filter.test(t.name)) continue;
    const t0 = performance.now();
    let r: TestResult;
    try {
      await t.fn();
      r = { name: t.name, ok: true, ms: performance.now() - t0 };
    } catch (e) {
      r = { name: t.name, ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e), ms: performance.now() - t0 };
    }
    results.push(r);
    onResult?.(r);
  }
  return results;
}

/** Forget all registered tests (a page can register a second suite). */
export function clearTests(): void {
  tests.length = 0;
}
