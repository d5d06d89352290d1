/**
 * The metrics a training run records: one StepMetrics per optimizer step, one EvalMetrics per
 * evaluation, in a RunLog that reports and the CLI read. Plain JSON-able data.
 */

/** Routing statistics of one MoE layer at one step. */
export interface LayerRoutingMetrics {
  /** Index of the transformer layer. */
  layer: number;
  /** Assignments per expert this step (after capacity). */
  tokensPerExpert: number[];
  dropFraction: number;
  droppedTokens: number;
  routerEntropy: number;
  loadImbalance: number;
  balanceLoss: number;
  zLoss: number;
}

export interface StepMetrics {
  step: number;
  /** Main loss (cross-entropy) of the batch. */
  loss: number;
  /** Σ of the MoE layers' weighted aux losses. */
  auxLoss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Tokens processed this step. */
  tokens: number;
  /** Throughput of this step (forward + backward + optimizer). */
  tokensPerSecond: number;
  /** Seconds since the run (or the resumed run) started. */
  elapsedSeconds: number;
  moe: LayerRoutingMetrics[];
}

export interface EvalMetrics {
  step: number;
  loss: number;
  /** e^loss for language models. */
  perplexity?: number;
  /** For classifiers. */
  accuracy?: number;
  elapsedSeconds: number;
}

/** A sample text with the expert each token went to, per MoE layer (for the routing view). */
export interface RoutingSample {
  /** Token strings as displayed. */
  tokens: string[];
  /** layers[l].experts[t] = the k experts of token t in that layer, best first. */
  layers: Array<{ layer: number; experts: number[][]; gates: number[][] }>;
  numExperts: number;
}

export interface RunLog {
  /** Free-form description: model kind, router, dataset. */
  name: string;
  config: unknown;
  startedAt: string;
  steps: StepMetrics[];
  evals: EvalMetrics[];
  routingSample?: RoutingSample;
  sampleText?: string;
}
