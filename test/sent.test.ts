import { expect } from "chai";
import { SentVersions } from "../src/watch/sent.js";

// The memory of a WatchTasks stream (src/watch/sent.ts), with a test clock.
describe("WatchTasks sent versions", () => {
  it("forgets finished tasks after the grace period, oldest first, and keeps unfinished ones", () => {
    let now = 0;
    const sent = new SentVersions(60_000, () => now);
    sent.record("running", 3n, "k", false);
    sent.record("done-early", 5n, "k", true);
    now = 30_000;
    sent.record("done-late", 7n, "k", true);
    now = 60_000;
    sent.evictFinished();
    expect([sent.get("running")?.version, sent.get("done-early")?.version, sent.get("done-late")?.version]).to.deep.equal([3n, undefined, 7n]);
    now = 89_999;
    sent.evictFinished();
    expect(sent.get("done-late")?.version).to.equal(7n);
    now = 90_000;
    sent.evictFinished();
    expect(sent.get("done-late")?.version).to.equal(undefined);
    now = 10_000_000;
    sent.evictFinished();
    expect(sent.get("running")?.version).to.equal(3n);
    expect(sent.size).to.equal(1);
  });

  it("restarts the grace period when a finished task is recorded again, and forgets on request", () => {
    let now = 0;
    const sent = new SentVersions(100, () => now);
    sent.record("a", 1n, "k", true);
    sent.record("b", 1n, "k", true);
    now = 90;
    sent.record("a", 2n, "k", true); // a message appended after it finished: a newer version
    now = 100;
    sent.evictFinished();
    expect([sent.get("a")?.version, sent.get("b")?.version]).to.deep.equal([2n, undefined]);
    sent.record("c", 4n, "k", false);
    sent.forget("c");
    sent.forget("a");
    expect(sent.size).to.equal(0);
  });

  it("stops tracking a task as finished when it is recorded unfinished", () => {
    let now = 0;
    const sent = new SentVersions(10, () => now);
    sent.record("t", 1n, "k", true);
    sent.record("t", 2n, "k", false);
    now = 1_000;
    sent.evictFinished();
    expect(sent.get("t")?.version).to.equal(2n);
  });
});
