// Constrained decoding (response_format): JSON, a JSON Schema, or an EBNF grammar, through the
// xgrammar engine (npm @mlc-ai/web-xgrammar, bundled as dist/xgrammar.js and loaded on first use).
// `GrammarEngine` turns the model's tokenizer.json into xgrammar's TokenizerInfo once, compiles
// each request's grammar (cached per source), and gives each generated choice a `GrammarMask`: a
// matcher whose bitmask of allowed tokens is applied to the logits before sampling (disallowed
// logits become -Infinity; by the model module where the logits are when it can, else here on the
// read-back logits) and which then accepts the sampled token. Special tokens other than
// the stop tokens are never allowed (their text would otherwise count as JSON), and JSON is
// generated compact (no free whitespace: a model cannot spin in it).
import type * as XGrammar from "@mlc-ai/web-xgrammar";

import { InvalidRequestError } from "./errors.js";

type XG = typeof XGrammar;

/** A request's output constraint (protocol.ts normalizes response_format into it). */
export type OutputConstraint =
  | { kind: "json_schema"; schema: string }
  | { kind: "grammar"; ebnf: string; root: string }
  /** An xgrammar structural tag (JSON form): tool calls (tools.ts). Its json_schema contents are
   * generated compact, as response_format's JSON is. */
  | { kind: "structural_tag"; tag: Record<string, unknown> };

/** Time spent on the grammar for one request, reported in usage.extra. */
export interface GrammarStats {
  compileSeconds: number;
  maskSeconds: number;
  maskedTokens: number;
  /** Where the mask was applied: "module" (the model module's apply_token_bitmask, where the logits
   * are: GPU or wasm memory) or "js" (the read-back logits, here). */
  maskWhere?: "module" | "js";
}

/** xgrammar's "no indent" (its JS binding's stand-in for C++'s empty optional): compact JSON. */
const COMPACT_INDENT = -1;

let loaded: Promise<XG> | null = null;

/** The xgrammar module (dist/xgrammar.js next to this bundle), imported once. */
export function loadXGrammar(url = new URL("./xgrammar.js", import.meta.url).href): Promise<XG> {
  loaded ??= import(/* @vite-ignore */ url).then((m: { default: XG }) => m.default);
  return loaded;
}

type JsonObject = Record<string, unknown>;

/** xgrammar's vocabulary kind for a tokenizer.json: its decoder says how token strings become bytes. */
export function vocabKind(tokenizerJson: JsonObject): { type: "byte_level" | "byte_fallback" | "raw"; prependSpace: boolean } {
  const decoder = tokenizerJson.decoder as JsonObject | null | undefined;
  const parts = (decoder?.type === "Sequence" ? decoder.decoders as JsonObject[] : decoder ? [decoder] : []) ?? [];
  const kinds = new Set(parts.map((d) => d.type));
  const normalizer = tokenizerJson.normalizer as JsonObject | null | undefined;
  const normalizers = (normalizer?.type === "Sequence" ? normalizer.normalizers as JsonObject[] : normalizer ? [normalizer] : []) ?? [];
  const pre = tokenizerJson.pre_tokenizer as JsonObject | null | undefined;
  const prependSpace = normalizers.some((n) => n.type === "Prepend" && n.prepend === "\u2581")
    || (pre?.type === "Metaspace" && pre.prepend_scheme !== "never" && pre.add_prefix_space !== false);
  if (kinds.has("ByteLevel")) return { type: "byte_level", prependSpace: false };
  if (kinds.has("ByteFallback")) return { type: "byte_fallback", prependSpace };
  return { type: "raw", prependSpace };
}

/** Token strings by id as xgrammar reads them: "" for ids past the tokenizer and for special
 * tokens (xgrammar never allows an empty token, except the stop tokens it is told of), but for the
 * special tokens in `keepSpecial` (those a tool-call syntax writes, e.g. Mistral's [TOOL_CALLS]). */
export function encodedVocab(tokenizerJson: JsonObject, vocabSize: number,
                             keepSpecial: ReadonlySet<string> = new Set()): string[] {
  const out = new Array<string>(vocabSize).fill("");
  const model = tokenizerJson.model as { vocab?: Record<string, number> | Array<[string, number]> } | undefined;
  const vocab = model?.vocab;
  if (Array.isArray(vocab)) vocab.forEach(([token], id) => { if (id < vocabSize) out[id] = token; });
  else for (const [token, id] of Object.entries(vocab ?? {})) if (id < vocabSize) out[id] = token;
  for (const t of (tokenizerJson.added_tokens as Array<{ id: number; content: string; special?: boolean }> | undefined) ?? []) {
    if (t.id < vocabSize) out[t.id] = t.special && !keepSpecial.has(t.content) ? "" : t.content;
  }
  return out;
}

/** In place: logits of the tokens whose bit is clear in `bitmask` become -Infinity. */
export function applyBitmask(logits: Float32Array, bitmask: Int32Array): void {
  for (let word = 0; word < bitmask.length; word++) {
    const bits = bitmask[word]!;
    if (bits === -1) continue;
    const base = word * 32;
    for (let b = 0; b < 32 && base + b < logits.length; b++) if (((bits >>> b) & 1) === 0) logits[base + b] = -Infinity;
  }
}

/** One choice's grammar state. */
export class GrammarMask {
  constructor(private readonly matcher: XGrammar.GrammarMatcher, private readonly stats: GrammarStats) {}

  /** Mask `logits` in place with the tokens the grammar allows next. */
  async apply(logits: Float32Array): Promise<void> {
    const start = performance.now();
    applyBitmask(logits, await this.matcher.getNextTokenBitmask());
    this.count(start, "js");
  }

  /** Hand the tokens the grammar allows next (xgrammar's bitmask) to `apply`, which masks the logits
   * where they are (the model module); timed as the mask. */
  async applyWith(apply: (bitmask: Int32Array) => void): Promise<void> {
    const start = performance.now();
    apply(await this.matcher.getNextTokenBitmask());
    this.count(start, "module");
  }

  private count(start: number, where: "module" | "js"): void {
    this.stats.maskSeconds += (performance.now() - start) / 1000;
    this.stats.maskedTokens++;
    this.stats.maskWhere = where;
  }

  /** Advance past `token` (one the mask allowed). */
  accept(token: number): void {
    this.matcher.acceptToken(token);
  }

  dispose(): void {
    this.matcher.dispose();
  }
}

/** The grammar engine of one model: its TokenizerInfo, compiler and compiled grammars. */
export class GrammarEngine {
  private compiler: Promise<XGrammar.GrammarCompiler> | null = null;
  private readonly compiled = new Map<string, Promise<XGrammar.CompiledGrammar>>();

  /** `keepSpecial`: special tokens the grammar may produce by their text (Tokenizer.keptSpecialTokens). */
  constructor(private readonly tokenizerJson: JsonObject, private readonly vocabSize: number,
              private readonly stopTokenIds: readonly number[], private readonly load: () => Promise<XG> = loadXGrammar,
              private readonly keepSpecial: ReadonlySet<string> = new Set()) {}

  private async getCompiler(xg: XG): Promise<XGrammar.GrammarCompiler> {
    this.compiler ??= (async () => {
      const kind = vocabKind(this.tokenizerJson);
      const info = await xg.TokenizerInfo.createTokenizerInfo(encodedVocab(this.tokenizerJson, this.vocabSize, this.keepSpecial),
        kind.type, kind.prependSpace, this.vocabSize, [...this.stopTokenIds]);
      return xg.GrammarCompiler.createGrammarCompiler(info);
    })();
    return this.compiler;
  }

  private compile(xg: XG, constraint: OutputConstraint): Promise<XGrammar.CompiledGrammar> {
    const key = JSON.stringify(constraint);
    let grammar = this.compiled.get(key);
    if (!grammar) {
      grammar = this.getCompiler(xg).then(async (compiler) => {
        if (constraint.kind === "json_schema") return compiler.compileJSONSchema(constraint.schema, false, COMPACT_INDENT, [",", ":"], true);
        if (constraint.kind === "grammar") return compiler.compileGrammar(constraint.ebnf, constraint.root);
        return compiler.compileStructuralTag(await compactJsonContents(xg, constraint.tag) as Record<string, unknown>);
      });
      grammar.catch(() => this.compiled.delete(key));
      this.compiled.set(key, grammar);
    }
    return grammar;
  }

  /** A fresh matcher for `constraint` (compiled on first use); `stats.compileSeconds` grows by the wait. */
  async mask(constraint: OutputConstraint, stats: GrammarStats): Promise<GrammarMask> {
    const start = performance.now();
    const xg = await this.load();
    let compiled: XGrammar.CompiledGrammar;
    try {
      compiled = await this.compile(xg, constraint);
    } catch (err) {
      const field = { json_schema: "response_format.json_schema.schema", grammar: "response_format.grammar",
                      structural_tag: "tools" }[constraint.kind];
      throw new InvalidRequestError(field, `the grammar engine rejects it: ${errorText(err)}`);
    }
    const matcher = await xg.GrammarMatcher.createGrammarMatcher(compiled);
    stats.compileSeconds += (performance.now() - start) / 1000;
    return new GrammarMask(matcher, stats);
  }
}

/** A structural tag with each {type: "json_schema"} content replaced by the EBNF of that schema as
 * compact JSON (xgrammar's own json_schema content allows free whitespace, in which a model can spin). */
export async function compactJsonContents(xg: XG, node: unknown): Promise<unknown> {
  if (Array.isArray(node)) return Promise.all(node.map((n) => compactJsonContents(xg, n)));
  if (!node || typeof node !== "object") return node;
  const obj = node as JsonObject;
  if (obj.type === "json_schema" && "json_schema" in obj) {
    const grammar = await xg.Grammar.fromJSONSchema(JSON.stringify(obj.json_schema), false, COMPACT_INDENT, [",", ":"], true);
    try {
      return { type: "grammar", grammar: grammar.toString() };
    } finally {
      grammar.dispose();
    }
  }
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(obj)) out[key] = await compactJsonContents(xg, value);
  return out;
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === "string" ? err : JSON.stringify(err);
}
