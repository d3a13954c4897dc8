// http:// and https:// references: a GET over the outbound HTTP client
// (http/: TLS, redirects, retries), with basic auth from the reference's
// userinfo, and the final response mapped to a document or the matching
// error. deckhand.ts maps its responses here too.
import { FailedPreconditionError, NotFoundError, PermissionDeniedError } from "../core/errors.js";
import { header, RetryableStatus, type HttpClient, type HttpResponse } from "../http/client.js";
import type { DesignDocument, DesignDriver, FetchContext } from "./driver.js";
import { tooLarge } from "./file.js";

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
