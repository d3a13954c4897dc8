// Exponential backoff with jitter, the one policy shape every retry loop of
// the service uses (the LISTEN connection, watch reads, design sources, the
// database pool's reconnects, the client library's and the CLI's resumed
// streams).

export interface BackoffPolicy {
  /** Cap of the first delay; it doubles per attempt. */
  initialMs: number;
  /** Largest cap. */
  maxMs: number;
  /**
   * Share of each delay that is random: 1 is full jitter (anywhere in
   * [0, cap]), 0.5 "equal" jitter (in [cap/2, cap]). Jitter spreads replicas
   * that lost the same database so they do not retry in lockstep.
   */
  jitter: number;
}

/**
 * The delay before attempt `attempt` (0 for the first delay), for a caller
 * that counts attempts itself (postgres.js passes its own count to its
 * backoff option).
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxMs, policy.initialMs * 2 ** attempt);
  return cap * (1 - policy.jitter) + random() * cap * policy.jitter;
}

/** Delays of successive attempts; reset() after a success starts over. */
export class Backoff {
  private attempts = 0;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** Attempts counted since the last reset (for log lines). */
  get attempt(): number {
    return this.attempts;
  }

  /** The delay before the next attempt. */
  next(): number {
    return backoffDelay(this.policy, this.attempts++, this.random);
  }

  reset(): void {
    this.attempts = 0;
  }
}
