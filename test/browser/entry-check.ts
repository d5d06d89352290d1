/**
 * Shared by entry-page.ts / entry-worker.ts: import the library the way an app does (the package
 * name, resolved by esbuild through package.json "exports" → "browser"), let it pick a backend, and
 * check one small autograd computation on it against the reference backend.
 */
import * as pkg from 'switchyard';

// TypeScript resolves 'switchyard' with Node's conditions (index.d.ts); the bundle gets browser.js.
const { getBackend, logsumexp, matmul, ReferenceBackend, selectBrowserBackend, Tensor, withBackend } = pkg as unknown as typeof import('../../src/browser.js');

/** What the entry check reports. */
export interface EntryReport {
  kind: string;
  description: string;
  active: string;
  maxRelErr: number;
  context: string;
  error?: string;
}

function run(): { loss: number; grad: Float32Array } {
  const r = (n: number, s: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s) * 0.5);
  const a = Tensor.from(r(64 * 96, 1), [64, 96], { requiresGrad: true });
  const b = Tensor.from(r(96 * 48, 2), [96, 48]);
  const loss = logsumexp(matmul(a, b)).sum();
  loss.backward();
  return { loss: loss.item(), grad: a.grad!.f32.slice() };
}

/** Select, run on the chosen backend and on the reference, report the largest relative difference. */
export async function entryCheck(context: string): Promise<EntryReport> {
  try {
    const choice = await selectBrowserBackend({ quiet: true });
    const active = getBackend().name;
    const mine = run();
    const want = withBackend(new ReferenceBackend(), run);
    let worst = Math.abs(mine.loss - want.loss) / Math.abs(want.loss);
    for (let i = 0; i < want.grad.length; i++) worst = Math.max(worst, Math.abs(mine.grad[i] - want.grad[i]) / (Math.abs(want.grad[i]) + 1e-3));
    return { kind: choice.kind, description: choice.description, active, maxRelErr: worst, context };
  } catch (e) {
    return { kind: 'none', description: '', active: '', maxRelErr: NaN, context, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
}
