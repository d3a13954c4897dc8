// Load for fault tests: writers that append one result message per call and
// retry safely, and watchers that resume after any stream error, both as a
// careful client would. The fault tests count what was acknowledged, stored
// and received.
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import { HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import type { StateServer } from "../src/server/server.js";
import { StateService, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { decodeError, type StateClient } from "./harness.js";
import { eventually } from "./kit/eventually.js";
import { quietPeriod } from "./kit/quiet.js";

/** A careful writer retries a failed append after this long; a watcher resumes a failed stream after RESUME_MS. */
const RETRY_MS = 20;
const RESUME_MS = 50;

export interface Failure {
  code: string;
  /** How long the failed call took. */
  ms: number;
  message: string;
  /** When it started (epoch ms). */
  started: number;
}

/**
 * One writer per task: message `m<n>` with first_sequence n, so a retry after
 * an unknown outcome stores it once (SEQUENCE_MISMATCH whose next_sequence is
 * n + 1 means the first attempt landed).
 */
export function startWriters(client: StateClient, tasks: string[], onAck?: (taskId: string, startedAt: number) => void) {
  let writing = true;
  const acked = new Map<string, number>(tasks.map((t) => [t, 0]));
  const failures: Failure[] = [];
  const loops = tasks.map(async (taskId) => {
    let next = 1n;
    while (writing) {
      const started = Date.now();
      const ack = () => {
        acked.set(taskId, Number(next));
        next++;
        onAck?.(taskId, started);
      };
      try {
        const r = await client.appendResultMessages({ taskId, firstSequence: next, messages: [{ message: `m${next}` }] }, { deadlineMs: 5000 });
        expect(r.sequences).to.deep.equal([next]);
        ack();
      } catch (err) {
        const d = decodeError(err);
        if (d.errorInfo?.reason === "SEQUENCE_MISMATCH" && BigInt(d.errorInfo.metadata.next_sequence!) === next + 1n) {
          ack(); // the unknown outcome was a success
          continue;
        }
        failures.push({ code: grpc.status[d.code]!, ms: Date.now() - started, message: d.message, started });
        await quietPeriod(RETRY_MS, "a writer retries a failed append after a moment, as a careful client does");
      }
    }
  });
  return {
    acked,
    failures,
    /** Resolves once every task has at least n acknowledged messages; rejects after `withinMs`. */
    async waitForAcks(n: number, withinMs = 20_000): Promise<void> {
      // The expect below says how far they got.
      await eventually(() => [...acked.values()].every((a) => a >= n), withinMs, `${n} appends acknowledged per task`).catch(() => {});
      expect(Math.min(...acked.values()), `appends acknowledged (failures: ${summarize(failures)})`).to.be.at.least(n);
    },
    async stop(): Promise<void> {
      writing = false;
      await Promise.all(loops);
    },
  };
}

/** `perTask` watchers of each task, each on a channel of its own, resuming after errors with the last sequence seen. */
export function startWatchers(address: string, tasks: string[], perTask: number) {
  const seen = new Map<string, bigint[][]>(tasks.map((t) => [t, Array.from({ length: perTask }, () => [])]));
  const streams = new Set<{ cancel(): void }>();
  let watching = true;
  const resumes: string[] = [];
  const loops = tasks.flatMap((taskId) =>
    seen.get(taskId)!.map(async (got) => {
      const c = createClient(StateService, address, undefined, { "grpc.use_local_subchannel_pool": 1 });
      try {
        while (watching) {
          const stream = c.watchTask({ taskId, afterSequence: got[got.length - 1] ?? 0n });
          streams.add(stream);
          try {
            for await (const ev of stream as AsyncIterable<WatchTaskResponse>) {
              if (ev.event.case === "message") got.push(ev.event.value.sequence);
            }
          } catch (err) {
            if (watching) resumes.push(grpc.status[(err as grpc.ServiceError).code] ?? String(err));
            await quietPeriod(RESUME_MS, "a watcher resumes a failed stream after a moment, as a careful client does");
          } finally {
            streams.delete(stream);
          }
        }
      } finally {
        c.close();
      }
    }),
  );
  return {
    seen,
    resumes,
    /** Waits (at most `withinMs`) until every watcher has received `acked` messages of its task, then stops them all. */
    async stopWhenCaughtUp(acked: Map<string, number>, withinMs = 20_000): Promise<void> {
      const caughtUp = () => tasks.every((t) => seen.get(t)!.every((got) => got.length >= acked.get(t)!));
      // Not caught up in time: expectStoredAsAcknowledged says what each watcher missed.
      await eventually(caughtUp, withinMs, "every watcher caught up").catch(() => {});
      watching = false;
      for (const st of streams) st.cancel();
      await Promise.all(loops);
    },
  };
}

export function summarize(fs: { code: string; ms: number }[]): string {
  const by = new Map<string, number[]>();
  for (const f of fs) by.set(f.code, [...(by.get(f.code) ?? []), f.ms]);
  return [...by].map(([c, ms]) => `${c} ×${ms.length} (max ${Math.max(...ms)} ms)`).join(", ") || "none";
}

/**
 * Checks on an independent connection to `url` that each task holds exactly
 * its acknowledged messages (m1..mN, sequences 1..N: none lost, none twice)
 * and that every watcher received exactly those sequences. Returns the totals.
 */
export async function expectStoredAsAcknowledged(
  url: string,
  acked: Map<string, number>,
  seen: Map<string, bigint[][]>,
): Promise<{ acked: number; stored: number }> {
  const check = new pg.Client({ connectionString: url });
  await check.connect();
  const totals = { acked: 0, stored: 0 };
  try {
    for (const [t, n] of acked) {
      const { rows } = await check.query("select seq::int as s, message from result_messages where task_id = $1 order by seq", [t]);
      totals.acked += n;
      totals.stored += rows.length;
      expect(
        rows.map((r) => r.s),
        `sequences of ${t}`,
      ).to.deep.equal(Array.from({ length: n }, (_, i) => i + 1));
      expect(rows.map((r) => r.message)).to.deep.equal(Array.from({ length: n }, (_, i) => `m${i + 1}`));
      for (const got of seen.get(t) ?? []) expect(got, `a watcher of ${t}`).to.deep.equal(Array.from({ length: n }, (_, i) => BigInt(i + 1)));
    }
  } finally {
    await check.end();
  }
  return totals;
}

/** Resolves (epoch ms) when the server's health next changes to `status`. */
export function healthBecomes(server: StateServer, status: Serving): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`health did not become ${Serving[status]}`)), 15_000);
    const on = (s: Serving) => {
      if (s !== status) return;
      clearTimeout(timer);
      server.health.off("change", on);
      resolve(Date.now());
    };
    server.health.on("change", on);
  });
}
