/**
 * Typed errors. Every error names the offending field (argument, config key, tensor name) and
 * its value, so a user can fix the call without reading the source.
 */

/** Describe a value briefly for an error message (arrays and shapes inline, long strings cut). */
export function describe(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`;
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? value.slice(0, 77) + '...' : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as ArrayLike<unknown>).length})`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Base class of every Switchyard error: `field` is what was wrong, `value` what it was. */
export class SwitchyardError extends Error {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown, message: string) {
    super(`${field}=${describe(value)}: ${message}`);
    this.name = new.target.name;
    this.field = field;
    this.value = value;
  }
}

/** A tensor has the wrong shape or rank for an op, or shapes do not broadcast. */
export class ShapeError extends SwitchyardError {}
/** An axis, index or size is out of range. */
export class RangeValueError extends SwitchyardError {}
/** A tensor has the wrong dtype for an op (e.g. float indices). */
export class DTypeError extends SwitchyardError {}
/** An argument or option has an invalid value. */
export class ValueError extends SwitchyardError {}
/** A configuration object is invalid (unknown key value, out-of-range setting). */
export class ConfigError extends SwitchyardError {}
/** Autodiff misuse: backward() on a non-scalar, on a tensor that does not require grad, ... */
export class GradError extends SwitchyardError {}
/** Anomaly mode found a NaN or Inf: `field` is the op that produced it. */
export class AnomalyError extends SwitchyardError {}
/** A safetensors file is malformed: `field` names the header entry or byte range at fault. */
export class SafetensorsError extends SwitchyardError {}
/** A state dict does not match a module's parameters. */
export class StateDictError extends SwitchyardError {}
