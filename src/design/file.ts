// file:// references, confined to the configured design roots.
import { open, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError, ResourceExhaustedError } from "../core/errors.js";
import type { DesignDriver } from "./driver.js";

export function fileDriver(roots: readonly string[]): DesignDriver {
  return {
    async fetch(url, redacted, ctx) {
      if (roots.length === 0) {
        throw new PermissionDeniedError(
          "DESIGN_FILE_NOT_ALLOWED",
          `file references are disabled: allow a directory with STATEMGMT_DESIGN_ROOTS=/path (":"-separated) or --design-root /path`,
          { design_ref: redacted },
        );
      }
      // designRefProblem refused URLs that do not decode to a path (encoded
      // "/", NUL, bad UTF-8) before this driver was called; a failure here
      // would be a bug, and stays INTERNAL.
      const requested = fileURLToPath(url); // normalizes "..": checked again after symlinks
      let real: string;
      try {
        real = await realpath(requested);
      } catch (err) {
        // Outside the roots, every failure is the same denial: the answer
        // must not tell whether a path exists there.
        if (!(await insideRoots(requested, roots))) throw denied(redacted);
        throw fsError(err, redacted);
      }
      if (!(await insideRoots(real, roots))) throw denied(redacted);
      // From here the path is inside a root; it can still vanish or be unreadable.
      const st = await stat(real).catch((err) => Promise.reject(fsError(err, redacted)));
      if (st.isDirectory()) throw InvalidArgumentError.field("design_ref", `${redacted} is a directory, not a design document`);
      if (!st.isFile()) throw InvalidArgumentError.field("design_ref", `${redacted} is not a regular file`);
      if (st.size > ctx.maxBytes) throw tooLarge(redacted, ctx.maxBytes);
      const fh = await open(real, "r").catch((err) => Promise.reject(fsError(err, redacted)));
      try {
        // Read at most maxBytes + 1, in case the file grew since stat().
        const buf = Buffer.alloc(Math.min(st.size, ctx.maxBytes) + 1);
        let n = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
          if (bytesRead === 0) break;
          n += bytesRead;
          if (n === buf.length) break;
        }
        if (n > ctx.maxBytes) throw tooLarge(redacted, ctx.maxBytes);
        return { content: buf.subarray(0, n), contentType: "" };
      } finally {
        await fh.close();
      }
    },
  };
}

async function insideRoots(p: string, roots: readonly string[]): Promise<boolean> {
  for (const root of roots) {
    const r = await realpath(root).catch(() => path.resolve(root));
    const rel = path.relative(r, p);
    if (rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel))) return true;
  }
  return false;
}

/**
 * A file system failure on a path inside the roots. A path that cannot name
 * a file (a component or the whole too long, a symlink loop) does not exist
 * as far as the caller can tell; other errors (EIO, ...) are the server's
 * problem and stay INTERNAL.
 */
function fsError(err: unknown, redacted: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR" || code === "ENAMETOOLONG") return new NotFoundError("Design", redacted, `design ${redacted} does not exist`);
  if (code === "ELOOP") return new NotFoundError("Design", redacted, `design ${redacted} does not exist (a symbolic link loop)`);
  if (code === "EACCES" || code === "EPERM") {
    return new PermissionDeniedError("DESIGN_FILE_UNREADABLE", `the server may not read ${redacted} (file system permissions)`, { design_ref: redacted });
  }
  return err;
}

const denied = (redacted: string) =>
  new PermissionDeniedError("DESIGN_FILE_OUTSIDE_ROOTS", `${redacted} is outside the configured design roots`, { design_ref: redacted });

export const tooLarge = (redacted: string, max: number) =>
  new ResourceExhaustedError("DESIGN_TOO_LARGE", `design ${redacted} is larger than the limit of ${max} bytes (STATEMGMT_DESIGN_MAX_BYTES)`, {
    design_ref: redacted,
    limit: String(max),
  });
