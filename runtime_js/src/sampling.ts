// Token sampling on a Float32Array of logits: logit bias, repetition / frequency / presence
// penalties, temperature (0 = greedy), top-p nucleus, and a seeded PRNG so that a request `seed`
// reproduces the same tokens. All functions are pure except the in-place logit processors, which
// say so.

/** xoshiro128** seeded through splitmix32: 32-bit state words, period 2^128 - 1. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    // fold the (safe-integer) seed into 32 bits, keeping both halves
    let x = (Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextUint32() >>> 5, lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A random seed for requests without one. */
export function randomSeed(): number {
  const words = new Uint32Array(2);
  globalThis.crypto.getRandomValues(words);
  return (words[0]! & 0x1fffff) * 2 ** 32 + words[1]!;
}

/** Index of the largest logit; the lowest index wins ties. NaN never wins. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0, bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bestValue) { bestValue = v; best = i; }
  }
  return best;
}

/** In place: add each bias; a bias of -100 or below bans the token (-Infinity). */
export function applyLogitBias(logits: Float32Array, bias: ReadonlyMap<number, number>): void {
  for (const [id, b] of bias) {
    if (id < 0 || id >= logits.length) continue;
    logits[id] = b <= -100 ? -Infinity : logits[id]! + b;
  }
}

/**
 * In place, HF/CTRL style: for every token id in `seen` (prompt and generated), divide a positive
 * logit by `penalty` and multiply a negative one by it. penalty 1 = off.
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of seen) {
    if (id < 0 || id >= logits.length) continue;
    const v = logits[id]!;
    logits[id] = v > 0 ? v / penalty : v * penalty;
  }
}

/**
 * In place, OpenAI style on the *generated* tokens: logit -= count * frequency + (count > 0) * presence.
 */
export function applyFrequencyPresencePenalty(logits: Float32Array, counts: ReadonlyMap<number, number>,
                                              frequency: number, presence: number): void {
  if (frequency === 0 && presence === 0) return;
  for (const [id, count] of counts) {
    if (id < 0 || id >= logits.length || count <= 0) continue;
    logits[id] = logits[id]! - count * frequency - presence;
  }
}

/**
 * Probabilities softmax(logits / temperature) of the candidates forming the top-p nucleus, most
 * probable first (ties: lower id first); with topP >= 1, every token of non-zero probability in id
 * order. temperature must be > 0.
 */
export function nucleus(logits: ArrayLike<number>, temperature: number, topP: number): { ids: Int32Array; probs: Float64Array } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  if (max === -Infinity || Number.isNaN(max)) {
    // everything banned (or NaN): fall back to the greedy choice so that decoding can go on
    return { ids: Int32Array.of(argmax(logits)), probs: Float64Array.of(1) };
  }
  const weights = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const w = Math.exp((logits[i]! - max) / temperature);  // NaN logits give NaN: treated as 0 below
    weights[i] = w > 0 ? w : 0;
    total += weights[i]!;
  }
  // Tokens with p < (1 - topP) / n have total mass < 1 - topP, so the nucleus lies within the
  // tokens at or above that threshold: only those need sorting.
  const threshold = topP >= 1 ? 0 : ((1 - topP) / n) * total;
  const order: number[] = [];
  for (let i = 0; i < n; i++) if (weights[i]! > 0 && weights[i]! >= threshold) order.push(i);
  if (topP < 1) order.sort((a, b) => weights[b]! - weights[a]! || a - b);
  let keep = order.length, cum = 0;
  if (topP < 1) {
    for (let k = 0; k < order.length; k++) {
      cum += weights[order[k]!]! / total;
      if (cum >= topP) { keep = k + 1; break; }
    }
  }
  const outIds = Int32Array.from(order.slice(0, keep));
  const probs = new Float64Array(keep);
  let kept = 0;
  for (let k = 0; k < keep; k++) kept += weights[outIds[k]!]!;
  for (let k = 0; k < keep; k++) probs[k] = weights[outIds[k]!]! / kept;
  return { ids: outIds, probs };
}

/** Draw from temperature / top-p; temperature 0 is greedy (argmax). Does not modify `logits`. */
export function sampleFromLogits(logits: ArrayLike<number>, temperature: number, topP: number, rng: Rng): number {
  if (temperature <= 0) return argmax(logits);
  const { ids, probs } = nucleus(logits, temperature, topP);
  if (ids.length === 1) return ids[0]!;
  const u = rng.next();
  let cum = 0;
  for (let k = 0; k < ids.length; k++) {
    cum += probs[k]!;
    if (u < cum) return ids[k]!;
  }
  return ids[ids.length - 1]!;
}

export interface SamplingParams {
  temperature: number;
  top_p: number;
  repetition_penalty: number;
  frequency_penalty: number;
  presence_penalty: number;
  logit_bias?: ReadonlyMap<number, number>;
  /** null / undefined: random. */
  seed?: number | null;
}

/**
 * Per-request sampler state. Use: `const s = new Sampler(params, promptIds)`; for each step
 * `const id = s.sample(logits)` (which modifies `logits` in place) then `s.accept(id)`.
 */
export class Sampler {
  readonly params: SamplingParams;
  readonly seed: number;
  private readonly rng: Rng;
  /** Every token seen (prompt + generated): the repetition penalty's set. */
  private readonly seen = new Set<number>();
  /** Generated tokens only: frequency / presence penalties. */
  private readonly counts = new Map<number, number>();

  constructor(params: SamplingParams, promptTokens: Iterable<number> = []) {
    this.params = params;
    this.seed = params.seed ?? randomSeed();
    this.rng = new Rng(this.seed);
    for (const id of promptTokens) this.seen.add(id);
  }

  /** Apply bias and penalties to `logits` in place. */
  process(logits: Float32Array): void {
    const p = this.params;
    if (p.logit_bias && p.logit_bias.size) applyLogitBias(logits, p.logit_bias);
    applyRepetitionPenalty(logits, this.seen, p.repetition_penalty);
    applyFrequencyPresencePenalty(logits, this.counts, p.frequency_penalty, p.presence_penalty);
  }

  /** Process `logits` (in place) and pick the next token. */
  sample(logits: Float32Array): number {
    this.process(logits);
    return sampleFromLogits(logits, this.params.temperature, this.params.top_p, this.rng);
  }

  /** Record a generated token. */
  accept(token: number): void {
    this.seen.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
  }
}
