// Local HTTP(S) servers standing in for the services we call: design
// sources, Deckhand, and Keystone v3 (password authentication and token
// validation, as the real one speaks them).
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A local HTTP(S) server with routes and a request log. */
export async function startSource(routes: Record<string, Handler>, tls?: { key: string; cert: string }) {
  const log: { path: string; headers: IncomingMessage["headers"]; method: string }[] = [];
  const handler: Handler = (req, res) => {
    log.push({ path: req.url ?? "", headers: req.headers, method: req.method ?? "" });
    const route = routes[(req.url ?? "").split("?")[0]!];
    if (route) route(req, res);
    else {
      res.writeHead(404, { "content-type": "text/html" });
      res.end("<html>404 page that must never be returned as a design</html>");
    }
  };
  const server: Server = tls ? createHttpsServer(tls, handler) : createHttpServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    base: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    port,
    log,
    hits: (p: string) => log.filter((l) => l.path === p).length,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface FakeToken {
  user: string;
  domain?: string;
  roles: string[];
  /** Epoch ms. */
  expiresAt: number;
}

/**
 * Keystone v3: POST /v3/auth/tokens issues service tokens for the password
 * `password` of user `username`; GET /v3/auth/tokens validates the
 * X-Subject-Token (200 with the token body, 404 for unknown or revoked
 * tokens), and answers 401 unless X-Auth-Token is a token it issued.
 */
export async function startKeystone(opts: { username: string; password: string }) {
  const issued = new Set<string>();
  const tokens = new Map<string, FakeToken>();
  const validations = new Map<string, number>();
  let serviceTokens = 0;
  let failWith: number | undefined;
  let held: Promise<void> | undefined;
  let heldCount = 0;
  const source = await startSource({
    "/v3/auth/tokens": async (q, r) => {
      if (failWith) return void r.writeHead(failWith).end();
      if (q.method === "GET" && held) {
        heldCount++;
        await held;
      }
      if (q.method === "GET") {
        const subject = String(q.headers["x-subject-token"] ?? "");
        validations.set(subject, (validations.get(subject) ?? 0) + 1);
        if (!issued.has(String(q.headers["x-auth-token"] ?? ""))) return void r.writeHead(401).end();
        const t = tokens.get(subject);
        if (!t) return void r.writeHead(404, { "content-type": "application/json" }).end('{"error":{"code":404,"title":"Not Found"}}');
        r.writeHead(200, { "x-subject-token": subject, "content-type": "application/json" });
        r.end(
          JSON.stringify({
            token: {
              methods: ["password"],
              expires_at: new Date(t.expiresAt).toISOString(),
              issued_at: new Date(t.expiresAt - 3600_000).toISOString(),
              user: { id: `id-${t.user}`, name: t.user, domain: { id: "default", name: t.domain ?? "Default" } },
              project: { id: "p1", name: "service", domain: { id: "default", name: "Default" } },
              roles: t.roles.map((name, i) => ({ id: `r${i}`, name })),
            },
          }),
        );
        return;
      }
      let body = "";
      q.on("data", (d) => (body += d));
      q.on("end", () => {
        const user = JSON.parse(body).auth.identity.password.user;
        if (user.name !== opts.username || user.password !== opts.password) return void r.writeHead(401).end();
        const token = `svc-${++serviceTokens}`;
        issued.add(token);
        r.writeHead(201, { "x-subject-token": token, "content-type": "application/json" });
        r.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + 3600_000).toISOString() } }));
      });
    },
  });
  return {
    ...source,
    /** Makes `token` valid for a user with these Keystone roles. */
    issue: (token: string, t: FakeToken) => void tokens.set(token, t),
    revoke: (token: string) => void tokens.delete(token),
    /** GET validations of this subject token so far. */
    validations: (token: string) => validations.get(token) ?? 0,
    /** Every later request answers this HTTP status (undefined: normal again). */
    fail: (status: number | undefined) => {
      failWith = status;
    },
    /** Forgets the service tokens issued so far: they answer 401 from now on. */
    revokeServiceTokens: () => issued.clear(),
    /** Holds every later validation (GET) until the returned function is called. */
    hold: (): (() => void) => {
      let release!: () => void;
      held = new Promise<void>((r) => (release = r));
      return () => {
        held = undefined;
        release();
      };
    },
    /** Validations that have waited in hold() so far. */
    heldCount: () => heldCount,
  };
}
