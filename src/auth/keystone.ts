// Keystone v3 token validation, as keystonemiddleware does it for Drydock:
// GET /v3/auth/tokens with the caller's token in X-Subject-Token,
// authenticated by the service's own token (keystone/'s password
// authentication, keystoneTokens, which the Deckhand driver sends too).
// Answers are cached per token (by its SHA-256, in an lru-cache) until the
// token expires, at most CACHE_MS; concurrent calls with one token share one
// validation (SharedWork). Keystone unreachable is UNAVAILABLE, never
// an allow. Validations of distinct tokens waiting on Keystone at once are
// bounded (maxPending): anyone may present a token, and an unknown one costs
// a request to Keystone, so calls not yet authenticated get a small budget of
// their own; beyond it they are refused at once (RESOURCE_EXHAUSTED
// AUTHENTICATION_BUSY), while cached tokens and the token file are unaffected.
import { LRUCache } from "lru-cache";
import { SharedWork } from "../util/sharedWork.js";
import { RetryableStatus, type HttpClient, type RequestContext } from "../http/client.js";
import { keystoneTokens, keystoneTokensUrl, type KeystoneOptions, type TokenProvider } from "../keystone/tokens.js";
import { DependencyUnavailableError, ResourceExhaustedError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { Caller, Role } from "./roles.js";
import { tokenHash } from "./tokenFile.js";

/** Longest a validation answer is reused (keystonemiddleware's token_cache_time default): a revocation takes effect within it. */
export const CACHE_MS = 5 * 60_000;
/** Longest a refusal (unknown, revoked, expired token) is reused. */
const NEGATIVE_CACHE_MS = 60_000;
/** Cached answers at most; the oldest go first. */
const CACHE_MAX = 10_000;
/** Bound of one validation, retries included, shared by the calls waiting for it. */
const VALIDATE_TIMEOUT_MS = 10_000;

export interface KeystoneAuthOptions {
  /** The service's own credentials (STATEMGMT_KEYSTONE_*). */
  keystone: KeystoneOptions;
  /** Keystone role name (lower case) → our role (STATEMGMT_KEYSTONE_ROLES). */
  roles: ReadonlyMap<string, Role>;
  /** Validations of distinct uncached tokens waiting on Keystone at once (STATEMGMT_KEYSTONE_MAX_PENDING; default DEFAULT_MAX_PENDING). */
  maxPending?: number;
}

/**
 * Default of maxPending: Keystone answers a validation in milliseconds, and a
 * real caller's token is validated once per CACHE_MS, so even a site's worth
 * of orchestrators, tools and operators starting at once rarely has more than
 * a few uncached tokens in flight.
 */
export const DEFAULT_MAX_PENDING = 64;

interface KeystoneToken {
  expires_at?: string;
  user?: { name?: string; domain?: { name?: string } };
  roles?: { name?: string }[];
}

/** A caller, or undefined for a token Keystone does not accept; and until when that answer holds. */
type Answer = { caller: Caller | undefined; until: number };

export class KeystoneValidator {
  private readonly endpoint: URL;
  private readonly service: TokenProvider;
  /**
   * Answers by token hash, each until its `until`; the oldest go first
   * (peek, never get: a hit does not renew an answer's place).
   */
  private readonly cache: LRUCache<string, Answer>;
  /** Validations in flight: run to their own bound (VALIDATE_TIMEOUT_MS) whoever still waits. */
  private readonly inflight = new SharedWork<string, Answer>({ whenAbandoned: "finish" });
  /** Validation requests sent for callers' tokens (tests and logs; not check()'s). */
  requests = 0;
  /** Calls refused because maxPending validations were in flight. */
  busyRefusals = 0;
  private lastBusyLog = 0;
  /**
   * Told whether Keystone answered each validation (a token accepted or
   * refused) or could not (KEYSTONE_UNAVAILABLE): the health of Keystone as
   * callers see it (KeystoneHealth).
   */
  onReachable: ((reachable: boolean) => void) | undefined;

  constructor(
    private readonly http: HttpClient,
    private readonly o: KeystoneAuthOptions,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.endpoint = keystoneTokensUrl(o.keystone.url);
    this.service = keystoneTokens(http, o.keystone, now);
    // The injected clock, read on every check (ttlResolution 0: the default
    // would reuse a reading for 1 ms, and tests move this clock by minutes).
    this.cache = new LRUCache({ max: CACHE_MAX, perf: { now }, ttlResolution: 0 });
  }

  /** The caller a token stands for, or undefined when Keystone does not accept it; throws UNAVAILABLE when Keystone cannot say. */
  async validate(token: string, signal: AbortSignal): Promise<Caller | undefined> {
    const key = tokenHash(token);
    const hit = this.cache.peek(key);
    if (hit) return hit.caller;
    if (!this.inflight.get(key)) {
      const max = this.o.maxPending ?? DEFAULT_MAX_PENDING;
      if (this.inflight.size >= max) throw this.busy(max);
    }
    const answer = await this.inflight.wait(key, signal, (shared) => ({
      promise: this.ask(token, shared).then(
        (a) => {
          this.remember(key, a);
          this.onReachable?.(true);
          return a;
        },
        // What went wrong is for the operator; callers get a neutral UNAVAILABLE.
        (err: unknown) => {
          this.log.warn({ err: (err as Error).cause ?? err, keystone: this.endpoint.origin }, (err as Error).message);
          this.onReachable?.(false);
          throw err;
        },
      ),
      context: undefined,
    }));
    return answer.caller;
  }

  /** Keystone's origin (logs, the health metric). */
  get origin(): string {
    return this.endpoint.origin;
  }

  /**
   * Whether a validation can succeed now: the service's own token obtained
   * (cached while valid) and validated, as a caller's would be. Any answer of
   * Keystone counts (accepted or not); an error or no answer does not.
   */
  async check(): Promise<boolean> {
    const ctx: RequestContext = { signal: new AbortController().signal, deadline: this.now() + VALIDATE_TIMEOUT_MS };
    try {
      await this.ask(await this.service.token(ctx), ctx.signal, false);
      return true;
    } catch {
      return false;
    }
  }

  private busy(max: number): ResourceExhaustedError {
    this.busyRefusals++;
    const now = Date.now();
    if (now - this.lastBusyLog >= 1000) {
      this.lastBusyLog = now;
      this.log.warn(
        { limit: max, refused: this.busyRefusals, keystone: this.endpoint.origin },
        "token validations at STATEMGMT_KEYSTONE_MAX_PENDING: refusing uncached tokens",
      );
    }
    return new ResourceExhaustedError(
      "AUTHENTICATION_BUSY",
      `${max} token validations are waiting on Keystone, the server's limit (STATEMGMT_KEYSTONE_MAX_PENDING); retry with backoff`,
      { limit: String(max) },
    );
  }

  private remember(key: string, a: Answer): void {
    // Fresh while until > now; lru-cache keeps an entry while no more than
    // its ttl has passed, hence one less (on a clock of whole milliseconds).
    // An answer that would be fresh for this millisecond only is not kept
    // (a ttl of 0 would keep it for good).
    const ttl = a.until - this.now() - 1;
    if (ttl > 0) this.cache.set(key, a, { ttl });
    else this.cache.delete(key);
  }

  /** `signal`: the validation's own (SharedWork's), never a caller's. */
  private async ask(token: string, signal: AbortSignal, counted = true): Promise<Answer> {
    // Its own deadline rather than the first caller's: each caller stops
    // waiting when its own call ends (see validate).
    const ctx: RequestContext = { signal, deadline: this.now() + VALIDATE_TIMEOUT_MS };
    for (let attempt = 0; ; attempt++) {
      let service: string;
      try {
        service = await this.service.token(ctx);
      } catch (err) {
        throw unavailable("Keystone refused or could not issue the service's own token (STATEMGMT_KEYSTONE_*), so no caller can be authenticated", err);
      }
      if (counted) this.requests++;
      let answer: Answer | "retry";
      try {
        answer = await this.http.get(this.endpoint, this.endpoint.href, { "x-auth-token": service, "x-subject-token": token }, ctx, async (res) => {
          const text = await res.body.text();
          if (res.status === 200) return this.accepted(text);
          if (res.status === 404) return { caller: undefined, until: this.now() + NEGATIVE_CACHE_MS };
          if (res.status === 401 && attempt === 0) {
            this.service.invalidate(service); // our own token expired or was revoked
            return "retry";
          }
          if (res.status >= 500) throw new RetryableStatus(`HTTP ${res.status}`);
          throw unavailable(`Keystone answered HTTP ${res.status} to a token validation (may the service user validate tokens?)`);
        });
      } catch (err) {
        if (err instanceof DependencyUnavailableError && err.reason === "KEYSTONE_UNAVAILABLE") throw err;
        throw unavailable("Keystone cannot be reached to validate the token; retry later", err);
      }
      if (answer !== "retry") return answer;
    }
  }

  private accepted(text: string): Answer {
    let t: KeystoneToken | undefined;
    try {
      t = (JSON.parse(text) as { token?: KeystoneToken }).token;
    } catch {
      /* below */
    }
    const expires = Date.parse(t?.expires_at ?? "");
    const name = t?.user?.name;
    if (!t || !Number.isFinite(expires) || typeof name !== "string" || name === "") {
      throw unavailable("Keystone answered a token validation without a token, user name or expires_at");
    }
    const now = this.now();
    if (expires <= now) return { caller: undefined, until: now + NEGATIVE_CACHE_MS };
    const roles = new Set<Role>();
    for (const r of t.roles ?? []) {
      const ours = typeof r.name === "string" ? this.o.roles.get(r.name.toLowerCase()) : undefined;
      if (ours) roles.add(ours);
    }
    const domain = t.user?.domain?.name;
    const subject = domain && domain !== "Default" ? `${name}@${domain}` : name;
    return { caller: { subject, roles: [...roles], authenticated: true }, until: Math.min(expires, now + CACHE_MS) };
  }
}

const unavailable = (message: string, cause?: unknown) =>
  new DependencyUnavailableError("KEYSTONE_UNAVAILABLE", message, {}, cause === undefined ? undefined : { cause });
