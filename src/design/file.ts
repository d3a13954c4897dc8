// file:// references, confined to the configured design roots.
import { open, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError, ResourceExhaustedError } from "../errors.js";
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
      const requested = fileURLToPath(url); // normalizes "..": checked again after symlinks
      let real: string;
      try {
        real = await realpath(requested);
      } catch (err) {
        // Outside the roots, every failure is the same denial: the answer
        // must not tell whether a path exists there.
        if (!(await insideRoots(requested, roots))) throw denied(redacted);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") throw new NotFoundError("Design", redacted, `design ${redacted} does not exist`);
        if (code === "EACCES" || code === "EPERM") {
          throw new PermissionDeniedError("DESIGN_FILE_UNREADABLE", `the server may not read ${redacted} (file system permissions)`, { design_ref: redacted });
        }
        throw err;
      }
      if (!(await insideRoots(real, roots))) throw denied(redacted);
      const st = await stat(real);
      if (st.isDirectory()) throw InvalidArgumentError.field("design_ref", `${redacted} is a directory, not a design document`);
      if (!st.isFile()) throw InvalidArgumentError.field("design_ref", `${redacted} is not a regular file`);
      if (st.size > ctx.maxBytes) throw tooLarge(redacted, ctx.maxBytes);
      const fh = await open(real, "r");
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

const denied = (redacted: string) =>
  new PermissionDeniedError("DESIGN_FILE_OUTSIDE_ROOTS", `${redacted} is outside the configured design roots`, { design_ref: redacted });

export const tooLarge = (redacted: string, max: number) =>
  new ResourceExhaustedError("DESIGN_TOO_LARGE", `design ${redacted} is larger than the limit of ${max} bytes (STATEMGMT_DESIGN_MAX_BYTES)`, {
    design_ref: redacted,
    limit: String(max),
  });
