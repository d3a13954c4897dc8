// Entry point of bin/statemgmt: parses the command line, runs the chosen job
// with a connection and an output, prints a failure as one line on stderr,
// and exits with the documented code (exit.ts).
import { getEventListeners } from "node:events";
import { CommanderError } from "commander";
import { connect, type Connection } from "./connection.js";
import { describeFailure, EXIT, exitWhenWritten } from "./exit.js";
import { buildProgram, type Runner } from "./program.js";
import { createOutput, type OutputMode } from "./terminal.js";

async function main(argv: string[]): Promise<number> {
  // `statemgmt … | head` closes stdout early: that is not a failure.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => process.exit(err.code === "EPIPE" ? EXIT.OK : EXIT.OTHER));

  // Ctrl-C aborts the signal: a watch ends cleanly on it (final frame, exit
  // 130). A job that does not listen (a unary call) is ended at once, and so
  // is everything on a second Ctrl-C.
  const interrupt = new AbortController();
  process.on("SIGINT", () => {
    const listening = getEventListeners(interrupt.signal, "abort").length > 0;
    if (interrupt.signal.aborted || !listening) process.exit(EXIT.INTERRUPTED);
    interrupt.abort();
  });

  let code: number = EXIT.OK;
  const run: Runner = async (globals, job) => {
    let conn: Connection | undefined;
    try {
      const out = createOutput(globals.output as OutputMode);
      conn = connect(globals);
      code = await job({ conn, out, signal: interrupt.signal });
    } catch (err) {
      const tls = !!(globals.tls || globals.cacert || globals.cert);
      const { line, exitCode, hint } = describeFailure(err, globals.server, { tls, cacert: !!globals.cacert, token: !!globals.token });
      process.stderr.write(`error: ${line}\n${hint ? `hint: ${hint}\n` : ""}`);
      code = exitCode;
    } finally {
      conn?.close();
    }
  };

  const program = buildProgram(run);
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    // commander printed the help or the one-line usage error already.
    return err.code === "commander.helpDisplayed" || err.code === "commander.version" ? EXIT.OK : EXIT.USAGE;
  }
  return code;
}

main(process.argv.slice(2)).then(
  (code) => exitWhenWritten(code),
  (err: unknown) => {
    process.stderr.write(`error: ${describeFailure(err, "").line}\n`);
    return exitWhenWritten(EXIT.OTHER);
  },
);
