/** Neural-network building blocks: the Module base class and basic layers. */
export * from './module.js';
export * from './layers.js';
export * from './transformer.js';
export * from './vit.js';
