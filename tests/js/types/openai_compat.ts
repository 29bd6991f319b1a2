// Type-level proof that webbuild's request and response types are OpenAI's shape: compiled (never
// run) by `npm run typecheck:openai` (part of `npm run check:ts`) against the `openai` npm package's
// own types. webbuild's documented extensions are taken out of the comparison, nothing else:
// finish_reason "abort" (a stopped generation, as in web-llm), the `repetition_penalty` request
// field and the `grammar` response_format.
import type OpenAI from "openai";
import type { ChatCompletionCreateParamsBase } from "openai/resources/chat/completions/completions";
import type { CompletionCreateParamsBase } from "openai/resources/completions";

import type {
  ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Completion, CompletionChunk, CompletionRequest,
  CreateEmbeddingResponse, Embedding, EmbeddingCreateParams, FunctionTool, ToolCall, ToolCallDelta, ToolChoice,
} from "../../../runtime_js/src/index.js";
import type { ResponseFormat } from "../../../runtime_js/src/protocol.js";

type Assert<T extends true> = T;
type Extends<A, B> = [A] extends [B] ? true : false;
/** `T` with finish_reason "abort" read as "stop" (everything else unchanged). */
type AbortAsStop<T> = T extends "abort" ? "stop" : T extends object ? { [K in keyof T]: AbortAsStop<T[K]> } : T;
/** The declared keys of `T` (its index signature left out), less `Drop`. */
type KnownKeys<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };
type Known<T, Drop extends PropertyKey = never> = Pick<T, Exclude<KnownKeys<T>, Drop>>;

// Responses: what webbuild returns is what an app typed for OpenAI reads.
export type ChatCompletionIsOpenAIs = Assert<Extends<AbortAsStop<ChatCompletion>, OpenAI.Chat.Completions.ChatCompletion>>;
export type ChunkIsOpenAIs = Assert<Extends<AbortAsStop<ChatCompletionChunk>, OpenAI.Chat.Completions.ChatCompletionChunk>>;
export type CompletionIsOpenAIs = Assert<Extends<AbortAsStop<Completion>, OpenAI.Completions.Completion>>;
export type CompletionChunkIsOpenAIs = Assert<Extends<
  AbortAsStop<Omit<CompletionChunk, "choices">>, Omit<OpenAI.Completions.Completion, "choices">>>;

// Requests: a request webbuild accepts is a valid OpenAI request.
export type ChatRequestIsOpenAIs = Assert<Extends<
  Known<ChatCompletionRequest, "repetition_penalty" | "response_format"> & { model: string },
  Omit<ChatCompletionCreateParamsBase, "response_format">>>;
export type ResponseFormatIsOpenAIs = Assert<Extends<
  Exclude<ResponseFormat, { type: "grammar" }>, NonNullable<ChatCompletionCreateParamsBase["response_format"]>>>;
export type CompletionRequestIsOpenAIs = Assert<Extends<
  Known<CompletionRequest, "repetition_penalty"> & { model: string }, CompletionCreateParamsBase>>;

// Tools: the request's tools and tool_choice, an assistant message with tool_calls and a tool message
// are OpenAI's; a reply's tool_calls and a chunk's delta.tool_calls are what OpenAI returns.
export type ToolIsOpenAIs = Assert<Extends<FunctionTool, OpenAI.Chat.Completions.ChatCompletionFunctionTool>>;
export type ToolChoiceIsOpenAIs = Assert<Extends<ToolChoice, OpenAI.Chat.Completions.ChatCompletionToolChoiceOption>>;
export type MessageIsOpenAIs = Assert<Extends<ChatMessage, OpenAI.Chat.Completions.ChatCompletionMessageParam>>;
export type ToolCallIsOpenAIs = Assert<Extends<ToolCall, OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall>>;
export type ReplyToolCallsAreOpenAIs = Assert<Extends<
  ChatCompletion["choices"][number]["message"]["tool_calls"], OpenAI.Chat.Completions.ChatCompletionMessage["tool_calls"]>>;
export type DeltaToolCallsAreOpenAIs = Assert<Extends<
  ToolCallDelta, OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall>>;
export type ToolsFinishIsOpenAIs = Assert<Extends<"tool_calls", ChatCompletion["choices"][number]["finish_reason"]>>;

// Embeddings: a request webbuild accepts is a valid OpenAI request; the response in the default
// "float" encoding is OpenAI's (with encoding_format "base64" each embedding is the base64 string
// OpenAI's API sends, which its types leave out).
export type EmbeddingRequestIsOpenAIs = Assert<Extends<
  Known<EmbeddingCreateParams> & { model: string }, OpenAI.EmbeddingCreateParams>>;
type FloatEmbeddings<T> = { [K in keyof T]: K extends "data" ? (Omit<Embedding, "embedding"> & { embedding: number[] })[] : T[K] };
export type EmbeddingResponseIsOpenAIs = Assert<Extends<FloatEmbeddings<CreateEmbeddingResponse>, OpenAI.CreateEmbeddingResponse>>;
export type EmbeddingFormatsAreOpenAIs = Assert<Extends<
  NonNullable<EmbeddingCreateParams["encoding_format"]>, NonNullable<OpenAI.EmbeddingCreateParams["encoding_format"]>>>;
