/**
 * Small node:http helpers shared by the data plane and the control API: a bounded, timed body read
 * and JSON answers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorBody, type ApiError } from './openai.js';

export type BodyResult = { ok: true; body: Buffer } | { ok: false; status: 408 | 413 | 400; message: string };

/**
 * Reads a request body of at most `maxBytes` within `timeoutMs`. A declared Content-Length over the
 * limit is refused before a byte is read; a chunked body is cut off as soon as it passes the limit.
 * After a refusal the caller answers with `Connection: close` (the rest of the body is not read).
 */
export function readBody(req: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<BodyResult> {
  const declared = req.headers['content-length'];
  if (declared !== undefined) {
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0) return Promise.resolve({ ok: false, status: 400, message: 'Invalid Content-Length.' });
    if (n > maxBytes) return Promise.resolve({ ok: false, status: 413, message: `The request body is ${n} bytes; the limit is ${maxBytes}.` });
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (r: BodyResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onError);
      if (!r.ok) req.pause();
      resolve(r);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) finish({ ok: false, status: 413, message: `The request body exceeds the limit of ${maxBytes} bytes.` });
      else chunks.push(c);
    };
    const onEnd = () => finish({ ok: true, body: Buffer.concat(chunks, size) });
    const onError = () => finish({ ok: false, status: 400, message: 'The request body was cut short.' });
    const timer = setTimeout(() => finish({ ok: false, status: 408, message: `The request body did not arrive within ${timeoutMs} ms.` }), timeoutMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onError);
  });
}

/** Sends a JSON body with its length; `close` ends the connection after it (unread body, refused client). */
export function sendJson(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const h: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers };
  if (close) h.connection = 'close';
  res.writeHead(status, h);
  res.end(body);
}

/** Sends an OpenAI-style error. */
export function sendError(res: ServerResponse, e: ApiError, headers: Record<string, string> = {}, close = false): void {
  sendJson(res, e.status, errorBody(e), headers, close);
}

/** Writes a chunk and waits for the socket when its buffer is full (or for the client to go). */
export function writeChunk(res: ServerResponse, chunk: Uint8Array | string): Promise<void> | undefined {
  if (res.write(chunk)) return undefined;
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
