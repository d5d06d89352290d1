/** Switchyard: Mixture-of-Experts for TypeScript. The public API. */
export * from './tensor/index.js';
export * from './ops/index.js';
export * from './backend/index.js';
export * from './errors.js';
export * from './random.js';
export * from './moe/index.js';
export * from './nn/index.js';
export * from './optim/index.js';
export * from './io/index.js';
export * from './train/index.js';
export * from './data/index.js';
export * from './report/index.js';
export * from './serve/index.js';
export * from './lora/index.js';
export * from './remote/index.js';
