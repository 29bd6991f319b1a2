// OpenAI embeddings for embedding models (chat-config.json model_kind "embedding"): the request and
// response types, request validation (pure), and the pipeline that tokenizes the inputs, packs them
// into padded batches for the module's batched encode function (longest first, so each batch pads
// little), and answers in OpenAI's shape with the vectors in request order.
//
// Text inputs are tokenized as one model input each (the tokenizer's post-processor frames them,
// e.g. BERT's [CLS] .. [SEP]) and cut to the model's max_seq_length as sentence-transformers cuts
// them: the text's tokens are shortened, the frame is kept. Token-id inputs are the model's input
// as given (frame included) and must fit max_seq_length.
import type { ChatConfig, EmbeddingConfig } from "./config.js";
import { AbortedError, ContextWindowExceededError, InvalidRequestError } from "./errors.js";

export interface EmbeddingCreateParams {
  /** A text, several texts, one input as token ids, or several as token-id arrays. */
  input: string | string[] | number[] | number[][];
  model?: string;
  /** Keep the first `dimensions` values (re-normalised when the model normalises). */
  dimensions?: number;
  /** "float" (default): arrays of numbers; "base64": little-endian float32 bytes in base64. */
  encoding_format?: "float" | "base64";
  user?: string;
  [extra: string]: unknown;
}

export interface Embedding {
  object: "embedding";
  index: number;
  embedding: number[] | string;
}

export interface CreateEmbeddingResponse {
  object: "list";
  data: Embedding[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

/** A checked request: inputs as texts or token ids (one kind per request). */
export interface NormalizedEmbeddingRequest {
  texts: string[] | null;
  ids: number[][] | null;
  dimensions: number;
  base64: boolean;
}

/** OpenAI's limit on inputs per request. */
export const MAX_INPUTS = 2048;
/** One encode call takes at most this many inputs, and this many tokens of padded batch. */
export const MAX_BATCH = 32;
export const MAX_BATCH_TOKENS = 4096;

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

function checkIds(ids: unknown[], vocabSize: number, field: string): number[] {
  if (ids.length === 0) throw new InvalidRequestError(field, "a token-id input must not be empty");
  for (const id of ids) {
    if (!isInt(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(field, `token ids must be integers from 0 to ${vocabSize - 1}, got ${JSON.stringify(id)}`);
    }
  }
  return ids as number[];
}

/** Check an embeddings request against the model; InvalidRequestError (code "invalid-request") names the field. */
export function validateEmbeddingRequest(body: unknown, embedding: EmbeddingConfig, vocabSize: number): NormalizedEmbeddingRequest {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new InvalidRequestError("request", "must be an object");
  const req = body as EmbeddingCreateParams;
  const { input } = req;
  let texts: string[] | null = null;
  let ids: number[][] | null = null;
  if (typeof input === "string") {
    texts = [input];
  } else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "string")) {
    texts = input;
  } else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "number")) {
    ids = [checkIds(input, vocabSize, "input")];
  } else if (Array.isArray(input) && input.length > 0 && input.every((x) => Array.isArray(x))) {
    ids = (input as unknown[][]).map((row, i) => checkIds(row, vocabSize, `input[${i}]`));
  } else {
    throw new InvalidRequestError("input", "must be a string, a non-empty array of strings, an array of token ids, "
      + "or an array of token-id arrays");
  }
  if (texts?.some((t) => t.length === 0)) throw new InvalidRequestError("input", "texts must not be empty");
  if ((texts ?? ids ?? []).length > MAX_INPUTS) {
    throw new InvalidRequestError("input", `at most ${MAX_INPUTS} inputs per request`);
  }
  const dims = req.dimensions ?? embedding.dimensions;
  if (!isInt(dims) || dims < 1 || dims > embedding.dimensions) {
    throw new InvalidRequestError("dimensions", `must be an integer from 1 to ${embedding.dimensions}, got ${JSON.stringify(req.dimensions)}`);
  }
  const format = req.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw new InvalidRequestError("encoding_format", `must be "float" or "base64", got ${JSON.stringify(format)}`);
  }
  if (req.model !== undefined && req.model !== null && typeof req.model !== "string") {
    throw new InvalidRequestError("model", "must be a string");
  }
  return { texts, ids, dimensions: dims, base64: format === "base64" };
}

/** `framed` (the text's tokens with the post-processor's frame) cut to `max` tokens: the tokens of
 * the text (`plain`) are shortened, the frame before and after them kept. */
export function truncateInput(framed: readonly number[], plain: readonly number[], max: number): number[] {
  if (framed.length <= max) return [...framed];
  let start = 0;
  while (start + plain.length <= framed.length && plain.some((id, i) => framed[start + i] !== id)) start++;
  if (start + plain.length > framed.length) return framed.slice(0, max);  // no plain run: keep the start
  const suffix = framed.slice(start + plain.length);
  const keep = Math.max(0, max - start - suffix.length);
  return [...framed.slice(0, start), ...plain.slice(0, keep), ...suffix].slice(0, max);
}

/** Groups of input indices, longest inputs first, each one encode call within the batch limits. */
export function planBatches(lengths: readonly number[], maxBatch = MAX_BATCH, maxTokens = MAX_BATCH_TOKENS): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  for (const i of order) {
    const longest = current.length ? lengths[current[0]!]! : lengths[i]!;
    if (current.length && (current.length >= maxBatch || (current.length + 1) * longest > maxTokens)) {
      batches.push(current);
      current = [];
    }
    current.push(i);
  }
  if (current.length) batches.push(current);
  return batches;
}

/** Right-padded (batch, seq) ids (pad 0) and 0/1 mask, row-major. */
export function padBatch(rows: readonly (readonly number[])[]): { ids: Int32Array; mask: Int32Array; seq: number } {
  const seq = Math.max(...rows.map((r) => r.length));
  const ids = new Int32Array(rows.length * seq);
  const mask = new Int32Array(rows.length * seq);
  rows.forEach((row, b) => {
    ids.set(row, b * seq);
    mask.fill(1, b * seq, b * seq + row.length);
  });
  return { ids, mask, seq };
}

/** The first `dimensions` values, scaled back to unit length when `normalize` (OpenAI's shortened
 * embeddings); the whole vector unchanged otherwise. */
export function shorten(vector: Float32Array, dimensions: number, normalize: boolean): Float32Array {
  if (dimensions >= vector.length) return vector;
  const out = vector.slice(0, dimensions);
  if (!normalize) return out;
  let sum = 0;
  for (const v of out) sum += v * v;
  const norm = Math.max(Math.sqrt(sum), 1e-12);
  for (let i = 0; i < out.length; i++) out[i]! /= norm;
  return out;
}

/** OpenAI's base64 form: the float32 values' little-endian bytes. */
export function float32Base64(vector: Float32Array): string {
  const bytes = new Uint8Array(vector.length * 4);
  const view = new DataView(bytes.buffer);
  vector.forEach((v, i) => view.setFloat32(i * 4, v, true));
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** What the pipeline needs of the tokenizer and of the module. */
export interface EmbeddingTokenizer {
  encode(text: string): number[];
  encodeInput(text: string): number[];
}
export interface Encoder {
  encode(ids: Int32Array, mask: Int32Array, batch: number, seq: number): Promise<Float32Array>;
}

export class EmbeddingPipeline {
  readonly embedding: EmbeddingConfig;

  constructor(private readonly encoder: Encoder, private readonly config: ChatConfig,
              private readonly tokenizer: EmbeddingTokenizer) {
    if (!config.embedding) throw new InvalidRequestError("model", "the model's chat-config.json has no embedding block");
    this.embedding = config.embedding;
  }

  /** The model input of each request input (tokenized and cut for texts; checked for token ids). */
  inputsOf(req: NormalizedEmbeddingRequest): number[][] {
    const max = this.embedding.max_seq_length;
    if (req.texts) {
      return req.texts.map((t) => truncateInput(this.tokenizer.encodeInput(t), this.tokenizer.encode(t), max));
    }
    const ids = req.ids ?? [];
    const long = ids.find((row) => row.length > max);
    if (long) throw new ContextWindowExceededError(long.length, null, max);
    return ids;
  }

  /** Embed every input: one encode call per planned batch; `stopped` is checked between calls. */
  async create(req: NormalizedEmbeddingRequest, stopped: () => boolean = () => false): Promise<CreateEmbeddingResponse> {
    const inputs = this.inputsOf(req);
    const vectors: Float32Array[] = inputs.map(() => new Float32Array(0));
    const dims = this.embedding.dimensions;
    for (const batch of planBatches(inputs.map((r) => r.length))) {
      if (stopped()) throw new AbortedError("the embeddings request was aborted");
      const { ids, mask, seq } = padBatch(batch.map((i) => inputs[i]!));
      const out = await this.encoder.encode(ids, mask, batch.length, seq);  // (batch, dims)
      batch.forEach((index, row) => { vectors[index] = out.slice(row * dims, (row + 1) * dims); });
    }
    const tokens = inputs.reduce((n, r) => n + r.length, 0);
    return {
      object: "list",
      data: vectors.map((v, index) => {
        const short = shorten(v, req.dimensions, this.embedding.normalize);
        return { object: "embedding", index, embedding: req.base64 ? float32Base64(short) : Array.from(short) };
      }),
      model: this.config.model_id,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  }
}
