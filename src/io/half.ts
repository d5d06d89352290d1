/**
 * 16-bit float decoding to fp32: IEEE 754 binary16 (F16: 1 sign, 5 exponent, 10 mantissa bits)
 * and bfloat16 (BF16: the top 16 bits of an fp32). Both are exact in fp32, including
 * subnormals, ±Inf and NaN.
 */

let f16Table: Float32Array | null = null;

/** The fp32 value of a binary16 bit pattern: (-1)ˢ·2^(e-15)·(1 + m/1024), subnormal (-1)ˢ·2^-14·m/1024. */
export function f16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** All 65536 binary16 values as fp32, built once: decoding is then one lookup per element. */
function table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToNumber(i);
  }
  return f16Table;
}

/** Decode little-endian binary16 values from `bytes` (2·n bytes) into fp32. */
export function decodeF16(bytes: Uint8Array, n: number): Float32Array {
  const t = table();
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  return out;
}

/** Decode little-endian bfloat16 values from `bytes` (2·n bytes) into fp32: the bits become the high half of an fp32. */
export function decodeBF16(bytes: Uint8Array, n: number): Float32Array {
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = ((bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16) >>> 0;
  // Reinterpret (host order matches the Uint32Array we just wrote, so this is endian-safe).
  return new Float32Array(bits.buffer);
}
