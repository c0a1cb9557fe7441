/**
 * The OpenAI-compatible request bodies the proxy accepts, checked before anything reaches an engine:
 * a body that is not JSON, or lacks what the endpoint needs, is a 400 here (an engine would refuse it
 * too, but only after it took a connection, a routing decision and in-flight accounting).
 *
 * What the router needs from a body: the model, the prompt (text to tokenize, or token ids the client
 * sent), the expected output length (max_tokens), and whether to stream. Everything else passes through
 * to the engine untouched, except `cache_salt`, which the proxy sets from the authenticated tenant.
 */
import { chatPromptText, type ChatMessage } from '../tokenize/index.js';
import { DystroError } from '../errors.js';

export type Endpoint = 'completions' | 'chat';

export interface ParsedRequest {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  /** max_tokens (or max_completion_tokens) × n × prompts, when given. */
  expectedOutputTokens?: number;
  /** Text to tokenize, or the token ids of the (first) prompt. */
  prompt: string | Uint32Array;
  /** The parsed body (forwarded re-serialized only when the proxy has to change it). */
  body: Record<string, unknown>;
}

export interface ApiError {
  status: number;
  message: string;
  type: string;
  param?: string | null;
  code?: string | null;
}

export type ParseResult = { ok: true; request: ParsedRequest } | { ok: false; error: ApiError };

/** An OpenAI-style error body: { error: { message, type, param, code } }. */
export function errorBody(e: ApiError): string {
  return JSON.stringify({ error: { message: e.message, type: e.type, param: e.param ?? null, code: e.code ?? null } });
}

const invalid = (message: string, param: string | null = null, code: string | null = null): { ok: false; error: ApiError } => ({
  ok: false,
  error: { status: 400, message, type: 'invalid_request_error', param, code },
});

const MAX_TOKEN_ID = 0xffffffff;

function isTokenArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t) && t >= 0 && t <= MAX_TOKEN_ID);
}

function optionalCount(body: Record<string, unknown>, name: string, min: number): number | undefined | null {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (!Number.isInteger(v) || (v as number) < min) return null;
  return v as number;
}

/** Parses and checks a request body for an endpoint. Never throws. */
export function parseRequest(endpoint: Endpoint, raw: Buffer): ParseResult {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    return invalid('The request body is not valid JSON.', null, 'invalid_json');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return invalid('The request body must be a JSON object.');
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model.length === 0 || b.model.length > 256) return invalid('`model` must be a non-empty string.', 'model');
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') return invalid('`stream` must be a boolean.', 'stream');
  const n = optionalCount(b, 'n', 1);
  if (n === null) return invalid('`n` must be an integer ≥ 1.', 'n');
  const maxName = endpoint === 'chat' && b.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = optionalCount(b, maxName, 0);
  if (maxTokens === null) return invalid(`\`${maxName}\` must be an integer ≥ 0.`, maxName);

  let prompt: string | Uint32Array;
  let prompts = 1;
  if (endpoint === 'completions') {
    const p = b.prompt;
    if (typeof p === 'string') prompt = p;
    else if (isTokenArray(p)) prompt = Uint32Array.from(p);
    else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) {
      // A batch of prompts goes to one engine; the first one decides where (they often share a prefix).
      prompt = p[0] as string;
      prompts = p.length;
    } else if (Array.isArray(p) && p.length > 0 && p.every(isTokenArray)) {
      prompt = Uint32Array.from(p[0] as number[]);
      prompts = p.length;
    } else {
      return invalid('`prompt` must be a string, an array of strings, an array of token ids or an array of token-id arrays.', 'prompt');
    }
  } else {
    if (!Array.isArray(b.messages) || b.messages.length === 0) return invalid('`messages` must be a non-empty array.', 'messages');
    try {
      prompt = chatPromptText(b.messages as ChatMessage[]);
    } catch (err) {
      if (err instanceof DystroError) return invalid(err.message, 'messages');
      throw err;
    }
  }
  return {
    ok: true,
    request: {
      endpoint,
      model: b.model,
      stream: b.stream === true,
      expectedOutputTokens: maxTokens === undefined ? undefined : maxTokens * (n ?? 1) * prompts,
      prompt,
      body: b,
    },
  };
}
