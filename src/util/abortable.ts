// Waiting for shared work on behalf of one caller.
import { abortError } from "../core/errors.js";

/**
 * Resolves as `p` does, unless the caller's `signal` aborts first: then it
 * rejects with the caller's abort error and leaves `p` alone, so work shared
 * by several callers (a design fetch, a watch feed opening, a token request)
 * goes on for the others.
 */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(abortError(signal, signal.reason));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal, signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
