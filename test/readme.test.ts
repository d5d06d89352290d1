/** The README's TypeScript snippets must keep working: extract each, point it at src/, run it. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
const dir = mkdtempSync(join(root, 'test', '.readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README snippets', () => {
  it('has TypeScript snippets', () => expect(snippets.length).toBeGreaterThanOrEqual(2));
  snippets.forEach((code, i) => {
    it(`snippet ${i + 1} runs`, async () => {
      const src = pathToFileURL(join(root, 'src', 'index.ts')).href;
      const file = join(dir, `snippet${i + 1}.ts`);
      writeFileSync(file, code.replaceAll("from 'switchyard'", `from '${src}'`));
      const logs: unknown[][] = [];
      const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void logs.push(a));
      try {
        await import(pathToFileURL(file).href);
      } finally {
        spy.mockRestore();
      }
      expect(logs.length).toBeGreaterThan(0);
      if (code.includes('crossEntropy')) {
        // The training example logs (step, loss): loss must fall.
        const losses = logs.map((l) => Number(l[1]));
        expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.7);
      }
    });
  });
});
