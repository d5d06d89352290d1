/** Shared test helpers: backends under test, allclose, finite-difference gradient checks. */
import { expect } from 'vitest';
import { availableBackends, noGrad, Tensor, withBackend, type Backend } from '../src/index.js';

/** Every backend available here (reference always; native when built). Tests loop over these. */
export function backendsUnderTest(): Backend[] {
  return availableBackends();
}

/** Run a describe-style body once per backend with that backend active. */
export function forEachBackend(fn: (backend: Backend, run: <T>(f: () => T) => T) => void): void {
  for (const b of backendsUnderTest()) fn(b, (f) => withBackend(b, f));
}

/** Max |a-b| / (atol + rtol·|b|) ≤ 1 elementwise; throws with the worst index otherwise. */
export function expectAllClose(
  actual: Tensor | ArrayLike<number>,
  expected: Tensor | ArrayLike<number>,
  opts: { rtol?: number; atol?: number; label?: string } = {},
): void {
  const rtol = opts.rtol ?? 1e-5, atol = opts.atol ?? 1e-6;
  const a = actual instanceof Tensor ? actual.data : actual;
  const e = expected instanceof Tensor ? expected.data : expected;
  if (actual instanceof Tensor && expected instanceof Tensor) {
    expect([...actual.shape], `${opts.label ?? ''} shape`).toEqual([...expected.shape]);
  }
  expect(a.length, `${opts.label ?? ''} length`).toBe(e.length);
  let worst = -1, worstRatio = 0;
  for (let i = 0; i < a.length; i++) {
    const av = a[i], ev = e[i];
    if (Number.isNaN(ev) && Number.isNaN(av)) continue;
    if (av === ev) continue;
    const ratio = Math.abs(av - ev) / (atol + rtol * Math.abs(ev));
    if (!(ratio <= 1)) {
      if (!(ratio <= worstRatio)) {
        worstRatio = ratio;
        worst = i;
      }
    }
  }
  if (worst >= 0) {
    throw new Error(`${opts.label ?? 'allclose'}: index ${worst}: got ${a[worst]}, expected ${e[worst]} (rtol=${rtol}, atol=${atol}, ${worstRatio.toFixed(2)}x over)`);
  }
}

/**
 * Check the gradients of scalar-valued f with respect to each input by central differences in
 * float64 arithmetic on the perturbation (f is evaluated in fp32, so eps ~1e-2..1e-3 and
 * tolerances ~1e-2 relative are appropriate).
 */
export function gradCheck(
  f: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: { eps?: number; rtol?: number; atol?: number; label?: string } = {},
): void {
  const eps = opts.eps ?? 1e-2;
  for (const t of inputs) t.grad = null;
  const leaves = inputs.map((t) => {
    const l = Tensor.from(t.f32, t.shape, { requiresGrad: true });
    return l;
  });
  const out = f(...leaves);
  out.backward();
  for (let which = 0; which < inputs.length; which++) {
    const base = leaves[which].f32;
    const numeric = new Float64Array(base.length);
    for (let i = 0; i < base.length; i++) {
      const evalAt = (delta: number): number => {
        const xs = leaves.map((l, j) => {
          const c = Tensor.from(l.f32, l.shape);
          if (j === which) (c.data as Float32Array)[i] += delta;
          return c;
        });
        return noGrad(() => f(...xs).item());
      };
      numeric[i] = (evalAt(eps) - evalAt(-eps)) / (2 * eps);
    }
    const analytic = leaves[which].grad;
    expect(analytic, `${opts.label ?? ''} input ${which} has a gradient`).not.toBeNull();
    expectAllClose(analytic!.f32, numeric, { rtol: opts.rtol ?? 2e-2, atol: opts.atol ?? 2e-3, label: `${opts.label ?? 'gradCheck'} d/dinput${which}` });
  }
}
