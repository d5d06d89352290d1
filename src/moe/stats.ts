/** Routing statistics of one forward, shared by MoELayer and the LoRA-mixture routers. */
import type { DispatchPlan } from './dispatch.js';
import type { MoEStats } from './layer.js';

/** Mean over rows of the Shannon entropy (nats) of each row of p [rows, cols]: −Σ_c p log p. */
export function entropyOfRows(p: Float32Array, rows: number, cols: number): number {
  if (rows === 0) return 0;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let h = 0;
    for (let c = 0; c < cols; c++) {
      const v = p[r * cols + c];
      if (v > 0) h -= v * Math.log(v);
    }
    total += h;
  }
  return total / rows;
}

/**
 * MoEStats of a dispatch plan over `assignments` (tokens · k) token-expert pairs; the router
 * entropy is that of `probs` [probRows, numExperts] (0 without probabilities). Load imbalance is
 * max / mean of the kept assignments per expert.
 */
export function routingStats(plan: DispatchPlan, assignments: number, probs: Float32Array | null, probRows: number, balanceLoss: number, zLoss: number): MoEStats {
  const tpe = plan.tokensPerExpert;
  const meanLoad = tpe.reduce((a, b) => a + b, 0) / Math.max(1, tpe.length);
  return {
    tokensPerExpert: tpe,
    droppedAssignments: plan.droppedAssignments,
    droppedTokens: plan.droppedTokens,
    dropFraction: assignments === 0 ? 0 : plan.droppedAssignments / assignments,
    routerEntropy: probs ? entropyOfRows(probs, probRows, tpe.length) : 0,
    loadImbalance: meanLoad === 0 ? 0 : Math.max(...tpe) / meanLoad,
    balanceLoss,
    zLoss,
  };
}
