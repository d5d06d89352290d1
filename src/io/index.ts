/** Serialisation: the safetensors format in memory and on disk. */
export {
  readSafetensors,
  writeSafetensors,
  readSafetensorsHeader,
  readSafetensorsHeaderLength,
  decodeSafetensorsTensor,
  MAX_HEADER_BYTES,
  READABLE_DTYPES,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './safetensors.js';
export { saveSafetensors, loadSafetensors, writeFileAtomic, SafetensorsFile } from './safetensors-file.js';
export { f16BitsToNumber } from './half.js';
export * from './hf-import.js';
