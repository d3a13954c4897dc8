// Timestamps cross the database boundary as microseconds since the Unix epoch
// (bigint), because PostgreSQL keeps microseconds and a JS Date keeps only
// milliseconds: keyset page tokens and round-tripped timestamps must be exact.

/** Microseconds since 1970-01-01T00:00:00Z. */
export type Micros = bigint;

/**
 * The instants this service stores and accepts: years 1 to 9999 (RFC 3339's
 * range, inside PostgreSQL's timestamptz and what formatMicros writes).
 */
export const MIN_MICROS: Micros = -62_135_596_800_000_000n; // 0001-01-01T00:00:00Z
export const MAX_MICROS: Micros = 253_402_300_799_999_999n; // 9999-12-31T23:59:59.999999Z
/** Largest PostgreSQL bigint: sequences, ids, terms and versions stay below it. */
export const MAX_BIGINT = 2n ** 63n - 1n;

const TIMESTAMPTZ = /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)?( BC)?$/;

/** Parses PostgreSQL's text output of a timestamptz (any session TimeZone, ISO DateStyle). */
export function parseTimestamptz(text: string): Micros {
  return parseUtcFast(text) ?? parseGeneral(text);
}

/** 10^(6 − number of fraction digits), by string length. */
const POW10 = [0, 0, 0, 0, 100000, 10000, 1000, 100, 10, 1];

/**
 * The shape our sessions produce (TimeZone UTC, years 1000–9999):
 * "YYYY-MM-DD HH:MM:SS[.f…]+00", read without a regular expression. A list
 * page parses 400 of these; this is about 4 times faster than parseGeneral.
 * Anything else returns undefined.
 */
function parseUtcFast(t: string): Micros | undefined {
  const n = t.length;
  if (n < 22 || n > 29 || t.charCodeAt(4) !== 45 /* - */ || t.charCodeAt(7) !== 45 || t.charCodeAt(10) !== 32 /* space */) return undefined;
  if (t.charCodeAt(13) !== 58 /* : */ || t.charCodeAt(16) !== 58) return undefined;
  if (t.charCodeAt(n - 3) !== 43 /* + */ || t.charCodeAt(n - 2) !== 48 || t.charCodeAt(n - 1) !== 48) return undefined;
  const year = digits(t, 0, 4);
  if (!(year >= 1000)) return undefined; // Date.UTC would read 0–99 as 1900–1999
  let frac = 0;
  if (n > 22) {
    if (n === 23 || t.charCodeAt(19) !== 46 /* . */) return undefined;
    frac = digits(t, 20, n - 3) * POW10[n - 20]!;
  }
  const ms = Date.UTC(year, digits(t, 5, 7) - 1, digits(t, 8, 10), digits(t, 11, 13), digits(t, 14, 16), digits(t, 17, 19));
  if (!Number.isInteger(ms) || !Number.isInteger(frac)) return undefined;
  return BigInt(ms) * 1000n + BigInt(frac);
}

/** The digits of t at [from, to) as a number; NaN when one is not a digit. */
function digits(t: string, from: number, to: number): number {
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = t.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return NaN;
    v = v * 10 + c;
  }
  return v;
}

function parseGeneral(text: string): Micros {
  const m = TIMESTAMPTZ.exec(text);
  if (!m) throw new Error(`unexpected timestamptz text ${JSON.stringify(text)}`);
  const [, y, mo, d, h, mi, s, frac, sign, oh, om, os, bc] = m;
  // Date.UTC would read years 0–99 as 1900–1999; setUTCFullYear takes them as
  // given. 1 BC is year 0 (a local time just before 0001-01-01 UTC, west of it).
  const date = new Date(0);
  date.setUTCFullYear(bc ? 1 - Number(y) : Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s), 0);
  const ms = date.getTime();
  let micros = BigInt(ms) * 1000n + BigInt((frac ?? "").padEnd(6, "0"));
  if (sign) {
    const offsetSeconds = Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0);
    micros -= BigInt((sign === "-" ? -1 : 1) * offsetSeconds) * 1_000_000n;
  }
  return micros;
}

/** Formats microseconds as an RFC 3339 UTC string PostgreSQL reads exactly. */
export function formatMicros(micros: Micros): string {
  const ms = micros / 1000n - (micros % 1000n < 0n ? 1n : 0n);
  const sub = ((micros % 1_000_000n) + 1_000_000n) % 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, 19)}.${sub.toString().padStart(6, "0")}Z`;
}
