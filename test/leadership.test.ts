import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { tokenHash } from "../src/auth/tokenFile.js";
import type { AuthConfig } from "../src/config.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import type { WatchLeaderResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { expectError, expectInvalid, quietPeriod, useServer, type Harness } from "./kit/index.js";
import { TestClock } from "./clock.js";

const ttl = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
const micros = (t: { seconds: bigint; nanos: number } | undefined) => t!.seconds * 1_000_000n + BigInt(t!.nanos / 1000);

/** Moves the server's clock past the lease's ttl: the election then has no leader (without waiting for it). */
async function expire(h: Harness, clock: TestClock, election: string, ttlMs: number) {
  clock.advance(ttlMs);
  expect((await h.client.getLeader({ election })).leader, `${election} still has a leader ${ttlMs} ms on`).to.equal(undefined);
}

/** Items as they arrive, and a wait for the k-th. */
class Arrivals<T> {
  readonly items: T[] = [];
  private readonly waiters: { k: number; resolve(): void }[] = [];

  push(item: T): void {
    this.items.push(item);
    for (const w of this.waiters.filter((w) => this.items.length >= w.k)) w.resolve();
  }

  /** Resolves once k items arrived; rejects after ms. */
  until(k: number, ms = 10_000): Promise<void> {
    if (this.items.length >= k) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${k} items: only ${this.items.length} within ${ms} ms`)), ms);
      this.waiters.push({
        k,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

function leadershipSuite(timeZone: string) {
  describe(`leader election (session TimeZone ${timeZone})`, () => {
    const clock = new TestClock();
    const h = useServer({ timeZone, clock });
    afterEach(() => clock.reset());
    let n = 0;
    const election = () => `e${++n}-${timeZone.replace(/\W/g, "")}`;

    it("A claims, B is refused while A's lease runs, then B takes over with the next term", async function () {
      this.timeout(10_000);
      const e = election();
      const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(1000) });
      expect(a.isLeader).to.equal(true);
      expect(a.leader!.instanceId).to.equal("A");
      const b = await h.client.claimLeadership({ election: e, instanceId: "B", ttl: ttl(1000) });
      expect(b.isLeader).to.equal(false);
      expect(b.leader!.instanceId).to.equal("A");
      expect(b.leader!.term).to.equal(a.leader!.term);
      // The lease lasts ttl on the database clock.
      expect(micros(a.leader!.expiresAt) - micros(a.leader!.renewedAt)).to.equal(1_000_000n);
      await expire(h, clock, e, 1000);
      const b2 = await h.client.claimLeadership({ election: e, instanceId: "B", ttl: ttl(1000) });
      expect(b2.isLeader).to.equal(true);
      expect(b2.leader!.term).to.equal(a.leader!.term + 1n);
    });

    it("renews the current term; after a takeover the old holder's renew is LEADERSHIP_LOST and its resign changes nothing", async function () {
      this.timeout(10_000);
      const e = election();
      const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(1000) });
      clock.advance(10); // so the renewal's expiry is later
      const r = await h.client.renewLeadership({ election: e, instanceId: "A", term: a.leader!.term });
      expect(r.leader!.term).to.equal(a.leader!.term);
      expect(micros(r.leader!.expiresAt) > micros(a.leader!.expiresAt)).to.equal(true);
      // Claiming again while holding is a renewal: same term.
      const again = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(1000) });
      expect(again.isLeader).to.equal(true);
      expect(again.leader!.term).to.equal(a.leader!.term);
      await expire(h, clock, e, 1000);
      const b = await h.client.claimLeadership({ election: e, instanceId: "B", ttl: ttl(5000) });
      expect(b.isLeader).to.equal(true);
      const lost = await expectError(h.client.renewLeadership({ election: e, instanceId: "A", term: a.leader!.term }), grpc.status.FAILED_PRECONDITION);
      expect(lost.errorInfo!.reason).to.equal("LEADERSHIP_LOST");
      expect(lost.errorInfo!.metadata.leader).to.equal("B");
      expect(lost.errorInfo!.metadata.leader_term).to.equal(b.leader!.term.toString());
      const resign = await h.client.resignLeadership({ election: e, instanceId: "A", term: a.leader!.term });
      expect(resign.resigned).to.equal(false);
      const { leader } = await h.client.getLeader({ election: e });
      expect(leader!.instanceId).to.equal("B");
      expect(leader!.term).to.equal(b.leader!.term);
    });

    it("lets a waiting claimer win at once after a resignation; WatchLeader sees claim, expiry and resignation in order", async function () {
      this.timeout(15_000);
      const e = election();
      const stream = h.client.watchLeader({ election: e });
      const events = new Arrivals<string | null>();
      const reading = (async () => {
        for await (const ev of stream as AsyncIterable<WatchLeaderResponse>) {
          events.push(ev.leader ? `${ev.leader.instanceId}#${ev.leader.term}` : null);
          if (events.items.length === 6) break;
        }
      })();
      await events.until(1); // the initial state: no leader
      const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) });
      await events.until(2);
      // No renewal: the server notices the expiry by itself (its wait for
      // the lease to lapse runs on the clock, moved here past the 60 s ttl).
      clock.advance(60_000);
      await events.until(3);
      const b = await h.client.claimLeadership({ election: e, instanceId: "B", ttl: ttl(60_000) });
      await events.until(4);
      const resigned = await h.client.resignLeadership({ election: e, instanceId: "B", term: b.leader!.term });
      expect(resigned.resigned).to.equal(true);
      const c = await h.client.claimLeadership({ election: e, instanceId: "C", ttl: ttl(60_000) });
      expect(c.isLeader).to.equal(true); // at once, not after B's 60 s lease
      await reading;
      // The resignation is its own event even though C claimed right after it.
      expect(events.items).to.deep.equal([null, `A#${a.leader!.term}`, null, `B#${b.leader!.term}`, null, `C#${c.leader!.term}`]);
    });

    it("fences ClaimNextTask and UpdateTask: a stale term changes nothing", async function () {
      this.timeout(10_000);
      const e = election();
      const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(1000) });
      const action = `fenced_${n}`;
      const { task } = await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED });
      await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED });
      const claimed = await h.client.claimNextTask({ instanceId: "A", actions: [action], fence: { election: e, term: a.leader!.term } });
      expect(claimed.task!.taskId).to.equal(task!.taskId);
      expect(claimed.task!.claimedTerm).to.equal(a.leader!.term);
      await expire(h, clock, e, 1000);
      const b = await h.client.claimLeadership({ election: e, instanceId: "B", ttl: ttl(5000) });
      const before = (await h.pg.query("select task_id, version, status from tasks where action = $1 order by task_id", [action])).rows;
      const stale = await expectError(
        h.client.claimNextTask({ instanceId: "A", actions: [action], fence: { election: e, term: a.leader!.term } }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(stale.errorInfo!.reason).to.equal("NOT_LEADER");
      expect(stale.errorInfo!.metadata.leader).to.equal("B");
      const staleUpdate = await expectError(
        h.client.updateTask({
          task: { taskId: task!.taskId, status: TaskStatus.COMPLETE },
          updateMask: { paths: ["status"] },
          fence: { election: e, term: a.leader!.term },
        }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(staleUpdate.errorInfo!.reason).to.equal("NOT_LEADER");
      const after = (await h.pg.query("select task_id, version, status from tasks where action = $1 order by task_id", [action])).rows;
      expect(after).to.deep.equal(before);
      // The new leader finds what the old one left RUNNING.
      const left = await h.client.listTasks({ claimedTerm: a.leader!.term, statuses: [TaskStatus.RUNNING] });
      expect(left.tasks.map((t) => t.taskId)).to.deep.equal([task!.taskId]);
      const ok = await h.client.updateTask({
        task: { taskId: task!.taskId, status: TaskStatus.QUEUED },
        updateMask: { paths: ["status"] },
        fence: { election: e, term: b.leader!.term },
      });
      expect(ok.task!.status).to.equal(TaskStatus.QUEUED);
    });

    it("never lets two of 10 racing instances hold an unexpired lease; terms strictly increase", async function () {
      this.timeout(60_000);
      const e = election();
      let attempts = 0;
      await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const me = `racer-${i}`;
          while (attempts < 200) {
            attempts++;
            const r = await h.client.claimLeadership({ election: e, instanceId: me, ttl: ttl(1000) });
            if (r.isLeader) {
              await quietPeriod(Math.random() * 10, "leads for a moment");
              if (Math.random() < 0.8) await h.client.resignLeadership({ election: e, instanceId: me, term: r.leader!.term });
            }
            await quietPeriod(Math.random() * 15, "jitters the racers' next claims");
          }
        }),
      );
      const { rows } = await h.pg.query("select term::int, holder, acquired_at, ends_at from lease_history where election = $1 order by term", [e]);
      expect(rows.length).to.be.greaterThan(5); // leadership really changed hands, many times
      for (let i = 1; i < rows.length; i++) {
        expect(rows[i].term).to.equal(rows[i - 1].term + 1);
        // Each term begins only once the previous one has ended.
        expect(rows[i].acquired_at.getTime()).to.be.at.least(rows[i - 1].ends_at.getTime());
      }
    });

    it("refuses bad requests", async () => {
      await expectInvalid(h.client.claimLeadership({ instanceId: "A", ttl: ttl(999) }), "ttl");
      await expectInvalid(h.client.claimLeadership({ instanceId: "A", ttl: ttl(3_600_001) }), "ttl");
      await expectInvalid(h.client.claimLeadership({ instanceId: "A" }), "ttl");
      await expectInvalid(h.client.claimLeadership({ instanceId: "", ttl: ttl(1000) }), "instance_id");
      await expectInvalid(h.client.claimLeadership({ election: "bad election!", instanceId: "A", ttl: ttl(1000) }), "election");
      await expectInvalid(h.client.renewLeadership({ instanceId: "A", term: 0n }), "term");
      await expectInvalid(h.client.claimNextTask({ instanceId: "A", fence: { election: "x", term: 0n } }), "fence.term");
    });

    it("uses the default election when none is named", async () => {
      const r = await h.client.claimLeadership({ instanceId: "orch-1", ttl: ttl(1000) });
      expect(r.leader!.election).to.equal("orchestrator");
      expect((await h.client.getLeader({})).leader!.instanceId).to.equal("orch-1");
      await h.client.resignLeadership({ instanceId: "orch-1", term: r.leader!.term });
      expect((await h.client.getLeader({})).leader).to.equal(undefined);
    });
  });
}

leadershipSuite("UTC");
leadershipSuite("Pacific/Chatham");

// Leases belong to their holder: with authentication, only the subject that
// claimed a term (or an admin) may renew it, resign it or fence work with it.
describe("leader election: leases belong to the subject that claimed them", function () {
  this.timeout(30_000);
  const clock = new TestClock();
  afterEach(() => clock.reset());
  const tokens = { a: randomBytes(32).toString("hex"), b: randomBytes(32).toString("hex"), admin: randomBytes(32).toString("hex") };
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "lease-tokens-"));
    auth.tokensFile = path.join(dir, "tokens.json");
    const identities = [
      { subject: "orch-a", roles: ["orchestrator"], sha256: tokenHash(tokens.a) },
      { subject: "orch-b", roles: ["orchestrator"], sha256: tokenHash(tokens.b) },
      { subject: "root-1", roles: ["admin"], sha256: tokenHash(tokens.admin) },
    ];
    await writeFile(auth.tokensFile, JSON.stringify({ identities }));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const h = useServer({ auth, clock });
  const as = (who: keyof typeof tokens) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${tokens[who]}`);
    return { metadata };
  };
  let n = 0;
  const election = () => `owned-${++n}`;
  const leaseRow = async (e: string) =>
    (await h.pg.query("select holder, term::text, claimed_by, expires_at, ttl::text from leases where election = $1", [e])).rows[0];
  const historyClaimants = async (e: string) =>
    (await h.pg.query("select term::int, holder, claimed_by from lease_history where election = $1 order by term", [e])).rows;

  /** NOT_LEASE_HOLDER for B (orch-b) on term `term` of `e`. */
  const expectNotHolder = async (p: Promise<unknown>, e: string, term: bigint) => {
    const d = await expectError(p, grpc.status.PERMISSION_DENIED);
    expect(d.errorInfo!.reason).to.equal("NOT_LEASE_HOLDER");
    expect(d.errorInfo!.metadata).to.deep.equal({ election: e, term: term.toString(), subject: "orch-b" });
    expect(d.message).to.contain(`term ${term} of election ${e}`).and.to.contain("only that subject or an admin may");
    return d;
  };

  it("records the claiming subject with the term; another orchestrator's renew, claim and resign of it are PERMISSION_DENIED and change nothing", async () => {
    const e = election();
    const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    expect(a.isLeader).to.equal(true);
    const term = a.leader!.term;
    expect(await historyClaimants(e)).to.deep.equal([{ term: Number(term), holder: "A", claimed_by: "orch-a" }]);
    const before = await leaseRow(e);
    expect(before).to.include({ holder: "A", term: term.toString(), claimed_by: "orch-a" });
    clock.advance(10); // so that a renewal would move the expiry

    await expectNotHolder(h.client.renewLeadership({ election: e, instanceId: "A", term }, as("b")), e, term);
    // Claiming with A's instance id is a renewal too: refused the same way, not a way round it (nor a ttl change).
    await expectNotHolder(h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(1000) }, as("b")), e, term);
    await expectNotHolder(h.client.resignLeadership({ election: e, instanceId: "A", term }, as("b")), e, term);

    expect(await leaseRow(e)).to.deep.equal(before);
    const { leader } = await h.client.getLeader({ election: e }, as("b"));
    expect(leader!.instanceId).to.equal("A");
    expect(leader!.term).to.equal(term);
    expect(micros(leader!.expiresAt)).to.equal(micros(a.leader!.expiresAt));
    expect(await historyClaimants(e)).to.deep.equal([{ term: Number(term), holder: "A", claimed_by: "orch-a" }]);

    // A stale or unknown term is still LEADERSHIP_LOST / resigned=false, for anyone: nothing to protect there.
    const lost = await expectError(h.client.renewLeadership({ election: e, instanceId: "A", term: term + 1n }, as("b")), grpc.status.FAILED_PRECONDITION);
    expect(lost.errorInfo!.reason).to.equal("LEADERSHIP_LOST");
    expect((await h.client.resignLeadership({ election: e, instanceId: "B", term }, as("b"))).resigned).to.equal(false);

    // The holder itself renews, re-claims and resigns as before.
    const r = await h.client.renewLeadership({ election: e, instanceId: "A", term }, as("a"));
    expect(r.leader!.term).to.equal(term);
    expect(micros(r.leader!.expiresAt) > micros(a.leader!.expiresAt)).to.equal(true);
    const again = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    expect(again.isLeader).to.equal(true);
    expect(again.leader!.term).to.equal(term);
    expect((await h.client.resignLeadership({ election: e, instanceId: "A", term }, as("a"))).resigned).to.equal(true);
    expect((await h.client.getLeader({ election: e }, as("a"))).leader).to.equal(undefined);

    // Once the lease is free, B may claim (any instance id): the new term is B's.
    const b = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("b"));
    expect(b.isLeader).to.equal(true);
    expect(b.leader!.term).to.equal(term + 1n);
    expect((await leaseRow(e)).claimed_by).to.equal("orch-b");
    const refused = await expectError(h.client.renewLeadership({ election: e, instanceId: "A", term: term + 1n }, as("a")), grpc.status.PERMISSION_DENIED);
    expect(refused.errorInfo!.reason).to.equal("NOT_LEASE_HOLDER");
    expect(refused.errorInfo!.metadata.subject).to.equal("orch-a");
  });

  it("lets an admin renew and resign another subject's lease; a renewal keeps the claimant", async () => {
    const e = election();
    const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    const term = a.leader!.term;
    clock.advance(10);
    const renewed = await h.client.renewLeadership({ election: e, instanceId: "A", term }, as("admin"));
    expect(micros(renewed.leader!.expiresAt) > micros(a.leader!.expiresAt)).to.equal(true);
    expect((await leaseRow(e)).claimed_by).to.equal("orch-a"); // still A's: A renews on
    await h.client.renewLeadership({ election: e, instanceId: "A", term }, as("a"));
    expect((await h.client.resignLeadership({ election: e, instanceId: "A", term }, as("admin"))).resigned).to.equal(true);
    expect((await h.client.getLeader({ election: e }, as("a"))).leader).to.equal(undefined);
    expect(await historyClaimants(e)).to.deep.equal([{ term: Number(term), holder: "A", claimed_by: "orch-a" }]);
  });

  it("refuses a fence naming another subject's term (ClaimNextTask, UpdateTask) and changes nothing", async () => {
    const e = election();
    const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    const term = a.leader!.term;
    const action = `owned_fence_${n}`;
    const { task } = await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED }, as("admin"));
    const before = (await h.pg.query("select task_id, version, status, claimed_term from tasks where action = $1", [action])).rows;
    await expectNotHolder(h.client.claimNextTask({ instanceId: "B", actions: [action], fence: { election: e, term } }, as("b")), e, term);
    await expectNotHolder(
      h.client.updateTask(
        { task: { taskId: task!.taskId, status: TaskStatus.RUNNING }, updateMask: { paths: ["status"] }, fence: { election: e, term } },
        as("b"),
      ),
      e,
      term,
    );
    expect((await h.pg.query("select task_id, version, status, claimed_term from tasks where action = $1", [action])).rows).to.deep.equal(before);
    const claimed = await h.client.claimNextTask({ instanceId: "A", actions: [action], fence: { election: e, term } }, as("a"));
    expect(claimed.task!.taskId).to.equal(task!.taskId);
    expect(claimed.task!.claimedTerm).to.equal(term);
  });

  it("a term claimed before claimants were recorded (claimed_by null): only an admin may renew or resign it; it ends at its expiry", async () => {
    const e = election();
    const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    const term = a.leader!.term;
    await h.pg.query("update leases set claimed_by = null where election = $1", [e]); // as migration 0006 leaves a live lease
    const d = await expectError(h.client.renewLeadership({ election: e, instanceId: "A", term }, as("a")), grpc.status.PERMISSION_DENIED);
    expect(d.errorInfo!.reason).to.equal("NOT_LEASE_HOLDER");
    expect(d.message).to.contain("claimed before claimants were recorded");
    await expectError(h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a")), grpc.status.PERMISSION_DENIED);
    await expectNotHolder(h.client.resignLeadership({ election: e, instanceId: "A", term }, as("b")), e, term);
    await h.client.renewLeadership({ election: e, instanceId: "A", term }, as("admin"));
    expect((await leaseRow(e)).claimed_by).to.equal(null);
    clock.advance(120_000);
    expect((await h.client.getLeader({ election: e }, as("a"))).leader).to.equal(undefined);
    const next = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) }, as("a"));
    expect(next.isLeader).to.equal(true);
    expect(next.leader!.term).to.equal(term + 1n);
    expect((await leaseRow(e)).claimed_by).to.equal("orch-a");
    await h.client.renewLeadership({ election: e, instanceId: "A", term: term + 1n }, as("a"));
  });
});

describe("leader election without authentication: every caller is the same anonymous one", () => {
  const h = useServer();

  it("records the empty subject, and anyone renews and resigns any term, whoever claimed it", async () => {
    const e = "open-1";
    const a = await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) });
    const term = a.leader!.term;
    const claimants = async () =>
      (await h.pg.query("select claimed_by from lease_history where election = $1 order by term", [e])).rows.map((r) => r.claimed_by);
    expect(await claimants()).to.deep.equal([""]);
    // A term claimed while authentication was on, or before claimants were recorded: still anyone's here.
    for (const claimedBy of ["orch-a", null]) {
      await h.pg.query("update leases set claimed_by = $2 where election = $1", [e, claimedBy]);
      expect((await h.client.renewLeadership({ election: e, instanceId: "A", term })).leader!.term).to.equal(term);
      expect((await h.client.claimLeadership({ election: e, instanceId: "A", ttl: ttl(60_000) })).leader!.term).to.equal(term);
    }
    const { task } = await h.client.createTask({ action: "open_fence", initialStatus: TaskStatus.QUEUED });
    const claimed = await h.client.claimNextTask({ instanceId: "B", actions: ["open_fence"], fence: { election: e, term } });
    expect(claimed.task!.taskId).to.equal(task!.taskId);
    expect((await h.client.resignLeadership({ election: e, instanceId: "A", term })).resigned).to.equal(true);
    expect((await h.client.getLeader({ election: e })).leader).to.equal(undefined);
  });
});
