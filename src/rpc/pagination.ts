// Opaque keyset page tokens: the sort key of the last row returned, bound to
// the filters the token was issued for.
import { createHash } from "node:crypto";
import { InvalidArgumentError } from "../errors.js";

interface TokenBody {
  /** Version of this format. */
  v: 1;
  /** Fingerprint of the filters. */
  f: string;
  /** Sort key, as strings (bigints do not survive JSON). */
  k: string[];
}

/** A short hash of the request's filters (everything but page size and token). */
export function filterFingerprint(filters: unknown): string {
  const json = JSON.stringify(filters, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  return createHash("sha256").update(json).digest("base64url").slice(0, 16);
}

export function encodePageToken(fingerprint: string, key: string[]): string {
  const body: TokenBody = { v: 1, f: fingerprint, k: key };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** The sort key in a token; INVALID_ARGUMENT when it is malformed or issued for other filters. */
export function decodePageToken(field: string, token: string, fingerprint: string, keyLength: number): string[] | null {
  if (token === "") return null;
  let body: TokenBody;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as TokenBody;
  } catch {
    throw InvalidArgumentError.field(field, "is not a page token issued by this service");
  }
  if (body?.v !== 1 || !Array.isArray(body.k) || body.k.length !== keyLength || !body.k.every((x) => typeof x === "string")) {
    throw InvalidArgumentError.field(field, "is not a page token issued by this service");
  }
  if (body.f !== fingerprint) {
    throw InvalidArgumentError.field(field, "was issued for different filters; repeat the request's filters unchanged or start again without a token");
  }
  return body.k;
}
