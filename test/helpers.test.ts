// The util/ helpers every retry loop and shared fetch is built on.
import { expect } from "chai";
import { Backoff, backoffDelay } from "../src/util/backoff.js";
import { reconnectBackoff } from "../src/db/connect.js";

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
});
