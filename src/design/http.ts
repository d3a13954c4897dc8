// http:// and https:// references (and the transport of deckhand+http(s)),
// with undici: verified TLS (plus an optional extra CA bundle), connect and
// body timeouts, manual redirects (bounded, never https → http, credentials
// dropped when the origin changes), status mapping, and retries with
// exponential backoff and full jitter inside the caller's deadline.
import { rootCertificates } from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request, errors as undiciErrors } from "undici";
import type { Dispatcher } from "undici";
import {
  abortError,
  DependencyUnavailableError,
  DomainError,
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
} from "../core/errors.js";
import { Backoff } from "../util/backoff.js";
import type { DesignDocument, DesignDriver, FetchContext } from "./driver.js";
import { tooLarge } from "./file.js";
import { redactUrls } from "./reference.js";

export interface HttpOptions {
  /** PEM bundle trusted in addition to the system's roots. */
  extraCa?: string;
  /** Hosts (lower-case, optionally host:port) that references may name; empty allows any. */
  allowedHosts: readonly string[];
  connectTimeoutMs: number;
  /** Longest silence while waiting for headers or body data. */
  idleTimeoutMs: number;
  maxRedirects: number;
  /** Attempts after the first one, for 5xx, timeouts and connection errors. */
  retries: number;
  /** First backoff; doubles per attempt, capped at 2 s, with full jitter. */
  backoffMs: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  url: URL;
}

/** A response worth another attempt (5xx): thrown by a handler of HttpClient.get. */
export class RetryableStatus extends Error {}

export class HttpClient {
  private readonly agent: Agent;

  constructor(readonly o: HttpOptions) {
    this.agent = new Agent({
      connect: { timeout: o.connectTimeoutMs, ...(o.extraCa ? { ca: [...rootCertificates, o.extraCa] } : {}) },
      headersTimeout: o.idleTimeoutMs,
      bodyTimeout: o.idleTimeoutMs,
    });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /**
   * GET with redirects and retries; `handle` turns a final response into a
   * result or throws (RetryableStatus to try again). Deadline and signal bound
   * everything.
   */
  async get<T>(
    url: URL,
    redacted: string,
    headers: Record<string, string>,
    ctx: FetchContext,
    handle: (res: HttpResponse) => Promise<T>,
  ): Promise<T> {
    let last: unknown;
    const backoff = new Backoff({ initialMs: this.o.backoffMs, maxMs: 2000, jitter: 1 });
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.follow(url, redacted, headers, ctx);
        return await handle(res);
      } catch (err) {
        if (ctx.signal.aborted) throw abortError(ctx.signal, err);
        if (err instanceof DomainError) throw err;
        if (isTlsError(err)) {
          // A certificate problem does not heal by retrying.
          throw new DependencyUnavailableError(
            "DESIGN_TLS_FAILED",
            `TLS verification of the source of ${redacted} failed: ${describe(err)}; trust its CA with STATEMGMT_DESIGN_CA_FILE`,
            { design_ref: redacted },
            { cause: err },
          );
        }
        if (!(err instanceof RetryableStatus) && !isTransportError(err)) throw err;
        last = err;
      }
      const delay = backoff.next();
      if (attempt >= this.o.retries || Date.now() + delay >= ctx.deadline) break;
      await sleep(delay, undefined, { signal: ctx.signal });
    }
    throw new DependencyUnavailableError(
      "DESIGN_SOURCE_UNAVAILABLE",
      `design source for ${redacted} is unavailable: ${describe(last)}; retry later`,
      { design_ref: redacted },
      { cause: last },
    );
  }

  /** One POST (no redirects, no retries), e.g. a Keystone token request. */
  async post(url: URL, body: string, ctx: FetchContext): Promise<HttpResponse> {
    this.checkHost(url, url.origin);
    const remaining = Math.max(1, ctx.deadline - Date.now());
    try {
      const res = await request(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        dispatcher: this.agent,
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(remaining)]),
      });
      return { status: res.statusCode, headers: res.headers, body: res.body, url };
    } catch (err) {
      if (ctx.signal.aborted) throw abortError(ctx.signal, err);
      throw new DependencyUnavailableError("KEYSTONE_UNAVAILABLE", `token request to ${url.origin} failed: ${describe(err)}`, {}, { cause: err });
    }
  }

  private async follow(start: URL, redacted: string, headers: Record<string, string>, ctx: FetchContext): Promise<HttpResponse> {
    let url = start;
    let hdrs = { ...headers };
    for (let hops = 0; ; hops++) {
      this.checkHost(url, redacted);
      const remaining = ctx.deadline - Date.now();
      if (remaining <= 0) throw new RetryableStatus("deadline reached");
      const res = await request(url, {
        method: "GET",
        headers: hdrs,
        dispatcher: this.agent,
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(remaining)]),
      });
      if (res.statusCode < 300 || res.statusCode >= 400 || res.headers.location === undefined) {
        return { status: res.statusCode, headers: res.headers, body: res.body, url };
      }
      await res.body.dump();
      if (hops >= this.o.maxRedirects) {
        throw new FailedPreconditionError("DESIGN_TOO_MANY_REDIRECTS", `${redacted} redirected more than ${this.o.maxRedirects} times`, {
          design_ref: redacted,
        });
      }
      const next = new URL(String(res.headers.location), url);
      if (url.protocol === "https:" && next.protocol !== "https:") {
        throw new PermissionDeniedError("DESIGN_INSECURE_REDIRECT", `${redacted} redirected from https to ${next.protocol.slice(0, -1)}; refused`, {
          design_ref: redacted,
        });
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new FailedPreconditionError("DESIGN_BAD_REDIRECT", `${redacted} redirected to an unsupported scheme`, { design_ref: redacted });
      }
      // Never carry credentials to another origin.
      if (next.origin !== url.origin) {
        hdrs = Object.fromEntries(Object.entries(hdrs).filter(([k]) => !/^(authorization|x-auth-token)$/i.test(k)));
      }
      url = next;
    }
  }

  private checkHost(url: URL, redacted: string): void {
    const allowed = this.o.allowedHosts;
    if (allowed.length === 0) return;
    const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
    if (allowed.includes(host) || allowed.includes(`${host}:${url.port || (url.protocol === "https:" ? "443" : "80")}`)) return;
    throw new PermissionDeniedError(
      "DESIGN_HOST_NOT_ALLOWED",
      `host ${url.host} of ${redacted} is not in STATEMGMT_DESIGN_ALLOWED_HOSTS`,
      { design_ref: redacted, host: url.host },
    );
  }
}

/** Maps a final response to a document, or the matching error. */
export async function readDocument(res: HttpResponse, redacted: string, ctx: FetchContext): Promise<DesignDocument> {
  const s = res.status;
  if (s >= 200 && s < 300) return { content: await readBody(res, redacted, ctx.maxBytes), contentType: header(res, "content-type") };
  await res.body.dump();
  const meta = { design_ref: redacted, http_status: String(s) };
  if (s === 404 || s === 410) throw new NotFoundError("Design", redacted, `design ${redacted} was not found (HTTP ${s})`);
  if (s === 401 || s === 403) throw new PermissionDeniedError("DESIGN_ACCESS_DENIED", `access to ${redacted} was denied (HTTP ${s})`, meta);
  if (s >= 500) throw new RetryableStatus(`HTTP ${s}`);
  throw new FailedPreconditionError("DESIGN_SOURCE_REFUSED", `the source of ${redacted} answered HTTP ${s}`, meta);
}

async function readBody(res: HttpResponse, redacted: string, max: number): Promise<Buffer> {
  const declared = Number(header(res, "content-length") || NaN);
  if (declared > max) {
    res.body.destroy();
    throw tooLarge(redacted, max);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body) {
    n += (chunk as Buffer).length;
    if (n > max) {
      res.body.destroy(); // stop reading: the rest is never transferred
      throw tooLarge(redacted, max);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, n);
}

export function header(res: HttpResponse, name: string): string {
  const v = res.headers[name];
  return Array.isArray(v) ? (v[0] ?? "") : (v ?? "");
}

/** Basic auth from the URL's userinfo; returns the URL without it. */
export function splitCredentials(url: URL): { url: URL; headers: Record<string, string> } {
  if (!url.username && !url.password) return { url, headers: {} };
  const bare = new URL(url.href);
  bare.username = "";
  bare.password = "";
  const pair = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  return { url: bare, headers: { authorization: `Basic ${Buffer.from(pair).toString("base64")}` } };
}

export function httpDriver(client: HttpClient): DesignDriver {
  return {
    async fetch(url, redacted, ctx) {
      const { url: bare, headers } = splitCredentials(url);
      return client.get(bare, redacted, headers, ctx, (res) => readDocument(res, redacted, ctx));
    },
  };
}

function isTlsError(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? "";
  return /CERT|SELF_SIGNED|UNABLE_TO_|ERR_TLS|ERR_SSL|HOSTNAME|DEPTH_ZERO/.test(code);
}

function isTransportError(err: unknown): boolean {
  if (err instanceof undiciErrors.UndiciError) return true;
  const code = (err as { code?: string })?.code;
  return ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN", "ABORT_ERR", "UND_ERR_ABORTED"].includes(
    code ?? "",
  ) || (err as Error)?.name === "TimeoutError" || (err as Error)?.name === "AbortError";
}

function describe(err: unknown): string {
  if (err instanceof RetryableStatus) return err.message;
  const e = err as { code?: string; message?: string; name?: string };
  return redactUrls(e?.code ? `${e.code}${e.message ? ` (${e.message})` : ""}` : (e?.message ?? String(err)));
}
