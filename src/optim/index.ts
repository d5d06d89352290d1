/** Optimizers (SGD, AdamW), gradient clipping and learning-rate schedules. */
export {
  Optimizer,
  type GroupHyperparams,
  type ParamGroup,
  type ParamGroupSpec,
  type OptimizerParams,
  type HyperValue,
  type ParamState,
  type OptimizerStateDict,
} from './optimizer.js';
export { SGD, type SGDHyperparams, type SGDState } from './sgd.js';
export { AdamW, type AdamWHyperparams, type AdamWState } from './adamw.js';
export { clipGradNorm, type ClipGradNormOptions } from './clip.js';
export {
  linearWarmup,
  cosineDecay,
  warmupCosine,
  scheduleFromMultiplier,
  LRScheduler,
  type LRSchedule,
  type WarmupCosineOptions,
  type SchedulableOptimizer,
  type LRSchedulerState,
} from './schedule.js';
