-- Leases belong to their holder: the authenticated subject that claimed a
-- term, recorded with it, so that only that subject (or an admin) may renew
-- or resign it, or fence work with it (src/rpc/leadership.ts).
--
-- "" is a term claimed without authentication (every caller is the same
-- anonymous one). null is a term claimed before this migration: who claimed
-- it is unknown, so with authentication on only an admin may renew or resign
-- it, and it ends at its expiry (at most its ttl, 1 hour); the next claim
-- records its claimant. Without authentication nothing is checked, as before.
alter table leases add column claimed_by text;
alter table lease_history add column claimed_by text;
