// Where the CLI writes and how: the output mode, whether stdout is a terminal
// that may receive escape codes (colours, a view redrawn in place), its size.
import pc from "picocolors";
import type { Colors } from "picocolors/types.js";

export type OutputMode = "table" | "wide" | "json";
export const OUTPUT_MODES: readonly OutputMode[] = ["table", "wide", "json"];

export interface Output {
  mode: OutputMode;
  /** stdout is a terminal, NO_COLOR is unset, TERM is not dumb and the mode is not json: colours and live views. */
  live: boolean;
  /** Colour functions; identity functions when not live (no escape codes at all). */
  c: Colors;
  /** Terminal size (80 × 24 when unknown). */
  columns(): number;
  rows(): number;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** Writes a line (or lines) to stdout. */
  print(text: string): void;
  /** Writes a note to stderr, so that stdout holds only results. */
  note(text: string): void;
}

export function createOutput(mode: OutputMode, env: NodeJS.ProcessEnv = process.env): Output {
  const stdout = process.stdout;
  const escapes = stdout.isTTY === true && !env.NO_COLOR && env.TERM !== "dumb";
  const live = escapes && mode !== "json";
  return {
    mode,
    live,
    c: pc.createColors(live),
    columns: () => stdout.columns || 80,
    rows: () => stdout.rows || 24,
    stdout,
    stderr: process.stderr,
    print: (text) => void stdout.write(text.endsWith("\n") ? text : `${text}\n`),
    note: (text) => void process.stderr.write(text.endsWith("\n") ? text : `${text}\n`),
  };
}
