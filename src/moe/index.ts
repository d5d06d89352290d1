export * from './config.js';
export * from './dispatch.js';
export * from './expert-ffn.js';
export * from './losses.js';
export * from './layer.js';
