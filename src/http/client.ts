// The outbound HTTP client, with undici: verified TLS (plus an optional extra
// CA bundle), an optional list of allowed hosts, connect and body timeouts,
// manual redirects (bounded, never https → http, credentials dropped when the
// origin changes), and retries with exponential backoff and full jitter
// inside the caller's deadline. Used by the design drivers (http(s) and
// deckhand+http(s), design/) and by Keystone (keystone/, auth/keystone.ts);
// its error reasons and hints still speak of design sources
// (STATEMGMT_DESIGN_CA_FILE, STATEMGMT_DESIGN_ALLOWED_HOSTS), whose settings it runs with.
import { rootCertificates } from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request, errors as undiciErrors } from "undici";
import type { Dispatcher } from "undici";
import { abortError, DependencyUnavailableError, DomainError, FailedPreconditionError, PermissionDeniedError } from "../core/errors.js";
import { Backoff } from "../util/backoff.js";
import { redactUrls } from "../core/redact.js";

/** What bounds a request: the caller's signal and deadline. */
export interface RequestContext {
  /** Aborted when the call is over. */
  signal: AbortSignal;
  /** Epoch ms by which the whole request, redirects and retries included, must be done. */
  deadline: number;
}

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
  async get<T>(url: URL, redacted: string, headers: Record<string, string>, ctx: RequestContext, handle: (res: HttpResponse) => Promise<T>): Promise<T> {
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
  async post(url: URL, body: string, ctx: RequestContext): Promise<HttpResponse> {
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

  private async follow(start: URL, redacted: string, headers: Record<string, string>, ctx: RequestContext): Promise<HttpResponse> {
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
    throw new PermissionDeniedError("DESIGN_HOST_NOT_ALLOWED", `host ${url.host} of ${redacted} is not in STATEMGMT_DESIGN_ALLOWED_HOSTS`, {
      design_ref: redacted,
      host: url.host,
    });
  }
}

export function header(res: HttpResponse, name: string): string {
  const v = res.headers[name];
  return Array.isArray(v) ? (v[0] ?? "") : (v ?? "");
}

function isTlsError(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? "";
  return /CERT|SELF_SIGNED|UNABLE_TO_|ERR_TLS|ERR_SSL|HOSTNAME|DEPTH_ZERO/.test(code);
}

function isTransportError(err: unknown): boolean {
  if (err instanceof undiciErrors.UndiciError) return true;
  const code = (err as { code?: string })?.code;
  return (
    ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN", "ABORT_ERR", "UND_ERR_ABORTED"].includes(code ?? "") ||
    (err as Error)?.name === "TimeoutError" ||
    (err as Error)?.name === "AbortError"
  );
}

function describe(err: unknown): string {
  if (err instanceof RetryableStatus) return err.message;
  const e = err as { code?: string; message?: string; name?: string };
  return redactUrls(e?.code ? `${e.code}${e.message ? ` (${e.message})` : ""}` : (e?.message ?? String(err)));
}
