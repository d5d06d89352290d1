export * from './metrics.js';
export * from './presets.js';
export * from './trainer.js';
export * from './checkpoint.js';
export * from './lm-run.js';
