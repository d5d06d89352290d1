import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  SafetensorsError,
  SafetensorsFile,
  Tensor,
  f16BitsToNumber,
  loadSafetensors,
  readSafetensors,
  readSafetensorsHeader,
  saveSafetensors,
  writeSafetensors,
} from '../src/index.js';

const fixture = (name: string): Uint8Array => new Uint8Array(readFileSync(new URL(`./fixtures/${name}`, import.meta.url)));

/** A file from a header (object or raw JSON text) and a data buffer, laid out by hand. */
function build(header: unknown, data: Uint8Array | number[] = [], opts: { pad?: boolean; lengthOverride?: number } = {}): Uint8Array {
  let json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  if (opts.pad !== false) {
    const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
    padded.set(json);
    json = padded;
  }
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(opts.lengthOverride ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function u16le(values: number[]): Uint8Array {
  const b = new Uint8Array(values.length * 2);
  values.forEach((v, i) => new DataView(b.buffer).setUint16(2 * i, v, true));
  return b;
}

function expectSafetensorsError(f: () => unknown, fieldPattern: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, `expected a SafetensorsError matching ${fieldPattern}`).toBeInstanceOf(SafetensorsError);
  expect((err as Error).message).toMatch(fieldPattern);
}

describe('safetensors round trip', () => {
  it('F32 and I32 tensors, scalars, empty tensors and metadata', () => {
    const dict = {
      w: Tensor.randn([3, 4], { seed: 1 }),
      scalar: Tensor.scalar(-2.5),
      empty: Tensor.zeros([0, 7]),
      ids: Tensor.indices([5, -3, 2147483647], [3]),
      'blocks.0.ffn.w1': Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]),
    };
    const bytes = writeSafetensors(dict, { format: 'pt', note: 'héllo ✓' });
    const header = readSafetensorsHeader(bytes);
    expect(header.metadata).toEqual({ format: 'pt', note: 'héllo ✓' });
    expect(header.headerLength % 8).toBe(0);
    expect(header.dataStart).toBe(8 + header.headerLength);
    const back = readSafetensors(bytes);
    expect(Object.keys(back).sort()).toEqual(Object.keys(dict).sort());
    for (const [k, t] of Object.entries(dict)) {
      expect(back[k].shape, k).toEqual(t.shape);
      expect(back[k].dtype, k).toBe(t.dtype);
      expect(Array.from(back[k].data), k).toEqual(Array.from(t.data));
    }
    expect(readSafetensors(writeSafetensors({})).constructor).toBe(Object);
    expect(readSafetensorsHeader(writeSafetensors({})).metadata).toEqual({});
  });

  it('keeps exact bits: -0, NaN, ±Inf, subnormals', () => {
    const vals = Float32Array.from([-0, NaN, Infinity, -Infinity, 1e-45, 3.4028234663852886e38]);
    const back = readSafetensors(writeSafetensors({ x: new Tensor(vals, [6]) })).x;
    expect(new Uint32Array(back.f32.buffer)).toEqual(new Uint32Array(vals.buffer));
  });

  it('reads tensors from a subarray view at an odd byte offset, and a tensor view of a larger buffer', () => {
    const bytes = writeSafetensors({ a: Tensor.from([1, 2, 3], [3]), b: Tensor.from([4], [1]) });
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    expect(Array.from(readSafetensors(shifted.subarray(3)).a.data)).toEqual([1, 2, 3]);
    const big = new Float32Array([9, 8, 7, 6]);
    const view = new Tensor(big.subarray(1, 3), [2]);
    expect(Array.from(readSafetensors(writeSafetensors({ v: view })).v.data)).toEqual([8, 7]);
  });

  it('names like __proto__ and integer-like names are ordinary tensors', () => {
    const dict: Record<string, Tensor> = {};
    Object.defineProperty(dict, '__proto__', { value: Tensor.from([1], [1]), enumerable: true });
    dict['7'] = Tensor.from([2], [1]);
    const back = readSafetensors(writeSafetensors(dict));
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(Object.keys(back).sort()).toEqual(['7', '__proto__']);
    expect(back['7'].data[0]).toBe(2);
  });

  it('writes byte-identically to the reference layout (fixture from scripts/fixtures/make_safetensors_fixture.py)', () => {
    const ref = fixture('torch_f32.safetensors');
    const tensors = readSafetensors(ref);
    const meta = readSafetensorsHeader(ref).metadata;
    expect(meta.source).toBe('scripts/fixtures/make_safetensors_fixture.py');
    expect(Array.from(tensors['layers.0.w'].data)).toEqual(Array.from(Float32Array.from([0, 1, 2, 3, 4, 5].map((v) => v / 7))));
    expect(tensors['layers.2.w'].shape).toEqual([]);
    expect(tensors.b.shape).toEqual([0]);
    expect(tensors.ids.dtype).toBe('int32');
    // Same tensors in a different insertion order must give the same bytes (sorted by dtype, then UTF-8 name).
    const shuffled = Object.fromEntries(Object.entries(tensors).reverse());
    expect(Buffer.from(writeSafetensors(shuffled, meta)).equals(Buffer.from(ref))).toBe(true);
  });
});

describe('16-bit float decoding', () => {
  it('F16 by hand: normals, subnormals, max, ±Inf, NaN, -0', () => {
    const bits = [0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x8000, 0x3555, 0x8001];
    const expected = [1, -2, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, Infinity, -Infinity, NaN, -0, 0.333251953125, -(2 ** -24)];
    const bytes = build({ h: { dtype: 'F16', shape: [12], data_offsets: [0, 24] } }, u16le(bits));
    const h = readSafetensors(bytes).h;
    expect(h.dtype).toBe('float32');
    expected.forEach((e, i) => expect(Object.is(h.data[i], e) || (Number.isNaN(e) && Number.isNaN(h.data[i])), `bits 0x${bits[i].toString(16)}`).toBe(true));
    expect(Object.is(f16BitsToNumber(0x8000), -0)).toBe(true);
  });

  it('BF16 by hand: the top half of an fp32, subnormals included', () => {
    const bits = [0x3f80, 0x4049, 0x0001, 0x0080, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x8000, 0xbf80];
    const expected = [1, 3.140625, 2 ** -133, 2 ** -126, 3.3895313892515355e38, Infinity, -Infinity, NaN, -0, -1];
    const bytes = build({ b: { dtype: 'BF16', shape: [2, 5], data_offsets: [0, 20] } }, u16le(bits));
    const b = readSafetensors(bytes).b;
    expect(b.shape).toEqual([2, 5]);
    expected.forEach((e, i) => expect(Object.is(b.data[i], e) || (Number.isNaN(e) && Number.isNaN(b.data[i])), `bits 0x${bits[i].toString(16)}`).toBe(true));
  });

  it('reads a file written from PyTorch tensors and matches torch`s own fp32 conversion', () => {
    const bytes = fixture('torch_dtypes.safetensors');
    const header = readSafetensorsHeader(bytes);
    const expected = JSON.parse(header.metadata.expected) as Record<string, { shape: number[]; values: Array<number | string> }>;
    const tensors = readSafetensors(bytes);
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(expected).sort());
    const dtypes = Object.fromEntries(Object.entries(header.tensors).map(([k, v]) => [k, v.dtype]));
    expect(new Set(Object.values(dtypes))).toEqual(new Set(['F16', 'BF16', 'F32', 'F64', 'I64', 'I32', 'U8', 'BOOL']));
    for (const [name, { shape, values }] of Object.entries(expected)) {
      const t = tensors[name];
      expect(t.shape, name).toEqual(shape);
      const isInt = dtypes[name] === 'I64' || dtypes[name] === 'I32';
      expect(t.dtype, name).toBe(isInt ? 'int32' : 'float32');
      const want = values.map((v) => (typeof v === 'string' ? Number(v) : isInt ? v : Math.fround(v)));
      want.forEach((w, i) => {
        const got = t.data[i];
        expect(Object.is(got, w) || (Number.isNaN(w) && Number.isNaN(got)), `${name}[${i}]: got ${got}, want ${w}`).toBe(true);
      });
    }
  });
});

describe('integer dtypes', () => {
  it('I64 and U32 values outside int32 are rejected with the tensor and element named', () => {
    const data = new Uint8Array(16);
    new DataView(data.buffer).setBigInt64(8, 2n ** 31n, true);
    expectSafetensorsError(() => readSafetensors(build({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data)), /"ids"\[1\]="2147483648".*int32/);
    const u = new Uint8Array(4);
    new DataView(u.buffer).setUint32(0, 2 ** 31, true);
    expectSafetensorsError(() => readSafetensors(build({ u: { dtype: 'U32', shape: [1], data_offsets: [0, 4] } }, u)), /"u"\[0\]/);
  });

  it('I8/I16/U16 become int32; a known but unsupported dtype is a typed error', () => {
    const bytes = build({
      a: { dtype: 'I8', shape: [2], data_offsets: [0, 2] },
      b: { dtype: 'I16', shape: [1], data_offsets: [2, 4] },
      c: { dtype: 'U16', shape: [1], data_offsets: [4, 6] },
    }, [0xff, 0x05, 0x00, 0x80, 0xff, 0xff]);
    const t = readSafetensors(bytes);
    expect([...t.a.data, ...t.b.data, ...t.c.data]).toEqual([-1, 5, -32768, 65535]);
    expect(t.a.dtype).toBe('int32');
    expectSafetensorsError(() => readSafetensors(build({ q: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, [0, 0])), /header\["q"\]\.dtype="F8_E4M3".*not supported/);
  });
});

describe('malformed files throw SafetensorsError naming the field and value', () => {
  const ok = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const data8 = new Uint8Array(8);
  const cases: Array<[string, () => Uint8Array, RegExp]> = [
    ['shorter than 8 bytes', () => new Uint8Array(5), /^file\.length=5: .*at least 8 bytes/],
    ['empty file', () => new Uint8Array(0), /^file\.length=0/],
    ['header length beyond the file', () => build(ok, data8, { lengthOverride: 4096 }), /^headerLength=4096: .*exceeds the file size/],
    ['header length absurd (> 100 MB)', () => build(ok, data8, { lengthOverride: 200_000_000 }), /^headerLength=200000000: .*header limit/],
    ['header length with the high word set', () => build(ok, data8, { lengthOverride: 2 ** 40 }), /^headerLength=1099511627776/],
    ['invalid UTF-8', () => {
      // A lone 0xff byte inside the JSON text.
      const f = build('{"w":1}    ', new Uint8Array(0), { pad: false });
      f[8 + 2] = 0xff;
      return f;
    }, /^header="11 bytes": is not valid UTF-8/],
    ['invalid JSON', () => build('{"w": {"dtype": "F32",', data8), /^header=.*not valid JSON/],
    ['header is an array', () => build([], data8), /^header=\[\]: must be a JSON object/],
    ['header is null', () => build('null'), /^header=null: must be a JSON object/],
    ['header is a number', () => build('42'), /^header=42/],
    ['entry not an object', () => build({ w: [1, 2] }), /^header\["w"\]=\[1, 2\]: a tensor entry must be an object/],
    ['unknown dtype', () => build({ w: { dtype: 'F17', shape: [2], data_offsets: [0, 8] } }, data8), /^header\["w"\]\.dtype="F17": unknown dtype/],
    ['dtype not a string', () => build({ w: { dtype: 4, shape: [2], data_offsets: [0, 8] } }, data8), /^header\["w"\]\.dtype=4/],
    ['negative dimension', () => build({ w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data8), /^header\["w"\]\.shape=\[-2\]: must be an array of non-negative integers/],
    ['fractional dimension', () => build({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, data8), /^header\["w"\]\.shape=\[1\.5\]/],
    ['shape not an array', () => build({ w: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, data8), /^header\["w"\]\.shape="2"/],
    ['missing shape', () => build({ w: { dtype: 'F32', data_offsets: [0, 8] } }, data8), /^header\["w"\]\.shape=undefined/],
    ['offsets reversed', () => build({ w: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, data8), /^header\["w"\]\.data_offsets=\[8, 0\]: must be \[begin, end\]/],
    ['offsets with one entry', () => build({ w: { dtype: 'F32', shape: [2], data_offsets: [8] } }, data8), /^header\["w"\]\.data_offsets=\[8\]/],
    ['negative offset', () => build({ w: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, data8), /^header\["w"\]\.data_offsets=\[-8, 0\]/],
    ['end beyond the data buffer', () => build({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data8), /^header\["w"\]\.data_offsets=\[0, 16\]: end 16 is beyond the data buffer \(8 bytes\)/],
    ['size not shape × dtype size', () => build({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data8), /^header\["w"\]\.data_offsets=\[0, 8\]: spans 8 bytes but shape \[3\] of F32 needs 12/],
    ['overlapping tensors', () => build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, data8), /^header\["b"\]\.data_offsets=\[4, 8\]: overlaps tensor "a"/],
    ['gap between tensors', () => build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)), /^header\["b"\]\.data_offsets=\[8, 12\]: leaves a gap: bytes \[4, 8\)/],
    ['gap at the start', () => build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, data8), /^header\["a"\]\.data_offsets=\[4, 8\]: leaves a gap: bytes \[0, 4\)/],
    ['trailing bytes after the last tensor', () => build(ok, new Uint8Array(12)), /^data\.length=12: the tensors cover only bytes \[0, 8\)/],
    ['metadata not an object', () => build({ __metadata__: ['x'], ...ok }, data8), /^header\.__metadata__=\["x"\]/],
    ['metadata value not a string', () => build({ __metadata__: { epoch: 3 }, ...ok }, data8), /^header\.__metadata__\["epoch"\]=3: metadata values must be strings/],
  ];

  for (const [name, make, pattern] of cases) {
    it(name, () => expectSafetensorsError(() => readSafetensors(make()), pattern));
  }

  it('a UTF-8 BOM before the JSON is rejected (as the reference does)', () => {
    const f = build('\uFEFF{}', new Uint8Array(0));
    expectSafetensorsError(() => readSafetensors(f), /^header=.*not valid JSON/);
  });

  it('zero-size tensors may share an offset', () => {
    const t = readSafetensors(build({ a: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, b: { dtype: 'F16', shape: [0, 4], data_offsets: [0, 0] }, c: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)));
    expect(t.b.shape).toEqual([0, 4]);
    expect(t.c.data[0]).toBe(0);
  });

  it('writer validation', () => {
    expectSafetensorsError(() => writeSafetensors({ __metadata__: Tensor.zeros([1]) }), /^dict\["__metadata__"\]/);
    expectSafetensorsError(() => writeSafetensors({ w: Tensor.zeros([1]) }, { epoch: 3 as unknown as string }), /^metadata\["epoch"\]=3/);
    expectSafetensorsError(() => writeSafetensors({ w: [1, 2] as unknown as Tensor }), /^dict\["w"\]=\[1, 2\]: must be a Tensor/);
  });
});

describe('header-only parsing for positioned reads', () => {
  it('parses from the first 8+N bytes given the full file size', () => {
    const bytes = writeSafetensors({ a: Tensor.randn([100], { seed: 3 }), b: Tensor.from([1, 2], [2]) }, { k: 'v' });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const h = readSafetensorsHeader(bytes.subarray(0, 8 + n), bytes.length);
    expect(h.metadata).toEqual({ k: 'v' });
    expect(h.tensors.a).toEqual({ dtype: 'F32', shape: [100], dataOffsets: [0, 400] });
    expect(h.tensors.b.dataOffsets).toEqual([400, 408]);
    // Without the true file size, the data buffer looks missing.
    expectSafetensorsError(() => readSafetensorsHeader(bytes.subarray(0, 8 + n)), /data_offsets=\[0, 400\]: end 400 is beyond the data buffer \(0 bytes\)/);
    expectSafetensorsError(() => readSafetensorsHeader(bytes.subarray(0, 8 + n - 1), bytes.length), /^bytes\.length=/);
  });
});

describe('safetensors files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-st-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('saves atomically (no temp file left behind), overwrites, loads back', async () => {
    const path = join(dir, 'model.safetensors');
    await saveSafetensors(path, { w: Tensor.from([1, 2, 3], [3]) }, { step: '1' });
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    await saveSafetensors(path, { w: Tensor.from([4, 5], [2]), ids: Tensor.indices([7]) });
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    const back = await loadSafetensors(path);
    expect(Array.from(back.w.data)).toEqual([4, 5]);
    expect(Array.from(back.ids.data)).toEqual([7]);
  });

  it('a failed save leaves no temp file and the previous file intact', async () => {
    const sub = join(dir, 'failing');
    await saveSafetensors(join(dir, 'keep.safetensors'), { w: Tensor.from([1], [1]) });
    const before = readdirSync(dir).sort();
    await expect(saveSafetensors(join(sub, 'missing-dir', 'x.safetensors'), { w: Tensor.zeros([1]) })).rejects.toThrow(/ENOENT/);
    // Renaming onto a directory fails after the temp file was written: it must be cleaned up.
    const asDir = join(dir, 'is-a-dir.safetensors');
    rmSync(asDir, { force: true, recursive: true });
    await import('node:fs').then((fs) => fs.mkdirSync(join(asDir, 'child'), { recursive: true }));
    await expect(saveSafetensors(asDir, { w: Tensor.zeros([1]) })).rejects.toThrow();
    expect(readdirSync(dir).sort()).toEqual([...before, 'is-a-dir.safetensors'].sort());
    rmSync(asDir, { recursive: true });
    expect(Array.from((await loadSafetensors(join(dir, 'keep.safetensors'))).w.data)).toEqual([1]);
  });

  it('SafetensorsFile reads the header and single tensors on demand', async () => {
    const path = join(dir, 'experts.safetensors');
    const dict: Record<string, Tensor> = {};
    for (let e = 0; e < 4; e++) dict[`experts.${e}.w1`] = Tensor.randn([3, 5], { seed: e });
    await saveSafetensors(path, dict, { experts: '4' });
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.header.metadata).toEqual({ experts: '4' });
      expect(f.names()).toEqual(['experts.0.w1', 'experts.1.w1', 'experts.2.w1', 'experts.3.w1']);
      const t = await f.read('experts.2.w1');
      expect(Array.from(t.data)).toEqual(Array.from(dict['experts.2.w1'].data));
      await expect(f.read('experts.9.w1')).rejects.toThrow(/name="experts\.9\.w1": no such tensor/);
      await expect(f.read('toString')).rejects.toThrow(SafetensorsError);
    } finally {
      await f.close();
    }
    const bad = join(dir, 'bad.safetensors');
    writeFileSync(bad, new Uint8Array(3));
    await expect(SafetensorsFile.open(bad)).rejects.toThrow(/^file\.length=3/);
    await expect(loadSafetensors(bad)).rejects.toThrow(SafetensorsError);
    rmSync(bad);
  });
});
