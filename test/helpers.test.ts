// The util/ helpers every retry loop and shared fetch is built on.
import { expect } from "chai";
import { Backoff, backoffDelay } from "../src/util/backoff.js";
import { reconnectBackoff } from "../src/db/connect.js";
import { SharedWork } from "../src/util/sharedWork.js";

/** A promise and the functions that settle it. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("util helpers", () => {
  describe("backoffDelay", () => {
    const policy = { initialMs: 10, maxMs: 250, jitter: 0.5 };
    it("gives the delay of a numbered attempt, as Backoff's next() gives it in turn", () => {
      const b = new Backoff(policy, () => 1);
      const inTurn = Array.from({ length: 7 }, () => b.next());
      expect(inTurn).to.deep.equal([10, 20, 40, 80, 160, 250, 250]);
      expect(Array.from({ length: 7 }, (_, i) => backoffDelay(policy, i, () => 1))).to.deep.equal(inTurn);
    });
    it("keeps the share of each delay that is not random", () => {
      expect(backoffDelay(policy, 2, () => 0)).to.equal(20);
      expect(backoffDelay({ ...policy, jitter: 1 }, 2, () => 0)).to.equal(0);
      expect(backoffDelay({ ...policy, jitter: 0 }, 2, () => 0.7)).to.equal(40);
    });
    it("postgres.js's reconnect delay: 10-20 ms after the first failure, at most 0.25 s, in seconds", () => {
      for (let i = 0; i < 100; i++) {
        const first = reconnectBackoff(1);
        expect(first).to.be.within(0.01, 0.02);
        expect(reconnectBackoff(30)).to.be.within(0.125, 0.25);
      }
    });
  });

  describe("SharedWork", () => {
    it("counts its flights (Keystone's bound on validations in flight): one per key, kept until it settles, waited for or not", async () => {
      const work = new SharedWork<string, number>({ whenAbandoned: "finish" });
      const a = deferred<number>();
      const b = deferred<number>();
      const left = new AbortController();
      expect(work.size).to.equal(0);
      const first = work.wait("a", undefined, () => ({ promise: a.promise, context: undefined }));
      const joined = work.wait("a", undefined, () => ({ promise: Promise.resolve(-1), context: undefined }));
      const gaveUp = work.wait("b", left.signal, () => ({ promise: b.promise, context: undefined })).catch((e: unknown) => e);
      expect(work.size).to.equal(2);
      left.abort();
      await gaveUp;
      expect(work.size).to.equal(2); // "finish": b runs on with nobody waiting
      a.resolve(1);
      expect([await first, await joined]).to.deep.equal([1, 1]);
      expect(work.size).to.equal(1);
      b.resolve(2);
      await b.promise; // SharedWork's own reaction to it, which forgets the flight, was attached first
      expect(work.size).to.equal(0);
    });
    it("forgets an abandoned flight at once with whenAbandoned: abort", async () => {
      const work = new SharedWork<string, number>({ whenAbandoned: "abort" });
      const left = new AbortController();
      let aborted: AbortSignal | undefined;
      const waiting = work
        .wait("a", left.signal, (signal) => {
          aborted = signal;
          return { promise: new Promise<number>(() => {}), context: undefined };
        })
        .catch((e: unknown) => e);
      expect(work.size).to.equal(1);
      left.abort();
      await waiting;
      expect(work.size).to.equal(0);
      expect(aborted?.aborted).to.equal(true);
    });
  });
});
