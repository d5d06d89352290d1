/** Task lists for the backend's grouped GEMMs, built one product at a time over a growing buffer table. */
import type { Activation, GatedGemmMode } from '../backend/interface.js';
import { be } from './util.js';

/** Buffers referenced by index from a task list (each distinct array once). */
class BufferTable {
  readonly buffers: Float32Array[] = [];
  private readonly index = new Map<Float32Array, number>();

  id(b: Float32Array): number {
    let i = this.index.get(b);
    if (i === undefined) {
      i = this.buffers.length;
      this.buffers.push(b);
      this.index.set(b, i);
    }
    return i;
  }
}

/** Incrementally built `Backend.gemm` task list (13 ints per task) over a growing buffer table. */
export class GemmTasks {
  private readonly table = new BufferTable();
  private params: number[] = [];

  get buffers(): Float32Array[] {
    return this.table.buffers;
  }

  /** C[cOff..] (+)= op(A[aOff..]) · op(B[bOff..]) with leading dims lda/ldb/ldc (see Backend.gemm). */
  add(
    a: Float32Array, aOff: number, lda: number,
    b: Float32Array, bOff: number, ldb: number,
    c: Float32Array, cOff: number, ldc: number,
    m: number, n: number, k: number, flags: number,
  ): void {
    const t = this.table;
    this.params.push(t.id(a), aOff, lda, t.id(b), bOff, ldb, t.id(c), cOff, ldc, m, n, k, flags);
  }

  /** Run the tasks added since the last run as one backend call. */
  run(): void {
    if (this.params.length === 0) return;
    be().gemm(this.table.buffers, Int32Array.from(this.params));
    this.params = [];
  }
}

/** One `Backend.gemmGated` task: A [m, k] at aOff (row stride lda); C1, C3, O1, O3 [m, n] at their offsets, row stride ld. */
export interface GatedGemmTask {
  a: Float32Array; aOff: number; lda: number;
  /** op(B1), op(B3) = [k, n]: stored [n, k] when transB. b3 only for 'up'. */
  b1: Float32Array; b3: Float32Array | null; ldb: number; transB: boolean;
  /** 'up' with c1 = c3 = null: the products are not kept, only o1 is written. */
  c1: Float32Array | null; c1Off: number;
  c3: Float32Array | null; c3Off: number;
  o1: Float32Array; o1Off: number;
  /** Only for 'down-grad'. */
  o3: Float32Array | null; o3Off: number;
  ld: number; m: number; n: number; k: number;
}

/** Incrementally built `Backend.gemmGated` task list (21 ints per task). */
export class GatedGemmTasks {
  private readonly table = new BufferTable();
  private params: number[] = [];

  constructor(private readonly mode: GatedGemmMode, private readonly act: Activation) {}

  add(t: GatedGemmTask): void {
    const id = (b: Float32Array | null): number => (b ? this.table.id(b) : -1);
    this.params.push(
      id(t.a), t.aOff, t.lda, id(t.b1), 0, id(t.b3), 0, t.ldb,
      id(t.c1), t.c1Off, id(t.c3), t.c3Off, id(t.o1), t.o1Off, id(t.o3), t.o3Off,
      t.ld, t.m, t.n, t.k, t.transB ? 1 : 0,
    );
  }

  /** Run the tasks added since the last run as one backend call. */
  run(): void {
    if (this.params.length === 0) return;
    be().gemmGated(this.mode, this.act, this.table.buffers, Int32Array.from(this.params));
    this.params = [];
  }
}
