// A PostgreSQL cluster of a test's own, run by pg_ctl as its data
// directory's owner: for tests that stop, kill, restart or promote
// PostgreSQL (the suite's shared cluster must not be). Started by
// startEmbedded, then taken over with Cluster.running().
import { spawn } from "node:child_process";
import { chown, readFile, readlink, stat } from "node:fs/promises";
import path from "node:path";

export class Cluster {
  private constructor(
    readonly pgdata: string,
    readonly port: number,
    private readonly bin: string,
    private readonly uid: number,
    private readonly gid: number,
  ) {}

  /** The binaries, port and owner of the PostgreSQL running on pgdata. */
  static async running(pgdata: string): Promise<Cluster> {
    const lines = (await readFile(path.join(pgdata, "postmaster.pid"), "utf8")).split("\n");
    const bin = path.dirname(await readlink(`/proc/${Number(lines[0])}/exe`));
    const st = await stat(pgdata);
    return new Cluster(pgdata, Number(lines[3]), bin, st.uid, st.gid);
  }

  /** The same binaries and owner on another data directory and port. */
  sibling(pgdata: string, port: number): Cluster {
    return new Cluster(pgdata, port, this.bin, this.uid, this.gid);
  }

  /** Gives a file the cluster's owner (a file written into its data directory). */
  async own(file: string): Promise<void> {
    await chown(file, this.uid, this.gid);
  }

  stop(mode: "fast" | "immediate"): Promise<void> {
    return this.ctl(["stop", "-m", mode, "-w"]);
  }

  /**
   * Resolves once PostgreSQL accepts connections (a standby: read-only
   * ones), logging to `logName` in the data directory; `settings` are more
   * `-c name=value` options.
   */
  start(logName: string, settings: string[] = []): Promise<void> {
    const opts = [
      `-p ${this.port}`,
      "-c listen_addresses=127.0.0.1",
      "-c unix_socket_directories=",
      "-c max_connections=300",
      ...settings.map((s) => `-c ${s}`),
    ].join(" ");
    return this.ctl(["start", "-w", "-t", "60", "-o", opts, "-l", path.join(this.pgdata, logName)]);
  }

  /** Resolves once the standby has left recovery. */
  promote(): Promise<void> {
    return this.ctl(["promote", "-w", "-t", "60"]);
  }

  private ctl(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const p = spawn(path.join(this.bin, "pg_ctl"), ["-D", this.pgdata, ...args], { uid: this.uid, gid: this.gid, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      p.stderr.on("data", (d) => (err += d));
      p.on("error", reject);
      p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`pg_ctl ${args.join(" ")}: ${code}: ${err}`))));
    });
  }
}
