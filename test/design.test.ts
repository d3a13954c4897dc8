import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { generate } from "selfsigned";
import { defaultDesignConfig, type DesignConfig } from "../src/config.js";
import { decodeError, expectError, expectInvalid, useServer } from "./harness.js";
import { startSource } from "./fakes.js";
import { TestClock } from "./clock.js";
import type { DesignSignals } from "../src/design/signals.js";
import { DesignFetcher } from "../src/design/fetcher.js";
import type { DesignDriver } from "../src/design/driver.js";

const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

async function makeCa() {
  const ca = await generate([{ name: "commonName", value: "statemgmt test CA" }], {
    algorithm: "sha256",
    keySize: 2048,
    extensions: [
      { name: "basicConstraints", cA: true, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  const leaf = await generate([{ name: "commonName", value: "127.0.0.1" }], {
    algorithm: "sha256",
    keySize: 2048,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      {
        name: "subjectAltName",
        altNames: [
          { type: 7, ip: "127.0.0.1" },
          { type: 2, value: "localhost" },
        ],
      },
      { name: "extKeyUsage", serverAuth: true },
    ],
  });
  return { caCert: ca.cert, key: leaf.private, cert: leaf.cert };
}

describe("design documents", function () {
  this.timeout(30_000);
  const design: DesignConfig = defaultDesignConfig();
  const opts = { design };
  let root: string;
  let outside: string;
  let http: Awaited<ReturnType<typeof startSource>>;
  let https: Awaited<ReturnType<typeof startSource>>;
  let keystone: Awaited<ReturnType<typeof startSource>>;
  let deckhand: Awaited<ReturnType<typeof startSource>>;
  let flaky = 0;
  let bigBytesSent = 0;
  let tokensIssued = 0;
  let rejectNextToken = false;
  /** Keystone answers token requests once this settles (none: at once). */
  let keystoneHeld: Promise<void> | undefined;
  /** Told when a token request reached Keystone. */
  let onTokenRequest = () => {};
  /** Told when the connection of a /big response closed. */
  let onBigClosed = () => {};
  /** /slow-once answers once this settles. */
  let slowOnceHeld: Promise<void> = Promise.resolve();
  /** /slow-503-then-ok sends its 503 once the first settles, its 200 once the second does. */
  let slow503Held: [Promise<void>, Promise<void>] = [Promise.resolve(), Promise.resolve()];
  let revokedUpTo = 0; // Deckhand refuses tok-1 … tok-N

  // Runs before useServer's hook, so the server starts with this configuration.
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "design-root-"));
    outside = await mkdtemp(path.join(tmpdir(), "design-outside-"));
    await writeFile(path.join(root, "site.yaml"), "site: one\n");
    await mkdir(path.join(root, "sub"));
    await writeFile(path.join(outside, "secret.yaml"), "secret: yes\n");
    await symlink(path.join(outside, "secret.yaml"), path.join(root, "escape.yaml"));

    http = await startSource({
      "/design.yaml": (_q, r) => r.writeHead(200, { "content-type": "application/x-yaml" }).end("kind: Site\n"),
      "/auth": (q, r) => r.writeHead(200, { "content-type": "text/plain" }).end(q.headers.authorization ?? "none"),
      "/forbidden": (_q, r) => r.writeHead(403).end("no"),
      "/gone": (_q, r) => r.writeHead(410).end(),
      "/teapot": (_q, r) => r.writeHead(418).end(),
      "/flaky": (_q, r) => (++flaky <= 2 ? r.writeHead(503).end("busy") : r.writeHead(200).end("finally")),
      "/down": (_q, r) => r.writeHead(503).end("down"),
      "/loop": (_q, r) => r.writeHead(302, { location: "/loop" }).end(),
      "/moved": (_q, r) => r.writeHead(301, { location: "/design.yaml" }).end(),
      "/big": (_q, r) => {
        r.writeHead(200, { "content-type": "application/octet-stream" }); // no content-length: streamed
        const chunk = Buffer.alloc(64 * 1024, 120);
        const pump = () => {
          while (bigBytesSent < 50 * 1024 * 1024) {
            bigBytesSent += chunk.length;
            if (!r.write(chunk)) return void r.once("drain", pump);
          }
          r.end();
        };
        r.on("close", () => {
          r.destroy();
          onBigClosed();
        });
        pump();
      },
      "/cached": (_q, r) => r.writeHead(200).end("cache me"),
      "/slow-once": (_q, r) => void slowOnceHeld.then(() => r.writeHead(200).end("shared")),
      "/slow-503-then-ok": (() => {
        let n = 0;
        return (_q: IncomingMessage, r: ServerResponse) =>
          void (++n === 1 ? slow503Held[0].then(() => r.writeHead(503).end("busy")) : slow503Held[1].then(() => r.writeHead(200).end("second try")));
      })(),
      "/fail-then-ok": (() => {
        let n = 0;
        return (_q: IncomingMessage, r: ServerResponse) => (++n === 1 ? r.writeHead(404).end() : r.writeHead(200).end("now here"));
      })(),
    });

    const pki = await makeCa();
    https = await startSource(
      {
        "/secure.yaml": (_q, r) => r.writeHead(200, { "content-type": "text/yaml" }).end("secure: true\n"),
        "/to-http": (_q, r) => r.writeHead(302, { location: `${http.base}/design.yaml` }).end(),
      },
      pki,
    );
    keystone = await startSource(
      {
        "/v3/auth/tokens": (q, r) => {
          let body = "";
          q.on("data", (d) => (body += d));
          q.on("end", () => {
            const auth = JSON.parse(body).auth;
            if (auth.identity.password.user.password !== "s3cret") return void r.writeHead(401).end();
            onTokenRequest();
            void (keystoneHeld ?? Promise.resolve()).then(() => {
              tokensIssued++;
              r.writeHead(201, { "x-subject-token": `tok-${tokensIssued}`, "content-type": "application/json" });
              r.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + 3600_000).toISOString() } }));
            });
          });
        },
      },
      pki,
    );
    deckhand = await startSource(
      {
        "/api/v1.0/revisions/7/rendered-documents": (q, r) => {
          const token = q.headers["x-auth-token"];
          const revoked = typeof token === "string" && Number(token.slice(4)) <= revokedUpTo;
          if (!token || revoked || (rejectNextToken && token === `tok-${tokensIssued}` && tokensIssued === 1)) {
            rejectNextToken = false;
            return void r.writeHead(401).end();
          }
          r.writeHead(200, { "content-type": "application/x-yaml" });
          r.end(`rendered by ${token}\n`);
        },
      },
      pki,
    );
    Object.assign(design, {
      roots: [root],
      extraCa: pki.caCert,
      maxBytes: 1024 * 1024,
      retries: 3,
      backoffMs: 20,
      cacheTtlMs: 400,
      keystone: {
        url: keystone.base,
        username: "drydock",
        password: "s3cret",
        projectName: "service",
        userDomain: "Default",
        projectDomain: "Default",
      },
    } satisfies Partial<DesignConfig>);
  });
  after(async () => {
    await Promise.all([http, https, keystone, deckhand].map((s) => s?.close()));
    await rm(root, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  const clock = new TestClock();
  const h = useServer({ ...opts, clock });

  /**
   * The next `name` signal of the server's design fetcher for `ref` (as
   * redacted) whose other arguments `until` accepts. Ask for it before the
   * call that causes it.
   */
  function designSignal<K extends keyof DesignSignals>(name: K, ref: string, until: (...args: DesignSignals[K]) => boolean = () => true): Promise<void> {
    const fetcher = h.server.design;
    return new Promise((resolve) => {
      const on = (...args: DesignSignals[K]) => {
        if (args[0] !== ref || !until(...args)) return;
        fetcher.off(name, on as never);
        resolve();
      };
      fetcher.on(name, on as never);
    });
  }

  describe("file://", () => {
    it("returns a design inside a root with its sha256", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `file://${root}/site.yaml` });
      expect(Buffer.from(res.content).toString()).to.equal("site: one\n");
      expect(res.size).to.equal(10n);
      expect(res.sha256).to.equal(sha("site: one\n"));
      expect(res.fromCache).to.equal(false);
    });
    it("refuses .. and symlinks that escape the root with PERMISSION_DENIED", async () => {
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/../${path.basename(outside)}/secret.yaml` }), grpc.status.PERMISSION_DENIED);
      const d = await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/escape.yaml` }), grpc.status.PERMISSION_DENIED);
      expect(d.errorInfo!.reason).to.equal("DESIGN_FILE_OUTSIDE_ROOTS");
    });
    it("answers NOT_FOUND for a missing file and INVALID_ARGUMENT for a directory or a relative path", async () => {
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/missing.yaml` }), grpc.status.NOT_FOUND);
      // A path through a file (ENOTDIR) is missing too, not an internal error.
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/site.yaml/more.yaml` }), grpc.status.NOT_FOUND);
      // Outside the roots, missing and present paths get the same denial.
      for (const p of [`${outside}/secret.yaml`, `${outside}/missing.yaml`, `${outside}/secret.yaml/x`]) {
        const d = await expectError(h.client.getDesignDocuments({ designRef: `file://${p}` }), grpc.status.PERMISSION_DENIED);
        expect(d.errorInfo!.reason).to.equal("DESIGN_FILE_OUTSIDE_ROOTS");
      }
      await expectInvalid(h.client.getDesignDocuments({ designRef: `file://${root}/sub` }), "design_ref");
      await expectInvalid(h.client.getDesignDocuments({ designRef: "file:site.yaml" }), "design_ref");
    });
  });

  describe("http://", () => {
    it("returns content and content type", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `${http.base}/design.yaml` });
      expect(Buffer.from(res.content).toString()).to.equal("kind: Site\n");
      expect(res.contentType).to.equal("application/x-yaml");
      expect(res.sha256).to.equal(sha("kind: Site\n"));
    });
    it("sends basic auth from the userinfo exactly, and never echoes the password", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `http://alice:p%40ss@127.0.0.1:${http.port}/auth` });
      expect(Buffer.from(res.content).toString()).to.equal(`Basic ${Buffer.from("alice:p@ss").toString("base64")}`);
      expect(res.designRef).to.equal(`http://alice:***@127.0.0.1:${http.port}/auth`);
    });
    it("sends secret query parameters to the source and never echoes their values, in a response or an error", async () => {
      const secret = `S3CRET-q-${Date.now()}`;
      const res = await h.client.getDesignDocuments({ designRef: `${http.base}/design.yaml?rev=7&api_key=${secret}` });
      expect(http.log.at(-1)!.path).to.equal(`/design.yaml?rev=7&api_key=${secret}`);
      expect(res.designRef).to.equal(`${http.base}/design.yaml?rev=7&api_key=***`);
      const cases: [string, grpc.status][] = [
        [`${http.base}/nothing-here?Access_Token=${secret}`, grpc.status.NOT_FOUND],
        [`${http.base}/forbidden?x=1&PASSWORD=${secret}#frag`, grpc.status.PERMISSION_DENIED],
        [`${http.base}/teapot?sig=${secret}`, grpc.status.FAILED_PRECONDITION],
        [`${http.base}/loop?client_secret=${secret}`, grpc.status.FAILED_PRECONDITION],
        [`http://127.0.0.1:1/x?token=${secret}`, grpc.status.UNAVAILABLE], // nothing listens: the transport error's text
        [`ftp://h/x?api-key=${secret}`, grpc.status.INVALID_ARGUMENT],
        [`http://${"a".repeat(64)}.example/x?secret=${secret}`, grpc.status.INVALID_ARGUMENT],
      ];
      for (const [ref, code] of cases) {
        const d = await expectError(h.client.getDesignDocuments({ designRef: ref }, { deadlineMs: 5000 }), code);
        expect(d.message, ref).to.contain("=***");
        expect(JSON.stringify(d), ref).to.not.contain(secret);
      }
    });
    it("refuses, before any request, userinfo that does not decode and a host the resolver cannot take", async () => {
      // Were INTERNAL: decodeURIComponent threw URIError, getaddrinfo EINVAL.
      const before = http.hits("/auth");
      for (const ref of [
        `http://alice:%zz@127.0.0.1:${http.port}/auth`,
        `http://%E0@127.0.0.1:${http.port}/auth`,
        `http://${"a".repeat(64)}.example/design.yaml`,
        `http://${"😀".repeat(200)}/x`,
      ]) {
        await expectInvalid(h.client.getDesignDocuments({ designRef: ref }), "design_ref");
      }
      expect(http.hits("/auth")).to.equal(before);
    });
    it("maps 404/410 to NOT_FOUND (never the error page), 403 to PERMISSION_DENIED, other 4xx to FAILED_PRECONDITION", async () => {
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/nothing-here` }), grpc.status.NOT_FOUND);
      expect(d.message).not.to.contain("404 page");
      await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/gone` }), grpc.status.NOT_FOUND);
      await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/forbidden` }), grpc.status.PERMISSION_DENIED);
      await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/teapot` }), grpc.status.FAILED_PRECONDITION);
    });
    it("retries 503 twice then succeeds", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `${http.base}/flaky` });
      expect(Buffer.from(res.content).toString()).to.equal("finally");
      expect(http.hits("/flaky")).to.equal(3);
    });
    it("gives up on a source that is always 503 with UNAVAILABLE within the deadline", async () => {
      const started = Date.now();
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/down` }, { deadlineMs: 5000 }), grpc.status.UNAVAILABLE);
      expect(Date.now() - started).to.be.lessThan(5000);
      expect(d.errorInfo!.reason).to.equal("DESIGN_SOURCE_UNAVAILABLE");
      expect(d.message).to.contain("HTTP 503");
      expect(http.hits("/down")).to.equal(4); // 1 + 3 retries
    });
    it("refuses a body over the limit without reading it all", async () => {
      const closed = new Promise<void>((r) => (onBigClosed = r));
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/big` }), grpc.status.RESOURCE_EXHAUSTED);
      expect(d.message).to.contain(String(1024 * 1024));
      // The fetcher hung up: nothing more goes out, and the source sent a fraction of its 50 MiB.
      await closed;
      expect(bigBytesSent).to.be.lessThan(20 * 1024 * 1024);
    });
    it("follows a redirect, and ends a redirect loop with an error", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `${http.base}/moved` });
      expect(Buffer.from(res.content).toString()).to.equal("kind: Site\n");
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/loop` }), grpc.status.FAILED_PRECONDITION);
      expect(d.errorInfo!.reason).to.equal("DESIGN_TOO_MANY_REDIRECTS");
    });
  });

  describe("https://", () => {
    it("trusts a source signed by the configured CA", async () => {
      const res = await h.client.getDesignDocuments({ designRef: `${https.base}/secure.yaml` });
      expect(Buffer.from(res.content).toString()).to.equal("secure: true\n");
    });
    it("never follows a redirect from https to http", async () => {
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${https.base}/to-http` }), grpc.status.PERMISSION_DENIED);
      expect(d.errorInfo!.reason).to.equal("DESIGN_INSECURE_REDIRECT");
    });
  });

  describe("deckhand+https://", () => {
    it("authenticates with Keystone once for several fetches, sends X-Auth-Token, and refreshes once after a 401", async () => {
      const ref = `deckhand+https://127.0.0.1:${deckhand.port}/api/v1.0/revisions/7/rendered-documents`;
      const a = await h.client.getDesignDocuments({ designRef: ref });
      expect(Buffer.from(a.content).toString()).to.equal("rendered by tok-1\n");
      // Distinct references, so each is a real fetch rather than a cache hit.
      await h.client.getDesignDocuments({ designRef: `${ref}?x=1` });
      await h.client.getDesignDocuments({ designRef: `${ref}?x=2` });
      expect(tokensIssued).to.equal(1);
      expect(keystone.hits("/v3/auth/tokens")).to.equal(1);
      const sent = deckhand.log.map((l) => l.headers["x-auth-token"]);
      expect(sent).to.deep.equal(["tok-1", "tok-1", "tok-1"]);
      rejectNextToken = true; // Deckhand now refuses tok-1
      const b = await h.client.getDesignDocuments({ designRef: `${ref}?x=3` });
      expect(Buffer.from(b.content).toString()).to.equal("rendered by tok-2\n");
      expect(tokensIssued).to.equal(2);
      expect(deckhand.log.slice(-2).map((l) => l.headers["x-auth-token"])).to.deep.equal(["tok-1", "tok-2"]);
    });
  });

  describe("deckhand+https:// token sharing", () => {
    it("a caller that gives up does not fail another caller waiting for the same token request", async () => {
      const ref = `deckhand+https://127.0.0.1:${deckhand.port}/api/v1.0/revisions/7/rendered-documents`;
      revokedUpTo = tokensIssued; // the cached token is refused: both fetches below need a new one
      let release = () => {};
      keystoneHeld = new Promise((r) => (release = r)); // Keystone answers once A has given up
      try {
        const before = tokensIssued;
        const requested = new Promise<void>((r) => (onTokenRequest = r));
        const a = h.client.getDesignDocuments({ designRef: `${ref}?share=a` }, { deadlineMs: 150 }).then(
          () => null,
          (e: unknown) => e,
        );
        await requested; // A's token request waits at Keystone
        // B's fetch asks for a token as it starts, and the token A dropped is gone: B waits for A's request.
        const bWaits = designSignal("fetchStarted", `${ref}?share=b`);
        const b = h.client.getDesignDocuments({ designRef: `${ref}?share=b` }, { deadlineMs: 10_000 });
        await bWaits;
        expect(decodeError(await a).code).to.equal(grpc.status.DEADLINE_EXCEEDED);
        release();
        expect(Buffer.from((await b).content).toString()).to.equal(`rendered by tok-${before + 1}\n`);
        expect(tokensIssued).to.equal(before + 1); // one request, shared
      } finally {
        release();
        keystoneHeld = undefined;
        onTokenRequest = () => {};
        revokedUpTo = 0;
      }
    });
  });

  describe("cache", () => {
    it("serves a second fetch within the TTL from the cache, and fetches again after it", async () => {
      const ref = `${http.base}/cached`;
      const a = await h.client.getDesignDocuments({ designRef: ref });
      const b = await h.client.getDesignDocuments({ designRef: ref });
      expect([a.fromCache, b.fromCache]).to.deep.equal([false, true]);
      expect(http.hits("/cached")).to.equal(1);
      expect(b.sha256).to.equal(a.sha256);
      clock.advance(400); // the test TTL
      const c = await h.client.getDesignDocuments({ designRef: ref });
      expect(c.fromCache).to.equal(false);
      expect(http.hits("/cached")).to.equal(2);
    });
    it("never caches a failure", async () => {
      await expectError(h.client.getDesignDocuments({ designRef: `${http.base}/fail-then-ok` }), grpc.status.NOT_FOUND);
      const res = await h.client.getDesignDocuments({ designRef: `${http.base}/fail-then-ok` });
      expect(Buffer.from(res.content).toString()).to.equal("now here");
    });
    it("runs a shared fetch to the latest deadline of its callers, not the first caller's", async () => {
      const ref = `${http.base}/slow-503-then-ok`;
      // A starts the fetch and B joins it; the source's first answer, a 503,
      // comes within A's deadline, and A's deadline passes during the retry,
      // which goes on for B, whose deadline is later.
      let send503 = () => {};
      let send200 = () => {};
      slow503Held = [new Promise((r) => (send503 = r)), new Promise((r) => (send200 = r))];
      const started = designSignal("fetchStarted", ref);
      const a = h.client.getDesignDocuments({ designRef: ref }, { deadlineMs: 250 }).then(
        () => null,
        (e: unknown) => e,
      );
      await started;
      const joined = designSignal("fetchJoined", ref);
      const bCall = h.client.getDesignDocuments({ designRef: ref }, { deadlineMs: 10_000 });
      await joined;
      send503();
      expect(decodeError(await a).code).to.equal(grpc.status.DEADLINE_EXCEEDED);
      send200();
      const b = await bCall;
      expect(Buffer.from(b.content).toString()).to.equal("second try");
      expect(http.hits("/slow-503-then-ok")).to.equal(2);
    });
    it("shares one upstream request among 20 concurrent identical fetches", async () => {
      const ref = `${http.base}/slow-once`;
      // The source answers once all 20 wait for the one fetch.
      let release = () => {};
      slowOnceHeld = new Promise((r) => (release = r));
      const allWaiting = designSignal("fetchJoined", ref, (_ref, waiting) => waiting === 20);
      const calls = Promise.all(Array.from({ length: 20 }, () => h.client.getDesignDocuments({ designRef: ref })));
      await allWaiting;
      release();
      const all = await calls;
      expect(all.every((r) => Buffer.from(r.content).toString() === "shared")).to.equal(true);
      expect(http.hits("/slow-once")).to.equal(1);
    });
  });

  describe("bad references", () => {
    it("answers INVALID_ARGUMENT listing the supported schemes, with credentials redacted", async () => {
      const d = await expectInvalid(h.client.getDesignDocuments({ designRef: "ftp://bob:hunter2@h/x" }), "design_ref");
      expect(d.message).to.contain("deckhand+https");
      expect(d.message).not.to.contain("hunter2");
      await expectInvalid(h.client.getDesignDocuments({ designRef: "" }), "design_ref");
      await expectInvalid(h.client.getDesignDocuments({ designRef: "not a uri" }), "design_ref");
    });
  });
});

describe("design documents without configuration", () => {
  const h = useServer();
  it("refuses file references with PERMISSION_DENIED saying how to allow a directory", async () => {
    const d = await expectError(h.client.getDesignDocuments({ designRef: "file:///etc/hostname" }), grpc.status.PERMISSION_DENIED);
    expect(d.message).to.contain("STATEMGMT_DESIGN_ROOTS");
  });
  it("refuses https sources whose CA is not trusted", async () => {
    const pki = await makeCa();
    const src = await startSource({ "/x": (_q, r) => r.writeHead(200).end("x") }, pki);
    try {
      const d = await expectError(h.client.getDesignDocuments({ designRef: `${src.base}/x` }, { deadlineMs: 10_000 }), grpc.status.UNAVAILABLE);
      expect(d.message).to.match(/certificate|self.signed|unable to verify/i);
    } finally {
      await src.close();
    }
  });
});

describe("design cache (the fetcher in process, a fake source, a clock the test moves)", () => {
  let now = 1_000_000;
  const bodies: Record<string, string> = { "/a": "aaaa", "/b": "bbbb", "/c": "cccc", "/huge": "x".repeat(11), "/empty": "" };
  let fetches: string[] = [];
  const source: DesignDriver = {
    fetch: async (url) => {
      fetches.push(url.pathname);
      return { content: Buffer.from(bodies[url.pathname]!), contentType: "" };
    },
  };
  const fetcher = (o: { ttlMs?: number; cacheMaxBytes?: number } = {}) =>
    new DesignFetcher(new Map([["http", source]]), {
      ttlMs: o.ttlMs ?? 1000,
      cacheMaxBytes: o.cacheMaxBytes ?? 10,
      maxBytes: 1024,
      defaultTimeoutMs: 5000,
      now: () => now,
    });
  const get = (f: DesignFetcher, p: string) => f.fetch(`http://src${p}`, new AbortController().signal, undefined);
  beforeEach(() => (fetches = []));

  it("keeps documents up to STATEMGMT_DESIGN_CACHE_MAX_BYTES in all, the least recently used going first, and none larger than that", async () => {
    const f = fetcher();
    const cached: string[] = [];
    f.on("cached", (ref, bytes) => cached.push(`${ref} ${bytes}`));
    await get(f, "/a");
    await get(f, "/b");
    expect((await get(f, "/a")).fromCache).to.equal(true); // a is now the most recently used
    await get(f, "/c"); // 12 bytes with a and b: b goes
    await get(f, "/huge"); // 11 bytes: not kept, and a and c stay
    expect((await get(f, "/a")).fromCache).to.equal(true);
    expect((await get(f, "/c")).fromCache).to.equal(true);
    expect((await get(f, "/b")).fromCache).to.equal(false);
    expect((await get(f, "/huge")).fromCache).to.equal(false);
    expect(fetches).to.deep.equal(["/a", "/b", "/c", "/huge", "/b", "/huge"]);
    expect(cached).to.deep.equal(["http://src/a 4", "http://src/b 4", "http://src/c 4", "http://src/b 4"]);
  });

  it("serves a document for STATEMGMT_DESIGN_CACHE_TTL_MS from its fetch, not from its last use", async () => {
    const f = fetcher();
    await get(f, "/a");
    now += 999;
    expect((await get(f, "/a")).fromCache).to.equal(true);
    now += 1; // 1000 ms after the fetch
    expect((await get(f, "/a")).fromCache).to.equal(false);
    expect(fetches).to.deep.equal(["/a", "/a"]);
  });

  it("caches nothing with a TTL or a size of 0; an empty document is cached", async () => {
    for (const f of [fetcher({ ttlMs: 0 }), fetcher({ cacheMaxBytes: 0 })]) {
      await get(f, "/a");
      expect((await get(f, "/a")).fromCache).to.equal(false);
    }
    const f = fetcher();
    await get(f, "/empty");
    expect((await get(f, "/empty")).fromCache).to.equal(true);
    expect(fetches).to.deep.equal(["/a", "/a", "/a", "/a", "/empty"]);
  });
});
