// Log-probabilities of generated tokens (OpenAI `logprobs` / `top_logprobs`): the natural-log
// softmax of the model's logits as the forward call returns them, before logit_bias, penalties and
// temperature (the model's own distribution), computed in float64.

import type { TokenLogprob, TopLogprob } from "./protocol.js";

/** How a token id reads: its text and bytes (tokenizer.ts `tokenBytes`). */
export interface TokenDescriber {
  decode(ids: ArrayLike<number>): string;
  tokenBytes(id: number): number[] | null;
}

/** log(sum(exp(logits))), stable, in float64; -Infinity when every logit is -Infinity. */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  if (max === -Infinity || Number.isNaN(max)) return max;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** The `k` ids of the largest logits, largest first (ties: lower id first). One pass, O(n k). */
export function topK(logits: ArrayLike<number>, k: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < logits.length && k > 0; i++) {
    const v = logits[i]!;
    if (Number.isNaN(v)) continue;
    if (ids.length === k && v <= logits[ids[k - 1]!]!) continue;
    let at = ids.length === k ? k - 1 : ids.length;
    while (at > 0 && logits[ids[at - 1]!]! < v) at--;
    ids.splice(at, 0, i);
    if (ids.length > k) ids.pop();
  }
  return ids;
}

function describe(id: number, logprob: number, tokens: TokenDescriber): TopLogprob {
  return { token: tokens.decode([id]), logprob, bytes: tokens.tokenBytes(id) };
}

/** The entry of `chosen` at a position with these `logits`, with its `top` likeliest alternatives. */
export function tokenLogprob(logits: ArrayLike<number>, chosen: number, top: number,
                             tokens: TokenDescriber): TokenLogprob {
  const lse = logSumExp(logits);
  const entry = describe(chosen, logits[chosen]! - lse, tokens);
  return { ...entry, top_logprobs: topK(logits, top).map((id) => describe(id, logits[id]! - lse, tokens)) };
}
