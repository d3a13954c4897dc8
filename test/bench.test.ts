// The benchmark runner's command line (bench/run.ts): usage, not a stack trace.
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";

const RUN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bench/run.js");

/** Runs the benchmark runner with `args` to its exit. */
function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [RUN, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

describe("bench/run.js command line", () => {
  it("--help and -h print the usage on stdout and exit 0", async () => {
    for (const flag of ["--help", "-h"]) {
      const r = await run(flag);
      expect([r.code, r.stderr], flag).to.deep.equal([0, ""]);
      expect(r.stdout, flag).to.match(/^usage: node dist\/bench\/run\.js \[--smoke\] \[--duration MS\] \[--only ID,\.\.\.\]/);
      expect(r.stdout, flag).to.contain("--server-node-args=ARGS");
      expect(r.stdout, flag).to.contain("--site-nodes N");
    }
  });

  it("an unknown flag, a missing value or a bad duration: the error and the usage on stderr, exit 2", async () => {
    for (const [args, error] of [
      [["--bogus"], "error: Unknown option '--bogus'"],
      [["--duration"], "error: Option '--duration <value>' argument missing"],
      [["--duration", "soon"], 'error: --duration must be a positive number of milliseconds, not "soon"'],
      [["--site-nodes", "0"], 'error: --site-nodes must be a whole number of nodes from 1 to 1000000, not "0"'],
      [["--site-nodes", "2e3"], 'error: --site-nodes must be a whole number of nodes from 1 to 1000000, not "2e3"'],
      [["positional"], "error: Unexpected argument 'positional'"],
    ] as const) {
      const r = await run(...args);
      expect([r.code, r.stdout], args.join(" ")).to.deep.equal([2, ""]);
      expect(r.stderr.split("\n")[0], args.join(" ")).to.contain(error);
      expect(r.stderr, args.join(" ")).to.contain("\nusage: node dist/bench/run.js");
      expect(r.stderr, args.join(" ")).to.not.match(/\n\s+at /); // no stack trace
    }
  });
});
