/** A task list for the backend's grouped GEMM, built one product at a time over a growing buffer table. */
import { be } from './util.js';

/** Incrementally built `Backend.gemm` task list (13 ints per task) over a growing buffer table. */
export class GemmTasks {
  readonly buffers: Float32Array[] = [];
  private readonly index = new Map<Float32Array, number>();
  private params: number[] = [];

  private buf(b: Float32Array): number {
    let i = this.index.get(b);
    if (i === undefined) {
      i = this.buffers.length;
      this.buffers.push(b);
      this.index.set(b, i);
    }
    return i;
  }

  /** C[cOff..] (+)= op(A[aOff..]) · op(B[bOff..]) with leading dims lda/ldb/ldc (see Backend.gemm). */
  add(
    a: Float32Array, aOff: number, lda: number,
    b: Float32Array, bOff: number, ldb: number,
    c: Float32Array, cOff: number, ldc: number,
    m: number, n: number, k: number, flags: number,
  ): void {
    this.params.push(this.buf(a), aOff, lda, this.buf(b), bOff, ldb, this.buf(c), cOff, ldc, m, n, k, flags);
  }

  /** Run the tasks added since the last run as one backend call. */
  run(): void {
    if (this.params.length === 0) return;
    be().gemm(this.buffers, Int32Array.from(this.params));
    this.params = [];
  }
}
