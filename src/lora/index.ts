/** Mixtures of LoRA experts over a frozen base model: LoRALinear, the mixture wrapper and its routers, PEFT files, workflows. */
export * from './config.js';
export * from './grouped.js';
export * from './lora-linear.js';
export * from './router.js';
export * from './mixture.js';
export * from './peft.js';
export * from './workflow.js';
