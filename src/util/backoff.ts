// Exponential backoff with jitter, the one policy shape every retry loop of
// the service uses (the LISTEN connection, watch reads, design sources).

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
    const cap = Math.min(this.policy.maxMs, this.policy.initialMs * 2 ** this.attempts++);
    return cap * (1 - this.policy.jitter) + this.random() * cap * this.policy.jitter;
  }

  reset(): void {
    this.attempts = 0;
  }
}
