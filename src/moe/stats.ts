/** Routing statistics of one forward, shared by MoELayer and the LoRA-mixture routers. */
import type { DispatchPlan } from './dispatch.js';
import type { MoEStats } from './layer.js';

/**
 * Mean over rows of the Shannon entropy (nats) of each row of p [rows, cols]: −Σ_c p log p.
 * When p = softmax(logits) row by row, pass the logits: lse = l_top − log p_top for the row's
 * largest p, so H = Σ_c p_c (lse − l_c) = (l_top − log p_top) · Σ_c p_c − Σ_c p_c l_c, with one
 * logarithm per row instead of one per entry.
 */
export function entropyOfRows(p: Float32Array, rows: number, cols: number, logits?: Float32Array): number {
  if (rows === 0) return 0;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let h = 0;
    if (logits) {
      // One pass, summed in float64 (where float32 products are exact): the final subtraction
      // cancels ~|l| · 1e-16, nothing at float32 precision.
      let top = base, dot = 0, mass = 0;
      for (let i = base; i < base + cols; i++) {
        const v = p[i];
        if (v > p[top]) top = i;
        dot += v * logits[i];
        mass += v;
      }
      h = mass * (logits[top] - Math.log(p[top])) - dot;
    } else {
      for (let c = 0; c < cols; c++) {
        const v = p[base + c];
        if (v > 0) h -= v * Math.log(v);
      }
    }
    total += h;
  }
  return total / rows;
}

/**
 * MoEStats of a dispatch plan over `assignments` (tokens · k) token-expert pairs; the router
 * entropy is that of `probs` [probRows, numExperts] (0 without probabilities), which are
 * softmax(logits) when `logits` is given. Load imbalance is
 * max / mean of the kept assignments per expert.
 */
export function routingStats(plan: DispatchPlan, assignments: number, probs: Float32Array | null, probRows: number, balanceLoss: number, zLoss: number, logits?: Float32Array): MoEStats {
  const tpe = plan.tokensPerExpert;
  const meanLoad = tpe.reduce((a, b) => a + b, 0) / Math.max(1, tpe.length);
  return {
    tokensPerExpert: tpe,
    droppedAssignments: plan.droppedAssignments,
    droppedTokens: plan.droppedTokens,
    dropFraction: assignments === 0 ? 0 : plan.droppedAssignments / assignments,
    routerEntropy: probs ? entropyOfRows(probs, probRows, tpe.length, logits) : 0,
    loadImbalance: meanLoad === 0 ? 0 : Math.max(...tpe) / meanLoad,
    balanceLoss,
    zLoss,
  };
}
