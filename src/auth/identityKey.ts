// Node identity keys (boot actions): 32 random bytes a node presents to
// report on its boot actions. Only their SHA-256 is stored; a presented key
// is hashed and compared with the stored hash in constant time.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Length of a key the server generates, and of every key SetBootActionContext accepts. */
export const IDENTITY_KEY_BYTES = 32;

export const generateIdentityKey = (): Buffer => randomBytes(IDENTITY_KEY_BYTES);

export const identityKeyHash = (key: Uint8Array): Buffer => createHash("sha256").update(key).digest();

/** Whether `presented` hashes to `storedHash`, in time independent of where they differ. */
export function identityKeyMatches(presented: Uint8Array, storedHash: Uint8Array): boolean {
  const hash = identityKeyHash(presented);
  return storedHash.length === hash.length && timingSafeEqual(hash, storedHash);
}
