// OpenAI function calling: the request's `tools` / `tool_choice` / `parallel_tool_calls` checked
// and normalized, the grammar that constrains the output to free text or calls of the syntax the
// chat template uses (an xgrammar structural tag: each call's name is one of the tools and its
// arguments match that function's JSON Schema), and `ToolCallStream`, which turns a choice's
// generated text into content deltas and OpenAI `delta.tool_calls` (a call's id and name first,
// then its arguments as a JSON string) as the text becomes final.
import { InvalidRequestError, ToolsUnsupportedError } from "./errors.js";
import type { ChatCompletionChunk, FinishReason } from "./protocol.js";
import { callFrame, callHead, detectToolSyntax, findCall, parseCallBody, type ToolSyntax } from "./tool_syntax.js";

/** A tool as OpenAI's request gives it. */
export interface FunctionTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

/** OpenAI's tool_choice. */
export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

/** An assistant message's call, as the request and the response carry it (arguments: a JSON string). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** One call's piece of a streamed chunk (`delta.tool_calls[i]`). */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function?: { name?: string; arguments?: string };
}

/** The request's tools, normalized: `choice` is "auto", "none", "required" or a function name. */
export interface ToolRequest {
  tools: FunctionTool[];
  choice: "auto" | "none" | "required" | { name: string };
  parallel: boolean;
}

function bad(field: string, message: string): never {
  throw new InvalidRequestError(field, message);
}

function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** tools / tool_choice / parallel_tool_calls of a request, or null when it has no tools (an empty
 * list is none). tool_choice without tools is an invalid request, except "none" and "auto". */
export function normalizeTools(req: Record<string, unknown>): ToolRequest | null {
  const list = req.tools;
  if (given(list) && !Array.isArray(list)) bad("tools", "must be an array of {type: \"function\", function}");
  const tools = ((list as unknown[] | undefined) ?? []).map((t, i) => normalizeTool(t, `tools[${i}]`));
  const names = new Set<string>();
  tools.forEach((t, i) => {
    if (names.has(t.function.name)) bad(`tools[${i}].function.name`, "is given twice");
    names.add(t.function.name);
  });
  if (given(req.parallel_tool_calls) && typeof req.parallel_tool_calls !== "boolean") bad("parallel_tool_calls", "must be a boolean");
  const choice = normalizeChoice(req.tool_choice, names);
  if (!tools.length) {
    if (choice !== "auto" && choice !== "none") bad("tool_choice", "needs tools");
    return null;
  }
  return { tools, choice, parallel: req.parallel_tool_calls !== false };
}

function normalizeTool(tool: unknown, field: string): FunctionTool {
  if (!isObject(tool) || tool.type !== "function") bad(`${field}.type`, "must be \"function\"");
  const fn = tool.function;
  if (!isObject(fn)) bad(`${field}.function`, "must be {name, description?, parameters?, strict?}");
  if (typeof fn.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(fn.name)) {
    bad(`${field}.function.name`, "must be 1-64 letters, digits, _ or -");
  }
  if (given(fn.description) && typeof fn.description !== "string") bad(`${field}.function.description`, "must be a string");
  if (given(fn.parameters) && !isObject(fn.parameters)) bad(`${field}.function.parameters`, "must be a JSON Schema object");
  if (given(fn.strict) && typeof fn.strict !== "boolean") bad(`${field}.function.strict`, "must be a boolean");
  return { type: "function", function: { ...fn, name: fn.name } };
}

function normalizeChoice(choice: unknown, names: Set<string>): ToolRequest["choice"] {
  if (!given(choice)) return "auto";
  if (choice === "auto" || choice === "none" || choice === "required") return choice;
  if (!isObject(choice) || choice.type !== "function" || !isObject(choice.function) || typeof choice.function.name !== "string") {
    return bad("tool_choice", "must be \"auto\", \"none\", \"required\" or {type: \"function\", function: {name}}");
  }
  if (!names.has(choice.function.name)) bad("tool_choice.function.name", "names no tool of the request");
  return { name: choice.function.name };
}

/** The syntax of a chat template that takes tools; ToolsUnsupportedError when it never reads its
 * `tools` variable or writes calls in no syntax of the table (tool_syntax.ts). */
export function toolSyntaxFor(template: string | null): ToolSyntax {
  if (!template || !/\btools\b/.test(template)) {
    throw new ToolsUnsupportedError("the model's chat template does not take a tools list", "no-tools-variable");
  }
  const syntax = detectToolSyntax(template);
  if (!syntax) throw new ToolsUnsupportedError("the model's chat template writes tool calls in no known syntax", "unknown-syntax");
  return syntax;
}

/** A structural tag (xgrammar's JSON form) for the calls `req` allows, in `syntax`; null for
 * tool_choice "none" (free text). "auto": free text in which the trigger starts a call; "required"
 * or a named function: only calls. Without parallel_tool_calls at most one call. Arguments with no
 * `parameters` schema are any JSON object. */
export function toolGrammar(syntax: ToolSyntax, req: ToolRequest): Record<string, unknown> | null {
  if (req.choice === "none") return null;
  const choice = req.choice;
  const allowed = typeof choice === "object" ? req.tools.filter((t) => t.function.name === choice.name) : req.tools;
  const schema = (t: FunctionTool) => ({ type: "json_schema", json_schema: t.function.parameters ?? { type: "object" } });
  if (syntax.list) {
    // one block holds every call, as a JSON list (Mistral: [TOOL_CALLS][{call}, {call}])
    const calls = allowed.map((t) => ({ type: "tag", begin: callHead(syntax, t.function.name), end: "}", content: schema(t) }));
    const block = { type: "tag", begin: syntax.open + syntax.pad + "[", end: "]" + syntax.pad + syntax.close,
                    content: { type: "tags_with_separator", tags: calls, separator: ", ", at_least_one: true,
                               stop_after_first: !req.parallel } };
    const format = choice === "auto" ? { type: "triggered_tags", triggers: [syntax.trigger], tags: [block], stop_after_first: true }
      : block;
    return { type: "structural_tag", format };
  }
  const tags = allowed.map((t) => {
    const { begin, end } = callFrame(syntax, t.function.name);
    return { type: "tag", begin, end, content: schema(t) };
  });
  const format = choice === "auto"
    ? { type: "triggered_tags", triggers: [syntax.trigger], tags, stop_after_first: !req.parallel }
    : { type: "tags_with_separator", tags, separator: syntax.separator, at_least_one: true, stop_after_first: !req.parallel };
  return { type: "structural_tag", format };
}

/** "call_" + 24 random alphanumerics. */
export function makeToolCallId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  return "call_" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/** What a piece of generated text turned into. */
export interface ToolStreamOutput {
  content: string;
  toolCalls: ToolCallDelta[];
}

/**
 * One choice's text split into content and tool calls. push() takes generated text and returns
 * what is final: content up to a possible start of a call (a prefix of the trigger is held back),
 * and each complete call as two deltas (index, id, type and name with empty arguments; then the
 * arguments). Text that starts like a call but is not one is content after all. Whitespace-only
 * content is held until more content follows, and dropped at the end once a call was made.
 */
export class ToolCallStream {
  private buffer = "";
  private inCall = false;
  private heldSpace = "";
  private calls = 0;

  constructor(private readonly syntax: ToolSyntax, private readonly newId: () => string = makeToolCallId) {}

  /** Calls completed so far. */
  get callCount(): number {
    return this.calls;
  }

  push(text: string): ToolStreamOutput {
    this.buffer += text;
    const out: ToolStreamOutput = { content: "", toolCalls: [] };
    for (;;) {
      if (!this.inCall) {
        const at = this.buffer.indexOf(this.syntax.trigger);
        if (at < 0) {
          const keep = heldPrefix(this.buffer, this.syntax.trigger);
          this.addContent(out, this.buffer.slice(0, this.buffer.length - keep));
          this.buffer = this.buffer.slice(this.buffer.length - keep);
          return out;
        }
        this.addContent(out, this.buffer.slice(0, at));
        this.buffer = this.buffer.slice(at);
        this.inCall = true;
      }
      const found = findCall(this.syntax, this.buffer);
      if (found === "incomplete") return out;
      const calls = found === "malformed" ? null : parseCallBody(this.syntax, found.body);
      if (found === "malformed" || !calls) {
        // not a call: its first character is content, the rest is looked at again
        this.addContent(out, this.buffer.slice(0, 1));
        this.buffer = this.buffer.slice(1);
      } else {
        for (const call of calls) out.toolCalls.push(...this.callDeltas(call.name, call.arguments));
        this.buffer = this.buffer.slice(found.end);
      }
      this.inCall = false;
    }
  }

  /** The end of the text: what was held back is content (an unfinished call included). */
  flush(): ToolStreamOutput {
    const out: ToolStreamOutput = { content: "", toolCalls: [] };
    this.addContent(out, this.buffer);
    this.buffer = "";
    this.inCall = false;
    if (!this.calls) out.content += this.heldSpace;
    this.heldSpace = "";
    return out;
  }

  private addContent(out: ToolStreamOutput, text: string): void {
    if (!text) return;
    if (!text.trim()) {
      this.heldSpace += text;
      return;
    }
    out.content += this.heldSpace + text;
    this.heldSpace = "";
  }

  private callDeltas(name: string, args: Record<string, unknown>): ToolCallDelta[] {
    const index = this.calls++;
    return [{ index, id: this.newId(), type: "function", function: { name, arguments: "" } },
            { index, function: { arguments: JSON.stringify(args) } }];
  }
}

/** The length of the longest end of `text` that is a proper prefix of `trigger`. */
function heldPrefix(text: string, trigger: string): number {
  for (let n = Math.min(text.length, trigger.length - 1); n > 0; n--) {
    if (trigger.startsWith(text.slice(text.length - n))) return n;
  }
  return 0;
}

/** Fold streamed tool-call deltas into whole calls (the non-streaming response's `tool_calls`). */
export function mergeToolCallDeltas(calls: ToolCall[], deltas: readonly ToolCallDelta[]): void {
  for (const d of deltas) {
    const call = calls[d.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
    if (d.id) call.id = d.id;
    if (d.function?.name) call.function.name += d.function.name;
    if (d.function?.arguments) call.function.arguments += d.function.arguments;
  }
}

/** An assistant message's call as chat templates read it (HF's shape: arguments as an object). */
export interface TemplateToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: Record<string, unknown> };
}

/** An assistant message's `tool_calls` (OpenAI's: arguments as a JSON string) in HF's template shape. */
export function normalizeToolCalls(value: unknown, field: string): TemplateToolCall[] {
  if (!Array.isArray(value)) bad(field, "must be an array of tool calls");
  return value.map((c, i) => {
    const f = `${field}[${i}]`;
    if (!isObject(c) || (given(c.type) && c.type !== "function")) bad(`${f}.type`, "must be \"function\"");
    if (typeof c.id !== "string") bad(`${f}.id`, "must be a string");
    const fn = c.function;
    if (!isObject(fn) || typeof fn.name !== "string") bad(`${f}.function.name`, "must be a string");
    let args: unknown = fn.arguments ?? {};
    if (typeof args === "string") {
      try {
        args = JSON.parse(args || "{}");
      } catch {
        bad(`${f}.function.arguments`, "must be a JSON object (as a string)");
      }
    }
    if (!isObject(args)) bad(`${f}.function.arguments`, "must be a JSON object (as a string)");
    return { id: c.id, type: "function", function: { name: fn.name, arguments: args } };
  });
}

/**
 * One request's tool calls, chunk by chunk: wrap() turns the pipeline's content chunks of each
 * choice into content and `delta.tool_calls` chunks (ToolCallStream), flushing before a choice's
 * finish chunk, whose finish_reason becomes "tool_calls" when the choice called a tool and stopped.
 */
export class ToolCallChunks {
  /** The grammar of the calls (null: tool_choice "none"). */
  readonly tag: Record<string, unknown> | null;
  private readonly streams = new Map<number, ToolCallStream>();

  constructor(private readonly syntax: ToolSyntax, req: ToolRequest, private readonly newId: () => string = makeToolCallId) {
    this.tag = toolGrammar(syntax, req);
  }

  private stream(index: number): ToolCallStream {
    let s = this.streams.get(index);
    if (!s) this.streams.set(index, s = new ToolCallStream(this.syntax, this.newId));
    return s;
  }

  /** `emit` behind the tool-call split. */
  wrap(emit: (chunk: ChatCompletionChunk) => void): (chunk: ChatCompletionChunk) => void {
    return (chunk) => {
      const choice = chunk.choices[0];
      if (!choice || choice.delta.role) return emit(chunk);
      const stream = this.stream(choice.index);
      const { content, ...delta } = choice.delta;
      const out = content ? stream.push(content) : { content: "", toolCalls: [] };
      const withText = (o: ToolStreamOutput, finish: FinishReason | null, logprobs: typeof choice.logprobs) => emit({
        ...chunk,
        choices: [{ ...choice, logprobs, finish_reason: finish,
                    delta: { ...delta, ...(o.content ? { content: o.content } : {}),
                             ...(o.toolCalls.length ? { tool_calls: o.toolCalls } : {}) } }],
      });
      if (choice.finish_reason === null) {
        if (out.content || out.toolCalls.length || choice.logprobs) withText(out, null, choice.logprobs);
        return;
      }
      const rest = stream.flush();
      const last = { content: out.content + rest.content, toolCalls: [...out.toolCalls, ...rest.toolCalls] };
      if (last.content || last.toolCalls.length) withText(last, null, null);
      withText({ content: "", toolCalls: [] }, this.finishReason(choice.index, choice.finish_reason), choice.logprobs);
    };
  }

  /** A choice's finish reason: "tool_calls" for a stop after a call. */
  finishReason(index: number, finish: FinishReason): FinishReason {
    return finish === "stop" && (this.streams.get(index)?.callCount ?? 0) > 0 ? "tool_calls" : finish;
  }
}
