// Tool-call syntaxes as data: how a model writes a function call, keyed by what its chat template
// contains (never by model name). Each entry says which template text marks it, the text that opens
// a call in the output, the JSON body (one call object, or a list of them) with its name and
// arguments keys, and the text that closes it. `detectToolSyntax` picks the entry for a template;
// `findCall` cuts one complete call out of generated text and `parseCallBody` reads its calls.

/** One syntax of the table. */
export interface ToolSyntax {
  /** Stable name (reported in errors and tests). */
  id: string;
  /** The chat template shows this syntax when it matches this. */
  marker: RegExp;
  /** Output text whose appearance starts a call (the grammar's trigger). */
  trigger: string;
  /** Text before the JSON body of a call ("" when the trigger is the body's own beginning). */
  open: string;
  /** Text after the JSON body ("" when the body ends the call). */
  close: string;
  /** The JSON body is a list of call objects (else one call object). */
  list: boolean;
  /** The call object's key for the function's arguments. */
  argumentsKey: "arguments" | "parameters";
  /** What the grammar writes between `open` and the body, and between the body and `close`. */
  pad: string;
  /** What the grammar writes between two calls (parallel_tool_calls). */
  separator: string;
}

/** The syntaxes known, the first match wins (a template may mention several). */
export const TOOL_SYNTAXES: readonly ToolSyntax[] = [
  // Hermes / Qwen2 / Qwen2.5: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
  { id: "hermes", marker: /<tool_call>/, trigger: "<tool_call>", open: "<tool_call>", close: "</tool_call>",
    list: false, argumentsKey: "arguments", pad: "\n", separator: "\n" },
  // Mistral: [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
  { id: "mistral", marker: /\[TOOL_CALLS\]/, trigger: "[TOOL_CALLS]", open: "[TOOL_CALLS]", close: "",
    list: true, argumentsKey: "arguments", pad: "", separator: "" },
  // Llama 3.1 / 3.2 / 3.3 JSON tool calling: a bare {"name": ..., "parameters": {...}} as the reply
  { id: "llama3_json", marker: /"parameters"\s*:\s*dictionary of argument name/, trigger: "{\"name\"", open: "",
    close: "", list: false, argumentsKey: "parameters", pad: "", separator: "\n" },
];

/** The syntax a chat template uses, or null when it shows none of the table's. */
export function detectToolSyntax(template: string): ToolSyntax | null {
  return TOOL_SYNTAXES.find((s) => s.marker.test(template)) ?? null;
}

/** A call as read from the output: the function name and its arguments object. */
export interface ParsedCall {
  name: string;
  arguments: Record<string, unknown>;
}

/** Index just past the JSON value (object or array) starting at `text[start]`, or -1 while it is
 * incomplete. Strings and escapes are skipped, brackets counted. */
export function jsonValueEnd(text: string, start: number): number {
  let depth = 0, inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === "\"") inString = false;
    } else if (c === "\"") {
      inString = true;
    } else if (c === "{" || c === "[") {
      depth++;
    } else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && /\s/.test(text[i]!)) i++;
  return i;
}

/** Where one call (starting at `text[0]`, which begins with the trigger) ends, as
 * {end, body}: "incomplete" while more text could complete it, "malformed" when it cannot. */
export function findCall(syntax: ToolSyntax, text: string): { end: number; body: string } | "incomplete" | "malformed" {
  if (!text.startsWith(syntax.open)) return syntax.open.startsWith(text) ? "incomplete" : "malformed";
  const bodyStart = skipSpace(text, syntax.open.length);
  if (bodyStart >= text.length) return "incomplete";
  if (text[bodyStart] !== (syntax.list ? "[" : "{")) return "malformed";
  const bodyEnd = jsonValueEnd(text, bodyStart);
  if (bodyEnd < 0) return "incomplete";
  const body = text.slice(bodyStart, bodyEnd);
  if (!syntax.close) return { end: bodyEnd, body };
  const closeStart = skipSpace(text, bodyEnd);
  const rest = text.slice(closeStart, closeStart + syntax.close.length);
  if (rest === syntax.close) return { end: closeStart + syntax.close.length, body };
  return syntax.close.startsWith(rest) ? "incomplete" : "malformed";
}

/** The calls in a call's JSON body, or null when it is not JSON of the syntax's shape. */
export function parseCallBody(syntax: ToolSyntax, body: string): ParsedCall[] | null {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return null;
  }
  const items = syntax.list ? value : [value];
  if (!Array.isArray(items)) return null;
  const calls: ParsedCall[] = [];
  for (const item of items) {
    if (!item || typeof item !== "object" || Array.isArray(item)) return null;
    const { name } = item as Record<string, unknown>;
    const args = (item as Record<string, unknown>)[syntax.argumentsKey] ?? {};
    if (typeof name !== "string" || !args || typeof args !== "object" || Array.isArray(args)) return null;
    calls.push({ name, arguments: args as Record<string, unknown> });
  }
  return calls;
}

/** The text of one call of `name` as the grammar writes it, around its arguments. */
/** A call object's text up to its arguments: `{"name": "f", "arguments": `. */
export function callHead(syntax: ToolSyntax, name: string): string {
  return `{"name": ${JSON.stringify(name)}, "${syntax.argumentsKey}": `;
}

export function callFrame(syntax: ToolSyntax, name: string): { begin: string; end: string } {
  const head = callHead(syntax, name);
  return {
    begin: syntax.open + syntax.pad + (syntax.list ? "[" : "") + head,
    end: "}" + (syntax.list ? "]" : "") + syntax.pad + syntax.close,
  };
}
