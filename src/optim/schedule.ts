/**
 * Learning-rate schedules as pure functions of the step, and LRScheduler, which writes the
 * scheduled lr into every param group (torch.optim.lr_scheduler.LambdaLR semantics: the
 * schedule is evaluated at step 0 on construction and at step t after the t-th call to step()).
 */
import { ValueError } from '../errors.js';

/** A schedule: the learning rate at `step` (0-based) for a group whose configured lr is `baseLr`. */
export type LRSchedule = (step: number, baseLr: number) => number;

function checkStep(field: string, step: number): void {
  if (typeof step !== 'number' || !Number.isFinite(step) || step < 0) throw new ValueError(field, step, 'must be a finite number >= 0');
}

function checkCount(field: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new ValueError(field, n, 'must be a non-negative integer');
}

/**
 * Linear warmup multiplier (Goyal et al. 2017): step / warmupSteps while step < warmupSteps,
 * then 1. Starts at 0 on step 0, as transformers' get_linear_schedule_with_warmup.
 */
export function linearWarmup(step: number, warmupSteps: number): number {
  checkStep('linearWarmup.step', step);
  checkCount('linearWarmup.warmupSteps', warmupSteps);
  return step < warmupSteps ? step / warmupSteps : 1;
}

/**
 * Cosine decay multiplier (Loshchilov & Hutter 2017, SGDR without restarts):
 * r + (1 - r)·½(1 + cos(π·min(step, T)/T)) with r = minRatio, T = decaySteps; 1 at step 0, r from T on.
 */
export function cosineDecay(step: number, decaySteps: number, minRatio = 0): number {
  checkStep('cosineDecay.step', step);
  checkCount('cosineDecay.decaySteps', decaySteps);
  if (!(minRatio >= 0 && minRatio <= 1)) throw new ValueError('cosineDecay.minRatio', minRatio, 'must be in [0, 1]');
  if (decaySteps === 0) return minRatio;
  const progress = Math.min(step, decaySteps) / decaySteps;
  return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

export interface WarmupCosineOptions {
  /** Steps of linear warmup from 0 to the base lr. */
  warmupSteps: number;
  /** Step at which the cosine reaches its floor (warmup included); the lr stays at the floor after. */
  totalSteps: number;
  /** Absolute floor of the lr (give this or minLrRatio; default floor 0). */
  minLr?: number;
  /** Floor as a fraction of the base lr. */
  minLrRatio?: number;
}

/**
 * Linear warmup then cosine decay to a floor (the GPT-3 / Chinchilla recipe): for
 * step < W, lr = base·step/W; then lr = min + (base - min)·½(1 + cos(π·(step - W)/(T - W))),
 * and lr = min from step T on.
 */
export function warmupCosine(opts: WarmupCosineOptions): LRSchedule {
  const { warmupSteps, totalSteps, minLr, minLrRatio } = opts;
  checkCount('warmupCosine.warmupSteps', warmupSteps);
  checkCount('warmupCosine.totalSteps', totalSteps);
  if (totalSteps < warmupSteps) throw new ValueError('warmupCosine.totalSteps', totalSteps, `must be >= warmupSteps (${warmupSteps})`);
  if (minLr !== undefined && minLrRatio !== undefined) throw new ValueError('warmupCosine.minLr', minLr, 'give either minLr or minLrRatio, not both');
  if (minLr !== undefined && !(minLr >= 0 && Number.isFinite(minLr))) throw new ValueError('warmupCosine.minLr', minLr, 'must be a finite number >= 0');
  if (minLrRatio !== undefined && !(minLrRatio >= 0 && minLrRatio <= 1)) throw new ValueError('warmupCosine.minLrRatio', minLrRatio, 'must be in [0, 1]');
  return (step, baseLr) => {
    checkStep('warmupCosine.step', step);
    const floor = minLr ?? baseLr * (minLrRatio ?? 0);
    if (floor > baseLr) throw new ValueError('warmupCosine.minLr', floor, `must not exceed the base lr ${baseLr}`);
    if (step < warmupSteps) return baseLr * linearWarmup(step, warmupSteps);
    const ratio = baseLr === 0 ? 0 : floor / baseLr;
    return baseLr * cosineDecay(step - warmupSteps, totalSteps - warmupSteps, ratio);
  };
}

/** Turn a multiplier function (step → factor) into a schedule: lr = baseLr · f(step) (LambdaLR). */
export function scheduleFromMultiplier(f: (step: number) => number): LRSchedule {
  return (step, baseLr) => baseLr * f(step);
}

/** What LRScheduler needs of an optimizer: its param groups' lrs. */
export interface SchedulableOptimizer {
  paramGroups: Array<{ lr: number; initialLr?: number }>;
}

/** A scheduler's checkpoint: the step reached and each group's base lr. */
export interface LRSchedulerState {
  step: number;
  baseLrs: number[];
}

/**
 * Drives an optimizer's lrs from a schedule. Call step() once after each optimizer.step().
 * Each group's base lr is its `initialLr` if set (a resumed optimizer), else its current lr,
 * which is then recorded as `initialLr` (torch's initial_lr).
 */
export class LRScheduler {
  readonly optimizer: SchedulableOptimizer;
  readonly schedule: LRSchedule;
  private baseLrs: number[];
  private stepCount = 0;

  constructor(optimizer: SchedulableOptimizer, schedule: LRSchedule) {
    if (typeof schedule !== 'function') throw new ValueError('LRScheduler.schedule', typeof schedule, 'must be a function (step, baseLr) => lr');
    this.optimizer = optimizer;
    this.schedule = schedule;
    this.baseLrs = optimizer.paramGroups.map((g) => (g.initialLr ??= g.lr));
    this.apply();
  }

  /** Advance one step and set the new lrs. */
  step(): void {
    this.stepCount++;
    this.apply();
  }

  /** Steps taken so far (the schedule was last evaluated at this step). */
  get lastStep(): number {
    return this.stepCount;
  }

  /** The lr of each group as last set. */
  lastLrs(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  stateDict(): LRSchedulerState {
    return { step: this.stepCount, baseLrs: [...this.baseLrs] };
  }

  /** Restore a checkpoint and re-apply the schedule at its step. */
  loadStateDict(state: LRSchedulerState): void {
    checkCount('LRScheduler.loadStateDict.step', state?.step);
    const n = this.optimizer.paramGroups.length;
    if (!Array.isArray(state.baseLrs) || state.baseLrs.length !== n) {
      throw new ValueError('LRScheduler.loadStateDict.baseLrs', state.baseLrs, `needs ${n} entries, one per param group`);
    }
    state.baseLrs.forEach((v, i) => {
      if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new ValueError(`LRScheduler.loadStateDict.baseLrs[${i}]`, v, 'must be a finite number >= 0');
    });
    this.stepCount = state.step;
    this.baseLrs = [...state.baseLrs];
    this.optimizer.paramGroups.forEach((g, i) => (g.initialLr = this.baseLrs[i]));
    this.apply();
  }

  private apply(): void {
    this.optimizer.paramGroups.forEach((g, i) => {
      const lr = this.schedule(this.stepCount, this.baseLrs[i]);
      if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) {
        throw new ValueError('LRScheduler.schedule', lr, `returned an invalid lr at step ${this.stepCount} for param group ${i} (need a finite number >= 0)`);
      }
      g.lr = lr;
    });
  }
}
