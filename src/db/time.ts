// Timestamps cross the database boundary as microseconds since the Unix epoch
// (bigint), because PostgreSQL keeps microseconds and a JS Date keeps only
// milliseconds: keyset page tokens and round-tripped timestamps must be exact.

/** Microseconds since 1970-01-01T00:00:00Z. */
export type Micros = bigint;

const TIMESTAMPTZ =
  /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)?$/;

/** Parses PostgreSQL's text output of a timestamptz (any session TimeZone, ISO DateStyle). */
export function parseTimestamptz(text: string): Micros {
  const m = TIMESTAMPTZ.exec(text);
  if (!m) throw new Error(`unexpected timestamptz text ${JSON.stringify(text)}`);
  const [, y, mo, d, h, mi, s, frac, sign, oh, om, os] = m;
  // Date.UTC would read years 0–99 as 1900–1999; setUTCFullYear takes them as given.
  const date = new Date(0);
  date.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
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
