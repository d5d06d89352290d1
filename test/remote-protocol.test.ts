/**
 * Expert wire format and expert specs (no processes): round trips of single-expert messages and
 * batched frames, every malformed field rejected with a ProtocolError naming it, unaligned
 * payloads, spec grammar and its errors.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ConfigError } from '../src/errors.js';
import { batchBytes, decodeBatch, decodeMessage, encodeBatch, encodeMessage, HEADER_BYTES, isBatchFrame, KIND_BATCH_FORWARD, KIND_BATCH_REPLY, KIND_FORWARD, KIND_REPLY, messageBytes, ProtocolError } from '../src/remote/protocol.js';
import { defaultModelId, formatExpertSet, parseExpertSpec } from '../src/remote/spec.js';

/** Copies of `good` with one little-endian header field overwritten. */
function mutator(good: Uint8Array): (off: number, v: number, size: 2 | 4) => Uint8Array {
  return (off, v, size) => {
    const b = good.slice();
    const dv = new DataView(b.buffer);
    if (size === 2) dv.setUint16(off, v, true);
    else dv.setUint32(off, v, true);
    return b;
  };
}

const head = { kind: KIND_FORWARD, requestId: 7, layer: 3, expert: 5, rows: 2, cols: 3 };

function expectProtocolError(f: () => unknown, field: string): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as ProtocolError).field).toBe(field);
}

describe('expert wire format', () => {
  it('round-trips header and float32 rows bit for bit (including NaN payloads, -0, subnormals)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 0xffffffff }), (rows, cols, requestId) => {
        const data = new Float32Array(rows * cols + 3);
        const bits = new Uint32Array(data.buffer);
        for (let i = 0; i < bits.length; i++) bits[i] = (Math.random() * 0xffffffff) >>> 0;
        const buf = encodeMessage({ ...head, rows, cols, requestId }, data, 3);
        expect(buf.length).toBe(HEADER_BYTES + 4 * rows * cols);
        const m = decodeMessage(buf);
        expect([m.kind, m.requestId, m.layer, m.expert, m.rows, m.cols]).toEqual([KIND_FORWARD, requestId, 3, 5, rows, cols]);
        expect(Array.from(new Uint32Array(m.data.buffer, m.data.byteOffset, m.data.length))).toEqual(Array.from(bits.subarray(3, 3 + rows * cols)));
      }),
      { numRuns: 50 },
    );
  });

  it('writes the header little-endian at the documented offsets', () => {
    const buf = encodeMessage(head, Float32Array.of(1, 2, 3, 4, 5, 6));
    const dv = new DataView(buf.buffer);
    expect(String.fromCharCode(...buf.subarray(0, 4))).toBe('SWYX');
    expect([dv.getUint16(4, true), dv.getUint16(6, true), dv.getUint32(8, true), dv.getUint32(12, true), dv.getUint32(16, true), dv.getUint32(20, true), dv.getUint32(24, true), dv.getUint32(28, true)]).toEqual([1, 1, 7, 3, 5, 2, 3, 0]);
    expect(dv.getFloat32(32 + 4 * 5, true)).toBe(6);
  });

  it('decodes a payload that is not 4-byte aligned (copying it)', () => {
    const buf = encodeMessage(head, Float32Array.of(1.5, -2, 3, 4, 5, 6.25));
    const big = new Uint8Array(buf.length + 1);
    big.set(buf, 1);
    const m = decodeMessage(big.subarray(1));
    expect(Array.from(m.data)).toEqual([1.5, -2, 3, 4, 5, 6.25]);
    // A Node Buffer view into a larger pool.
    const pool = Buffer.alloc(buf.length + 10);
    pool.set(buf, 3);
    expect(Array.from(decodeMessage(pool.subarray(3, 3 + buf.length)).data)).toEqual([1.5, -2, 3, 4, 5, 6.25]);
  });

  it('rejects each malformed field with a ProtocolError naming it', () => {
    const good = encodeMessage(head, new Float32Array(6));
    const mutate = mutator(good);
    expectProtocolError(() => decodeMessage(new Uint8Array(10)), 'bytes');
    expectProtocolError(() => decodeMessage(new TextEncoder().encode('{"rows": [[1,2,3]], "padding": "........"}')), 'magic');
    expectProtocolError(() => decodeMessage(mutate(4, 2, 2)), 'version');
    expectProtocolError(() => decodeMessage(mutate(6, 9, 2)), 'kind');
    expectProtocolError(() => decodeMessage(mutate(28, 1, 4)), 'reserved');
    expectProtocolError(() => decodeMessage(mutate(24, 0, 4)), 'cols');
    expectProtocolError(() => decodeMessage(mutate(20, 3, 4)), 'bytes'); // claims more rows than it carries
    expectProtocolError(() => decodeMessage(mutate(20, 0xffffffff, 4)), 'rows'); // beyond the row limit
    expectProtocolError(() => decodeMessage(good.subarray(0, good.length - 1)), 'bytes');
    expectProtocolError(() => decodeMessage(good, { maxRows: 1, maxBytes: 1 << 20 }), 'rows');
    expectProtocolError(() => decodeMessage(good, { maxRows: 10, maxBytes: 40 }), 'bytes');
    expect(decodeMessage(good).rows).toBe(2);
    expect(messageBytes(2, 3)).toBe(good.length);
    expect(decodeMessage(encodeMessage({ ...head, kind: KIND_REPLY }, new Float32Array(6))).kind).toBe(KIND_REPLY);
  });
});

describe('batched frames (several expert blocks of one layer in one message)', () => {
  const bhead = { kind: KIND_BATCH_FORWARD, requestId: 9, layer: 2, cols: 3 };
  const blocks = [
    { expert: 1, rows: 2 },
    { expert: 4, rows: 1 },
  ];

  it('round-trips blocks gathered from anywhere in the source, bit for bit', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 1000 }),
        (experts, cols, requestId, seed) => {
          const sorted = [...experts].sort((a, b) => a - b);
          const rows = sorted.map((e, i) => 1 + ((e * 7 + i + seed) % 4));
          const srcRows = rows.reduce((a, b) => a + b, 0) + sorted.length; // room for a 1-row gap after each block
          const src = new Float32Array(srcRows * cols);
          const bits = new Uint32Array(src.buffer);
          for (let i = 0; i < bits.length; i++) bits[i] = (Math.random() * 0xffffffff) >>> 0;
          // Blocks taken from the source in reverse order with gaps, as a router sends them.
          let at = srcRows;
          const bs = sorted.map((expert, i) => ({ expert, rows: rows[i], row0: 0 }));
          for (const b of [...bs].reverse()) b.row0 = at -= b.rows + (b.expert % 2);
          const buf = encodeBatch({ kind: KIND_BATCH_REPLY, requestId, layer: 5, cols }, bs, src);
          expect(buf.length).toBe(batchBytes(bs.length, rows.reduce((a, b) => a + b, 0), cols));
          expect(isBatchFrame(buf)).toBe(true);
          const m = decodeBatch(buf);
          expect([m.kind, m.requestId, m.layer, m.cols, m.rows]).toEqual([KIND_BATCH_REPLY, requestId, 5, cols, rows.reduce((a, b) => a + b, 0)]);
          expect(m.blocks).toEqual(bs.map(({ expert, rows: r }) => ({ expert, rows: r })));
          const got = new Uint32Array(m.data.buffer, m.data.byteOffset, m.data.length);
          let k = 0;
          for (const b of bs) for (let j = b.row0 * cols; j < (b.row0 + b.rows) * cols; j++) expect(got[k++]).toBe(bits[j]);
          expect(k).toBe(got.length);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('writes the header and block table little-endian at the documented offsets; blocks default to back to back', () => {
    const buf = encodeBatch(bhead, blocks, Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9));
    const dv = new DataView(buf.buffer);
    expect(String.fromCharCode(...buf.subarray(0, 4))).toBe('SWYX');
    const words = [dv.getUint16(4, true), dv.getUint16(6, true), ...[8, 12, 16, 20, 24, 28, 32, 36, 40, 44].map((o) => dv.getUint32(o, true))];
    expect(words).toEqual([1, KIND_BATCH_FORWARD, 9, 2, 2, 3, 3, 0, 1, 2, 4, 1]);
    expect(dv.getFloat32(48, true)).toBe(1);
    expect(dv.getFloat32(48 + 4 * 8, true)).toBe(9);
    expect(buf.length).toBe(48 + 4 * 9);
    // Not 4-byte aligned: decoded from a copy.
    const big = new Uint8Array(buf.length + 1);
    big.set(buf, 1);
    expect(Array.from(decodeBatch(big.subarray(1)).data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(isBatchFrame(encodeMessage(head, new Float32Array(6)))).toBe(false);
  });

  it('rejects each malformed field of a batched frame with a ProtocolError naming it', () => {
    const good = encodeBatch(bhead, blocks, new Float32Array(9));
    const mutate = mutator(good);
    expectProtocolError(() => decodeBatch(new Uint8Array(12)), 'bytes');
    expectProtocolError(() => decodeBatch(mutate(0, 0x4e4f534a, 4)), 'magic');
    expectProtocolError(() => decodeBatch(mutate(4, 3, 2)), 'version');
    expectProtocolError(() => decodeBatch(mutate(6, KIND_FORWARD, 2)), 'kind');
    expectProtocolError(() => decodeMessage(good), 'kind'); // a batched frame is not a single-expert message
    expectProtocolError(() => decodeBatch(mutate(28, 7, 4)), 'reserved');
    expectProtocolError(() => decodeBatch(mutate(24, 0, 4)), 'cols');
    expectProtocolError(() => decodeBatch(mutate(16, 0, 4)), 'blocks');
    expectProtocolError(() => decodeBatch(mutate(16, 1e6, 4)), 'blocks'); // table longer than the message
    expectProtocolError(() => decodeBatch(mutate(40, 1, 4)), 'expert'); // experts 1, 1: not increasing
    expectProtocolError(() => decodeBatch(mutate(40, 0, 4)), 'expert'); // experts 1, 0
    expectProtocolError(() => decodeBatch(mutate(44, 0, 4)), 'rows'); // an empty block
    expectProtocolError(() => decodeBatch(mutate(20, 4, 4)), 'rows'); // total is not the blocks' sum
    expectProtocolError(() => decodeBatch(mutate(36, 3, 4)), 'rows'); // blocks sum to 4, total says 3
    expectProtocolError(() => decodeBatch(mutate(20, 0xffffffff, 4)), 'rows'); // beyond the row limit
    expectProtocolError(() => decodeBatch(good.subarray(0, good.length - 4)), 'bytes');
    expectProtocolError(() => decodeBatch(good, { maxRows: 2, maxBytes: 1 << 20 }), 'rows');
    expectProtocolError(() => decodeBatch(good, { maxRows: 10, maxBytes: 50 }), 'bytes');
    expectProtocolError(() => encodeBatch(bhead, [], new Float32Array(0)), 'blocks');
    expectProtocolError(() => encodeBatch(bhead, [{ expert: 0, rows: 4, row0: 1 }], new Float32Array(9)), 'data');
    expectProtocolError(() => encodeBatch(bhead, [{ expert: 0, rows: 1, row0: -1 }], new Float32Array(9)), 'row0');
    expect(decodeBatch(good).blocks).toEqual(blocks);
  });
});

describe('expert specs', () => {
  const layers = new Map([
    [0, 4],
    [2, 8],
  ]);
  const keys = (s: string): string[] => [...parseExpertSpec(s, layers)].flatMap(([l, set]) => [...set].sort((a, b) => a - b).map((e) => `${l}:${e}`));

  it('parses all, ranges, wildcards and continued items', () => {
    expect(keys('all')).toHaveLength(12);
    expect(keys('0:1,2,2:5-7')).toEqual(['0:1', '0:2', '2:5', '2:6', '2:7']);
    expect(keys('*:0-1')).toEqual(['0:0', '0:1', '2:0', '2:1']);
    expect(keys('2:*')).toHaveLength(8);
    const short = formatExpertSet(parseExpertSpec('2:7,2:0-3,0:1,0:3', layers));
    expect(short).toBe('0:1,3,2:0-3,7');
    expect(keys(short).sort()).toEqual(keys('2:7,2:0-3,0:1,0:3').sort());
  });

  it('refuses bad specs naming the flag and the value', () => {
    for (const bad of ['', '1:0', '0:4', '0:3-1', 'x', '5', '0:a', '2:0-8']) {
      let err: unknown;
      try {
        parseExpertSpec(bad, layers, '--experts');
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).field).toBe('--experts');
    }
  });

  it('derives a subject-safe model id', () => {
    expect(defaultModelId({ kind: 'hf', path: '/models/Mixtral 8x7B.v0.1' })).toBe('Mixtral_8x7B_v0_1');
  });
});
