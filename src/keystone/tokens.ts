// Keystone v3 service tokens: the service's own password authentication
// (STATEMGMT_KEYSTONE_*) and its token cache, over http/'s client. The
// Deckhand design driver sends these tokens (design/deckhand.ts), and the
// validation of callers' tokens authenticates with them (auth/keystone.ts).
import { DependencyUnavailableError, PermissionDeniedError } from "../core/errors.js";
import { header, type HttpClient, type RequestContext } from "../http/client.js";
import { SharedWork } from "../util/sharedWork.js";

/** A token to send as X-Auth-Token. */
export interface TokenProvider {
  token(ctx: RequestContext): Promise<string>;
  /** Forgets a token the server refused. */
  invalidate(token: string): void;
}

export interface KeystoneOptions {
  /** Keystone endpoint, e.g. https://keystone.example:5000 (with or without /v3). */
  url: string;
  username: string;
  password: string;
  projectName: string;
  userDomain: string;
  projectDomain: string;
}

/** The /v3/auth/tokens URL of a Keystone endpoint given with or without /v3. */
export const keystoneTokensUrl = (url: string): URL => new URL(`${url.replace(/\/+$/, "").replace(/\/v3$/, "")}/v3/auth/tokens`);

/** Bound of one token request (retries included), shared by every caller waiting for it. */
const TOKEN_TIMEOUT_MS = 30_000;

/** Tokens are reused until this long before their expires_at. */
const REFRESH_MARGIN_MS = 60_000;

/**
 * Keystone v3 password authentication: POST /v3/auth/tokens, token from the
 * X-Subject-Token header, reused until shortly before it expires; concurrent
 * callers share one request.
 */
export function keystoneTokens(client: HttpClient, o: KeystoneOptions, now: () => number = Date.now): TokenProvider {
  let cached: { value: string; expiresAt: number } | undefined;
  // One request for all callers (of any design reference), under its own
  // deadline: each caller only stops waiting when its own call ends.
  const inflight = new SharedWork<"token", string>({ whenAbandoned: "finish" });
  const endpoint = keystoneTokensUrl(o.url);
  const body = JSON.stringify({
    auth: {
      identity: { methods: ["password"], password: { user: { name: o.username, domain: { name: o.userDomain }, password: o.password } } },
      scope: { project: { name: o.projectName, domain: { name: o.projectDomain } } },
    },
  });
  const fetchToken = async (ctx: RequestContext): Promise<string> => {
    const res = await client.post(endpoint, body, ctx);
    const token = header(res, "x-subject-token");
    const text = await res.body.text();
    if (res.status === 401 || res.status === 403) {
      throw new PermissionDeniedError("KEYSTONE_AUTH_FAILED", `Keystone refused the configured credentials (HTTP ${res.status})`);
    }
    if (res.status !== 201 && res.status !== 200) {
      throw new DependencyUnavailableError("KEYSTONE_UNAVAILABLE", `Keystone answered HTTP ${res.status} to a token request`);
    }
    if (!token) throw new DependencyUnavailableError("KEYSTONE_UNAVAILABLE", "Keystone's answer had no X-Subject-Token header");
    let expiresAt = now() + 3600_000;
    try {
      const parsed = Date.parse((JSON.parse(text) as { token?: { expires_at?: string } }).token?.expires_at ?? "");
      if (Number.isFinite(parsed)) expiresAt = parsed;
    } catch {
      /* keep the default */
    }
    cached = { value: token, expiresAt };
    return token;
  };
  return {
    async token(ctx) {
      if (cached && cached.expiresAt - REFRESH_MARGIN_MS > now()) return cached.value;
      return inflight.wait("token", ctx.signal, (signal) => ({
        promise: fetchToken({ signal, deadline: Date.now() + TOKEN_TIMEOUT_MS }),
        context: undefined,
      }));
    },
    invalidate(token) {
      if (cached?.value === token) cached = undefined;
    },
  };
}
