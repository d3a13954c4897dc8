// A rate limit per client IP address for the calls that reach the database
// without a token: the key-authorized methods nodes call
// (ReportBootActionStatus, VerifyBootActionKey; auth/roles.ts). Each address
// has a token bucket (`burst` calls at once, refilled at `ratePerSecond`);
// a call finding its bucket empty is refused with RESOURCE_EXHAUSTED
// RATE_LIMITED before its guard or handler runs, so before any database work.
//
// In memory, per process: with several replicas each allows the rate. The
// map is bounded: a bucket that has refilled is the same as none and is
// dropped, and at `maxPeers` the least recently used one goes (a flood from
// more addresses than that gets fresh buckets: the limit holds per address,
// not against an attacker with very many addresses).
import { isIP } from "node:net";
import { KEY_AUTHORIZED_METHODS } from "../auth/roles.js";
import type { Guard } from "../contract/contract.js";
import { ResourceExhaustedError } from "../core/errors.js";

export interface RateLimit {
  /** Calls per second each address may make; 0: no limit. */
  ratePerSecond: number;
  /** Calls an idle address may make at once. */
  burst: number;
}

/** 50 calls/s, 100 at once, per address (STATEMGMT_NODE_CALL_RATE, STATEMGMT_NODE_CALL_BURST). */
export const DEFAULT_NODE_CALL_LIMIT: RateLimit = { ratePerSecond: 50, burst: 100 };

/** Addresses tracked at most. */
export const MAX_TRACKED_PEERS = 100_000;

interface Bucket {
  tokens: number;
  /** When `tokens` was computed (ms, on the limiter's clock). */
  at: number;
}

export class PeerRateLimiter {
  /** In least recently used order: a used bucket moves to the end. */
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    /** Milliseconds, on any monotonic-enough clock (the server's Clock.nowMs). */
    private readonly now: () => number,
    private readonly onRefused: () => void = () => {},
    private readonly maxPeers = MAX_TRACKED_PEERS,
  ) {}

  /** Addresses tracked now. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes a call's token from `address`'s bucket; throws RATE_LIMITED when it is empty. */
  take(address: string): void {
    const { ratePerSecond: rate, burst } = this.limit;
    if (rate <= 0) return;
    const now = this.now();
    const b = this.buckets.get(address);
    let tokens = burst;
    if (b) {
      tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.at) * rate) / 1000);
      this.buckets.delete(address);
    }
    this.dropOldest(now);
    if (tokens < 1) {
      this.buckets.set(address, { tokens, at: now });
      this.onRefused();
      const retryAfterMs = Math.ceil(((1 - tokens) * 1000) / rate);
      throw new ResourceExhaustedError(
        "RATE_LIMITED",
        `too many calls from ${address}: at most ${rate} per second (bursts of ${burst}) per client address for calls authorized by an identity key ` +
          `(STATEMGMT_NODE_CALL_RATE, STATEMGMT_NODE_CALL_BURST); retry in ${retryAfterMs} ms`,
        { peer: address, limit: String(rate), burst: String(burst), retry_after_ms: String(retryAfterMs) },
      );
    }
    this.buckets.set(address, { tokens: tokens - 1, at: now });
  }

  /** Drops the least recently used buckets that have refilled (as good as none), and one beyond maxPeers. */
  private dropOldest(now: number): void {
    const { ratePerSecond: rate, burst } = this.limit;
    for (let checked = 0; checked < 2; checked++) {
      const oldest = this.buckets.entries().next();
      if (oldest.done) return;
      const [address, b] = oldest.value;
      const full = b.tokens + (Math.max(0, now - b.at) * rate) / 1000 >= burst;
      if (!full && this.buckets.size < this.maxPeers) return;
      this.buckets.delete(address);
    }
  }
}

/**
 * The address of a grpc-js peer name ("127.0.0.1:5000", "::1:5000",
 * "::ffff:10.0.0.1:5000", "[::1]:5000"), without its port; IPv4-mapped IPv6
 * addresses as IPv4. A name that is not an address stays as it is.
 */
export function peerAddress(peer: string): string {
  let host = peer;
  if (!isIP(host)) {
    const i = peer.lastIndexOf(":");
    if (i > 0 && /^\d+$/.test(peer.slice(i + 1))) host = peer.slice(0, i);
  }
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  return mapped ? mapped[1]! : host;
}

/** `guard`, with the key-authorized methods first taking a token of their peer address's bucket. */
export function limitKeyAuthorized(guard: Guard, limiter: PeerRateLimiter): Guard {
  return (call, method, signal) => {
    if (KEY_AUTHORIZED_METHODS.has(method.name)) limiter.take(peerAddress(call.getPeer()));
    return guard(call, method, signal);
  };
}
