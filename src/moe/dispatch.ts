/**
 * The dispatch plan: which token rows each expert processes, in contiguous per-expert blocks,
 * built by a counting sort of (token, slot) assignments by expert. Capacity is enforced here.
 * Memory is O(tokens·k): no dense [tokens, experts, capacity] tensor exists anywhere.
 */

/** Rows grouped by expert: expert e owns plan rows expertOffsets[e] .. expertOffsets[e+1]-1. */
export interface DispatchPlan {
  numExperts: number;
  /** [numExperts + 1] prefix offsets into tokenIndex / weightIndex. */
  expertOffsets: Int32Array;
  /** Token row (into the flattened [tokens, dModel] input) of each kept assignment. */
  tokenIndex: Int32Array;
  /** Index of each kept assignment's combine weight in the flat weight vector. */
  weightIndex: Int32Array;
  /** Kept assignments per expert (= block sizes). */
  tokensPerExpert: number[];
  /** Assignments that lost their capacity slot. */
  droppedAssignments: number;
  /** Tokens that lost every assignment (the residual alone carries them). */
  droppedTokens: number;
  /** Capacity per expert (per scope), or null when dropless. */
  capacityPerExpert: number | null;
}

/** C = ceil(capacityFactor · tokens · k / numExperts): the GShard/Switch per-expert capacity. */
export function capacityPerExpert(capacityFactor: number, tokens: number, k: number, numExperts: number): number {
  // Round the product first so that e.g. 1.25·8·2/4 is exactly 5, not 5.000000000000001.
  return Math.ceil(+((capacityFactor * tokens * k) / numExperts).toFixed(9));
}

export interface TokenChoiceDispatchOptions {
  numExperts: number;
  /** Capacity factor, or null for dropless. */
  capacityFactor: number | null;
  dropPolicy: 'position' | 'score';
  /** Tokens per capacity scope: all tokens ('batch') or the sequence length ('sequence'). */
  scopeTokens: number;
}

/**
 * Plan for token choice. `experts` [tokens·k] holds each token's choices in rank order
 * (token-major: experts[t·k + j] is token t's j-th choice); `priority` [tokens] orders tokens
 * within a slot for the 'score' policy (descending; ties keep token order). Weight index of
 * assignment (t, j) is t·k + j.
 *
 * Fill order (which assignments survive capacity), within each scope of scopeTokens tokens:
 * 'position': slot-major, every token's 1st choice in token order, then every 2nd choice, ...
 * 'score': the same slot-major sweep with tokens sorted by descending priority (V-MoE BPR).
 * Within an expert's block, rows are in fill order.
 */
export function tokenChoicePlan(experts: Int32Array, k: number, priority: Float32Array | null, opts: TokenChoiceDispatchOptions): DispatchPlan {
  const E = opts.numExperts;
  const tokens = k === 0 ? 0 : experts.length / k;
  const scope = Math.max(1, opts.scopeTokens);
  const cap = opts.capacityFactor === null ? null : capacityPerExpert(opts.capacityFactor, scope, k, E);
  const keep = new Uint8Array(tokens * k);
  const counts = new Int32Array(E);
  // Kept assignments in fill order, so the block layout below needs no second sweep or sort.
  const kept = new Int32Array(tokens * k);
  let numKept = 0;
  const order = new Int32Array(scope);
  const used = new Int32Array(E);
  let dropped = 0;
  for (let s0 = 0; s0 < tokens; s0 += scope) {
    const n = Math.min(scope, tokens - s0);
    for (let i = 0; i < n; i++) order[i] = s0 + i;
    if (opts.dropPolicy === 'score' && priority) {
      const sub = Array.from(order.subarray(0, n));
      sub.sort((a, b) => priority[b] - priority[a] || a - b);
      order.set(sub);
    }
    used.fill(0);
    for (let j = 0; j < k; j++) {
      for (let i = 0; i < n; i++) {
        const a = order[i] * k + j;
        const e = experts[a];
        if (cap === null || used[e] < cap) {
          used[e]++;
          keep[a] = 1;
          kept[numKept++] = a;
        } else dropped++;
      }
    }
    for (let e = 0; e < E; e++) counts[e] += used[e];
  }
  const expertOffsets = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) expertOffsets[e + 1] = expertOffsets[e] + counts[e];
  const tokenIndex = new Int32Array(numKept);
  const weightIndex = new Int32Array(numKept);
  const cursor = expertOffsets.slice(0, E);
  for (let i = 0; i < numKept; i++) {
    const a = kept[i];
    const p = cursor[experts[a]]++;
    tokenIndex[p] = Math.floor(a / k);
    weightIndex[p] = a;
  }
  let droppedTokens = 0;
  if (dropped > 0) {
    for (let t = 0; t < tokens; t++) {
      let any = 0;
      for (let j = 0; j < k; j++) any |= keep[t * k + j];
      if (!any) droppedTokens++;
    }
  }
  return {
    numExperts: E,
    expertOffsets,
    tokenIndex,
    weightIndex,
    tokensPerExpert: Array.from(counts),
    droppedAssignments: dropped,
    droppedTokens,
    capacityPerExpert: cap,
  };
}

/**
 * Plan for expert choice (Zhou et al. 2022): scores [tokens, E]; expert e takes its top C tokens
 * by score (ties to the lower token index), C = min(tokens, ceil(capacityFactor · tokens / E)).
 * Weight index of (token t, expert e) is t·E + e, so combine weights gather from flat scores.
 */
export function expertChoicePlan(scores: Float32Array, tokens: number, E: number, capacityFactor: number): DispatchPlan {
  const cap = Math.min(tokens, capacityPerExpert(capacityFactor, tokens, 1, E));
  const expertOffsets = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) expertOffsets[e + 1] = expertOffsets[e] + cap;
  const tokenIndex = new Int32Array(E * cap);
  const weightIndex = new Int32Array(E * cap);
  const chosen = new Uint8Array(tokens);
  const idx = Array.from({ length: tokens }, (_, i) => i);
  for (let e = 0; e < E; e++) {
    idx.sort((a, b) => scores[b * E + e] - scores[a * E + e] || a - b);
    for (let j = 0; j < cap; j++) {
      const t = idx[j];
      tokenIndex[e * cap + j] = t;
      weightIndex[e * cap + j] = t * E + e;
      chosen[t] = 1;
    }
  }
  let droppedTokens = 0;
  for (let t = 0; t < tokens; t++) if (!chosen[t]) droppedTokens++;
  return {
    numExperts: E,
    expertOffsets,
    tokenIndex,
    weightIndex,
    tokensPerExpert: new Array<number>(E).fill(cap),
    droppedAssignments: droppedTokens,
    droppedTokens,
    capacityPerExpert: cap,
  };
}
