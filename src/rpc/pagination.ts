// Opaque keyset page tokens: the sort key of the last row returned, bound to
// the filters the token was issued for, and signed (HMAC-SHA256 with a
// per-database secret, migrations/0003) so that a client can neither forge
// nor alter the cursor. Even a token that verifies has each key part checked
// against its kind before it reaches SQL.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { InvalidArgumentError } from "../core/errors.js";
import { MAX_BIGINT, MAX_MICROS, MIN_MICROS } from "../core/time.js";

interface TokenBody {
  /** Version of this format. */
  v: 2;
  /** Fingerprint of the filters. */
  f: string;
  /** Sort key, as strings (bigints do not survive JSON). */
  k: string[];
}

/** What one part of a sort key holds. */
export type KeyPart = "micros" | "uuid" | "int64" | "ulid";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const INT_RE = /^-?[0-9]{1,19}$/;
const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
/** Bytes of the HMAC kept in a token: 128 bits. */
const MAC_BYTES = 16;
/** Longest token accepted; ours are about 150 characters. */
const MAX_TOKEN_CHARS = 1024;

/** A short hash of the request's filters (everything but page size and token). */
export function filterFingerprint(filters: unknown): string {
  const json = JSON.stringify(filters, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  return createHash("sha256").update(json).digest("base64url").slice(0, 16);
}

export class PageTokens {
  constructor(private readonly secret: Buffer) {}

  encode(fingerprint: string, key: string[]): string {
    const body: TokenBody = { v: 2, f: fingerprint, k: key };
    const payload = Buffer.from(JSON.stringify(body)).toString("base64url");
    return `${payload}.${this.mac(payload).toString("base64url")}`;
  }

  /** The sort key in a token (null for ""); INVALID_ARGUMENT when it is not one we issued for these filters. */
  decode(field: string, token: string, fingerprint: string, parts: readonly KeyPart[]): string[] | null {
    if (token === "") return null;
    const notOurs = () => InvalidArgumentError.field(field, "is not a page token issued by this service; start again without a token");
    const dot = token.indexOf(".");
    if (token.length > MAX_TOKEN_CHARS || dot < 0) throw notOurs();
    const payload = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), "base64url");
    const want = this.mac(payload);
    if (mac.length !== want.length || !timingSafeEqual(mac, want)) throw notOurs();
    let body: TokenBody;
    try {
      body = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as TokenBody;
    } catch {
      throw notOurs();
    }
    if (body?.v !== 2 || !Array.isArray(body.k) || body.k.length !== parts.length || !body.k.every((x, i) => valid(parts[i]!, x))) {
      throw notOurs();
    }
    if (body.f !== fingerprint) {
      throw InvalidArgumentError.field(field, "was issued for different filters; repeat the request's filters unchanged or start again without a token");
    }
    return body.k;
  }

  private mac(payload: string): Buffer {
    return createHmac("sha256", this.secret).update(payload).digest().subarray(0, MAC_BYTES);
  }
}

function valid(part: KeyPart, x: unknown): boolean {
  if (typeof x !== "string") return false;
  switch (part) {
    case "uuid":
      return UUID_RE.test(x);
    case "int64":
      return INT_RE.test(x) && BigInt(x) >= 0n && BigInt(x) <= MAX_BIGINT;
    case "micros":
      return INT_RE.test(x) && BigInt(x) >= MIN_MICROS && BigInt(x) <= MAX_MICROS;
    case "ulid":
      return ULID_RE.test(x);
  }
}
