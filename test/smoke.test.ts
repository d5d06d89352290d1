import { describe, expect, it } from 'vitest';
import { Tensor, matmul } from '../src/index.js';

describe('smoke', () => {
  it('matmul + backward', () => {
    const a = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3], { requiresGrad: true });
    const b = Tensor.from([1, 0, 0, 1, 1, 1], [3, 2], { requiresGrad: true });
    const c = matmul(a, b);
    expect(c.toArray()).toEqual([4, 5, 10, 11]);
    c.mul(c).sum().backward();
    // dL/dc = 2c; dA = 2c·Bᵀ
    expect(a.grad!.toArray()).toEqual([8, 10, 18, 20, 22, 42]);
  });
});
