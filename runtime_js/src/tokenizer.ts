// Tokenizer: tokenizer.json through @huggingface/tokenizers, chat template through
// @huggingface/jinja, and incremental detokenization for streaming.
//
// Encoding never adds special tokens beyond those in the text (the rendered chat template carries
// its own); a BOS id is prepended only when the chat-config says add_bos_token and the text does
// not already start with it.

import { Template } from "@huggingface/jinja";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";

import { InvalidRequestError, ModelLoadError } from "./errors.js";
import { detectToolSyntax } from "./tool_syntax.js";
import type { NormalizedMessage } from "./protocol.js";

type JsonObject = Record<string, unknown>;

/** The chat-config fields the tokenizer uses. */
export interface TokenizerChatConfig {
  chat_template?: string | null;
  bos_token_id?: number | null;
  add_bos_token?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (e.g. <|im_end|>) from the text. Default false. */
  skipSpecial?: boolean;
}

function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

function pickTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {  // [{name, template}, ...] form of tokenizer_config.json
    const named = value as Array<{ name?: unknown; template?: unknown }>;
    const t = named.find((x) => x?.name === "default") ?? named[0];
    return typeof t?.template === "string" ? t.template : null;
  }
  return null;
}

/** GPT-2's byte-level alphabet inverted: the character standing for each byte -> the byte. */
const BYTE_OF_CHAR: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map.set(String.fromCharCode(printable ? b : 256 + extra++), b);
  }
  return map;
})();

export class Tokenizer {
  private readonly hf: HFTokenizer;
  private readonly config: JsonObject;
  private readonly chatConfig: TokenizerChatConfig;
  private template: Template | null = null;
  private readonly specialIds: Set<number>;
  /** Special tokens whose text a tool call starts or ends with in the chat template's syntax
   * (Mistral's [TOOL_CALLS]): decoded as text even when special tokens are skipped, so the call
   * parser sees them, and allowed by the grammar. */
  readonly keptSpecialTokens: ReadonlySet<string>;
  private readonly keptSpecialIds: Set<number>;
  /** The model's unknown-token id (tokenizer.json `model.unk_token`), if it has one. */
  private readonly unkId: number | undefined;
  /** Strings passed to the chat template besides messages (bos_token, eos_token, ...). */
  private readonly templateTokens: Record<string, string>;

  /**
   * @param tokenizerJson parsed tokenizer.json
   * @param tokenizerConfig parsed tokenizer_config.json (or null)
   * @param chatConfig chat-config.json (chat_template, bos_token_id, add_bos_token)
   */
  constructor(tokenizerJson: unknown, tokenizerConfig: unknown = null, chatConfig: TokenizerChatConfig = {}) {
    if (!tokenizerJson || typeof tokenizerJson !== "object") {
      throw new ModelLoadError("tokenizer.json", "not a JSON object", "rebuild the model folder");
    }
    this.config = (tokenizerConfig && typeof tokenizerConfig === "object" ? tokenizerConfig : {}) as JsonObject;
    this.chatConfig = chatConfig;
    try {
      this.hf = new HFTokenizer(tokenizerJson, {
        ...this.config,
        // the Rust `tokenizers` library (and the Python build) never cleans up spaces
        clean_up_tokenization_spaces: this.config.clean_up_tokenization_spaces ?? false,
      });
    } catch (err) {
      throw new ModelLoadError("tokenizer.json", `cannot load the tokenizer (${(err as Error).message})`,
        "rebuild the model folder; the tokenizer type may be unsupported", { cause: err });
    }
    const unk = (tokenizerJson as { model?: { unk_token?: unknown } }).model?.unk_token;
    this.unkId = typeof unk === "string" ? this.hf.token_to_id(unk) : undefined;
    const template = this.chatTemplate;
    const syntax = template && /\btools\b/.test(template) ? detectToolSyntax(template) : null;
    const syntaxTexts = new Set(syntax ? [syntax.trigger, syntax.open, syntax.close] : []);
    this.specialIds = new Set();
    this.keptSpecialIds = new Set();
    const kept = new Set<string>();
    for (const [id, tok] of this.hf.get_added_tokens_decoder()) {
      if (!tok.special) continue;
      this.specialIds.add(id);
      if (syntaxTexts.has(tok.content)) {
        this.keptSpecialIds.add(id);
        kept.add(tok.content);
      }
    }
    this.keptSpecialTokens = kept;
    this.templateTokens = {};
    for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      const text = tokenText(this.config[key]);
      if (text !== undefined) this.templateTokens[key] = text;
    }
  }

  /** Token ids of `text`; no special tokens are added (special-token text in `text` maps to its id).
   * Words a vocabulary cannot represent are its unknown token, as the Rust library gives them
   * (@huggingface/tokenizers leaves a word-level model's unknown words as undefined ids); without
   * an unknown token that is an InvalidRequestError. */
  encode(text: string): number[] {
    return this.known(this.hf.encode(text, { add_special_tokens: false }).ids);
  }

  /** Token ids of `text` as one model input: framed by the tokenizer's post-processor (BERT's
   * [CLS] .. [SEP]); unknown words as in `encode`. */
  encodeInput(text: string): number[] {
    return this.known(this.hf.encode(text, { add_special_tokens: true }).ids);
  }

  /** `ids` with the unknown token for each id the library left undefined. */
  private known(ids: number[]): number[] {
    if (ids.every((id) => Number.isInteger(id))) return ids;
    const unk = this.unkId;
    if (unk === undefined) {
      throw new InvalidRequestError("messages", "the text has words the model's vocabulary cannot represent");
    }
    return ids.map((id) => (Number.isInteger(id) ? id : unk));
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids.length === 0) return "";  // the library rejects an empty list
    if (options.skipSpecial && this.keptSpecialIds.size) {
      const kept = Array.from(ids).filter((id) => !this.specialIds.has(id) || this.keptSpecialIds.has(id));
      return kept.length ? this.hf.decode(kept, { skip_special_tokens: false }) : "";
    }
    return this.hf.decode(Array.from(ids), { skip_special_tokens: options.skipSpecial ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /**
   * The bytes token `id` stands for: the UTF-8 of its text, or, for a token that is only part of a
   * character (its text decodes to U+FFFD), its raw bytes: a SentencePiece byte token (`<0xE2>`) or
   * a byte-level BPE token (GPT-2's byte-to-character table inverted). null for an unknown id.
   */
  tokenBytes(id: number): number[] | null {
    const piece = this.hf.id_to_token(id);
    if (piece === undefined) return null;
    const text = this.decode([id]);
    if (!text.includes(REPLACEMENT)) return Array.from(new TextEncoder().encode(text));
    const byteToken = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byteToken) return [parseInt(byteToken[1]!, 16)];
    const bytes = Array.from(piece, (ch) => BYTE_OF_CHAR.get(ch));
    return bytes.every((b) => b !== undefined) ? bytes : Array.from(new TextEncoder().encode(text));
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** The chat template source (chat-config first, then tokenizer_config.json). */
  get chatTemplate(): string | null {
    return pickTemplate(this.chatConfig.chat_template) ?? pickTemplate(this.config.chat_template);
  }

  /** Render the conversation with the chat template (add_generation_prompt = true by default).
   * `tools` becomes the template's `tools` variable (as HF's apply_chat_template(tools=...) passes
   * it); messages keep their tool_calls / tool_call_id. */
  applyChatTemplate(messages: NormalizedMessage[],
                    options: { addGenerationPrompt?: boolean; tools?: readonly unknown[] | null } = {}): string {
    if (!this.template) {
      const source = this.chatTemplate;
      if (!source) {
        throw new ModelLoadError("chat-config.json", "the model has no chat_template",
          "use an instruction-tuned model, or add a chat_template to tokenizer_config.json and rebuild");
      }
      try {
        this.template = new Template(source);
      } catch (err) {
        throw new ModelLoadError("chat-config.json", `the chat_template does not parse (${(err as Error).message})`,
          "fix the chat_template in tokenizer_config.json and rebuild", { cause: err });
      }
    }
    return this.template.render({
      ...this.templateTokens,
      messages: messages.map((m) => ({
        role: m.role, content: m.content,
        ...(m.tool_calls ? { tool_calls: m.tool_calls } : {}),
        ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
      })),
      add_generation_prompt: options.addGenerationPrompt ?? true,
      ...(options.tools ? { tools: options.tools } : {}),
    });
  }

  /** Token ids of a rendered prompt, with a BOS prepended when add_bos_token asks for one. */
  encodePrompt(prompt: string): number[] {
    const ids = this.encode(prompt);
    const bos = this.chatConfig.bos_token_id;
    if (this.chatConfig.add_bos_token && typeof bos === "number" && ids[0] !== bos) ids.unshift(bos);
    return ids;
  }

  /** Render the chat template (with `tools`, when given) and encode it: the prompt token ids for a conversation. */
  encodeChat(messages: NormalizedMessage[], tools?: readonly unknown[] | null): { prompt: string; ids: number[] } {
    const prompt = this.applyChatTemplate(messages, { tools: tools ?? null });
    return { prompt, ids: this.encodePrompt(prompt) };
  }

  /** A detokenizer for one stream of generated ids. */
  streamDecoder(options: StreamDecoderOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }
}

export interface StreamDecoderOptions extends DecodeOptions {
  /**
   * A few ids that precede the stream (e.g. the prompt's last 4): decoded as context only, so
   * that tokenizers which drop a leading space at the start of a text get the first token right.
   */
  context?: ArrayLike<number>;
}

const REPLACEMENT = "\uFFFD";

/**
 * Incremental detokenization: push generated ids one at a time, get back only complete new text.
 * A token that ends inside a UTF-8 sequence (byte-level BPE pieces of an emoji, say) yields ""
 * until the sequence completes. flush() at the end returns whatever is still held back.
 */
export class StreamDecoder {
  private readonly tokenizer: Pick<Tokenizer, "decode">;
  private readonly options: DecodeOptions;
  private readonly ids: number[];
  /** Start of the window decoded each step. */
  private prefix = 0;
  /** End of the text already emitted (as an index into ids). */
  private read: number;

  constructor(tokenizer: Pick<Tokenizer, "decode">, options: StreamDecoderOptions = {}) {
    this.tokenizer = tokenizer;
    this.options = { skipSpecial: options.skipSpecial ?? false };
    this.ids = Array.from(options.context ?? []);
    this.read = this.ids.length;
  }

  /** Add one id (or several) and return the text that became complete. */
  push(id: number | ArrayLike<number>): string {
    if (typeof id === "number") this.ids.push(id);
    else for (let i = 0; i < id.length; i++) this.ids.push(id[i]!);
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read), this.options);
    const after = this.tokenizer.decode(this.ids.slice(this.prefix), this.options);
    if (after.length > before.length && !after.endsWith(REPLACEMENT)) {
      this.prefix = this.read;
      this.read = this.ids.length;
      return after.slice(before.length);
    }
    return "";
  }

  /** End of stream: the text still held back (may end in U+FFFD if the bytes never completed). */
  flush(): string {
    if (this.read === this.ids.length) return "";
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read), this.options);
    const after = this.tokenizer.decode(this.ids.slice(this.prefix), this.options);
    this.prefix = this.read = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : "";
  }
}
