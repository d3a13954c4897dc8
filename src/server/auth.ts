// Authentication and authorization at the edge: the guards the adapter runs
// before every handler (see adapter.ts Guard). Credentials, in this order:
//   1. a bearer token: `authorization: Bearer <token>` (or Keystone's
//      `x-auth-token: <token>`), looked up in the token file by its SHA-256,
//      then, when enabled, validated by Keystone;
//   2. without a token, the verified TLS client certificate, by the subject
//      names of certificate.ts, in the token file's entries without sha256.
// Nothing else is accepted. Error messages never quote a credential.
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";
import type { DescMethod } from "@bufbuild/protobuf";
import type { AuthConfig } from "../auth/config.js";
import { HttpClient } from "../http/client.js";
import { UnauthenticatedError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { certificateNames } from "../auth/certificate.js";
import { KeystoneValidator } from "../auth/keystone.js";
import { authorize, KEY_AUTHORIZED_METHODS, NOBODY, OPEN_CALLER, type Caller } from "../auth/roles.js";
import { tokenHash, TokenFile, type ReloadResult } from "../auth/tokenFile.js";
import type { Guard, GuardedCall } from "../contract/contract.js";

/** Longest token looked at; longer ones are refused unread (Keystone's Fernet tokens are about 200 characters). */
const MAX_TOKEN_CHARS = 4096;

export interface AuthSources {
  tokens?: TokenFile;
  keystone?: KeystoneValidator;
}

/** Who is calling; throws UNAUTHENTICATED (or UNAVAILABLE when Keystone cannot say). */
export function authenticate(s: AuthSources, call: GuardedCall, signal: AbortSignal): Caller | Promise<Caller> {
  const token = presentedToken(call);
  if (token === undefined) return byCertificate(s, call);
  const known = s.tokens?.table.byHash.get(tokenHash(token));
  if (known) return known;
  if (!s.keystone) throw invalidToken();
  return s.keystone.validate(token, signal).then((c) => c ?? Promise.reject(invalidToken()));
}

/** The guard of StateService: authentication, then the method's role (roles.ts). */
export function stateServiceGuard(s: AuthSources): Guard {
  return (call, method, signal) => {
    // Nodes: authorised by the identity key in the request, credentials unread.
    if (KEY_AUTHORIZED_METHODS.has(method.name)) return NOBODY;
    const c = authenticate(s, call, signal);
    if (c instanceof Promise) return c.then((caller) => allowed(caller, method));
    return allowed(c, method);
  };
}

/** Any authenticated caller, whatever its roles (server reflection with STATEMGMT_REFLECTION=authenticated). */
export const authenticatedGuard =
  (s: AuthSources): Guard =>
  (call, _method, signal) =>
    authenticate(s, call, signal);

/** An always-open service (health) on a server with authentication: the caller is nobody in particular. */
export const openGuard: Guard = () => NOBODY;

/** Without authentication configured, every caller may do everything. */
export const noAuthGuard: Guard = () => OPEN_CALLER;

function allowed(c: Caller, method: DescMethod): Caller {
  authorize(c, method.name);
  return c;
}

const invalidToken = () => new UnauthenticatedError("TOKEN_INVALID", "the token is unknown, expired or revoked");

/** The headers that carry a credential; a call must send at most one value of one of them. */
const CREDENTIAL_HEADERS = ["authorization", "x-auth-token"] as const;

/**
 * Makes every value of a repeated credential header reach the call's
 * metadata, so that presentedToken's "send one credential" check sees them.
 * Node's http2 keeps only the first `authorization` of a request (one of its
 * single-value headers) and joins repeated `x-auth-token` lines with ", ";
 * the raw header list of the 'stream' event still has each line. Listening
 * first on grpc-js's HTTP/2 server (a private field, checked here: start-up
 * fails rather than run without the check), the headers object grpc-js then
 * reads gets the full list as an array.
 */
export function keepRepeatedCredentials(server: grpc.Server): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    throw new Error("grpc-js internals changed: Server.http2Servers not found; repeated credential headers cannot be refused");
  }
  for (const s of servers.keys() as IterableIterator<http2.Http2Server>) {
    if (s.listeners("stream").includes(exposeRepeated)) continue;
    s.prependListener("stream", exposeRepeated);
  }
}

function exposeRepeated(_stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]): void {
  if (!Array.isArray(raw)) return;
  let values: Map<string, string[]> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name !== "authorization" && name !== "x-auth-token") continue;
    values ??= new Map();
    const list = values.get(name);
    if (list) list.push(raw[i + 1]!);
    else values.set(name, [raw[i + 1]!]);
  }
  if (!values) return;
  for (const name of CREDENTIAL_HEADERS) {
    const list = values.get(name);
    if (list && list.length > 1) (headers as Record<string, string | string[]>)[name] = list;
  }
}

/** The token of the call's metadata, undefined when it has none; malformed credentials are refused. */
function presentedToken(call: GuardedCall): string | undefined {
  const bearer = call.metadata.get("authorization");
  const keystone = call.metadata.get("x-auth-token");
  if (bearer.length + keystone.length > 1) {
    throw new UnauthenticatedError("TOKEN_INVALID", "send one credential: a single authorization or x-auth-token header");
  }
  let token: string;
  if (bearer.length === 1) {
    const m = typeof bearer[0] === "string" ? /^bearer +(\S+) *$/i.exec(bearer[0]) : null;
    if (!m) throw new UnauthenticatedError("TOKEN_INVALID", "the authorization header must be `Bearer <token>`");
    token = m[1]!;
  } else if (keystone.length === 1) {
    if (typeof keystone[0] !== "string" || keystone[0].trim() === "") throw new UnauthenticatedError("TOKEN_INVALID", "the x-auth-token header is empty");
    token = keystone[0].trim();
  } else {
    return undefined;
  }
  if (token.length > MAX_TOKEN_CHARS) throw invalidToken();
  return token;
}

function byCertificate(s: AuthSources, call: GuardedCall): Caller {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert) {
    throw new UnauthenticatedError("UNAUTHENTICATED", "this server needs credentials: send the metadata `authorization: Bearer <token>`");
  }
  const names = certificateNames(cert);
  for (const name of names) {
    const c = s.tokens?.table.bySubject.get(name);
    if (c) return c;
  }
  throw new UnauthenticatedError(
    "UNAUTHENTICATED",
    `the client certificate (${names.slice(0, 3).join(", ") || "no CN, DNS or URI name"}) is not listed in the server's auth token file; send a bearer token or ask for the certificate to be listed`,
  );
}

/** The server's authentication, assembled from configuration: the guard of each service, and the token file's reload. */
export interface EdgeAuth {
  stateService: Guard;
  reflection: Guard;
  health: Guard;
  /** The token file, when configured (tests await its "reload" events). */
  tokens: TokenFile | undefined;
  keystone: KeystoneValidator | undefined;
  /** Re-reads the token file (SIGHUP); a no-op without one. */
  reload(): Promise<ReloadResult | undefined>;
  close(): Promise<void>;
}

/** Loads the token file (a file that cannot be read or parsed fails start-up) and sets up Keystone validation. */
export async function startAuth(c: AuthConfig, log: Logger, extraCa: string | undefined): Promise<EdgeAuth> {
  const tokens = c.tokensFile ? new TokenFile(c.tokensFile, log) : undefined;
  await tokens?.start();
  // A client of its own: the design fetcher's allowed hosts and retry
  // policy are about design sources, not the Keystone the operator named.
  const http = c.keystone
    ? new HttpClient({ extraCa, allowedHosts: [], connectTimeoutMs: 5_000, idleTimeoutMs: 10_000, maxRedirects: 0, retries: 2, backoffMs: 100 })
    : undefined;
  const keystone = c.keystone && http ? new KeystoneValidator(http, c.keystone, log) : undefined;
  const sources: AuthSources = { tokens, keystone };
  const enabled = !!(tokens || keystone);
  if (!enabled) log.warn("serving without authentication: every caller may call every method (set --auth-tokens or STATEMGMT_AUTH_KEYSTONE=1)");
  else log.info({ tokenFile: c.tokensFile, keystone: c.keystone?.keystone.url, reflection: c.reflection }, "authentication on");
  return {
    stateService: enabled ? stateServiceGuard(sources) : noAuthGuard,
    reflection: !enabled ? noAuthGuard : c.reflection === "authenticated" ? authenticatedGuard(sources) : openGuard,
    health: enabled ? openGuard : noAuthGuard,
    tokens,
    keystone,
    reload: async () => tokens?.reload(),
    close: async () => {
      tokens?.close();
      await http?.close();
    },
  };
}
