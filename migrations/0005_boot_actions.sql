-- Boot actions: per node, the context of its current deployment (the
-- deploying task and a hash of the node's identity key), and one row per boot
-- action of a deployment, which its node reports on with that key.
--
-- Keys are 32 random bytes; only their SHA-256 is stored (a fast hash is
-- enough for a key that is not guessable), so a database dump holds nothing
-- a node could present. The server compares hashes in constant time.
--
-- Both tables go with their task (on delete cascade): PurgeTasks deletes the
-- boot actions of the tasks it purges, and the context of a node whose last
-- deployment it purged.

create table boot_action_contexts (
  node_name           text primary key check (length(node_name) between 1 and 280),
  task_id             uuid not null references tasks (task_id) on delete cascade,
  identity_key_sha256 bytea not null check (octet_length(identity_key_sha256) = 32),
  updated             timestamptz not null default now()
);
create index boot_action_contexts_task_idx on boot_action_contexts (task_id);

create table boot_actions (
  -- A ULID in canonical Crockford base32 (upper case): sorts by creation time.
  action_id           text primary key check (action_id ~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$'),
  node_name           text not null check (length(node_name) between 1 and 280),
  action_name         text not null check (length(action_name) between 1 and 256),
  task_id             uuid not null references tasks (task_id) on delete cascade,
  -- The node's key when the action was created: a later deployment's key
  -- cannot report on this one's actions.
  identity_key_sha256 bytea not null check (octet_length(identity_key_sha256) = 32),
  signalling          boolean not null,
  status              text not null check (status in ('incomplete', 'success', 'failure', 'unreported')),
  created             timestamptz not null default now(),
  reported            timestamptz,
  check ((status in ('success', 'failure')) = (reported is not null)),
  -- Duplicate names of one node in one deployment are refused, not collapsed.
  unique (task_id, node_name, action_name)
);
-- ListBootActions by node (every deployment), in action_id order.
create index boot_actions_node_idx on boot_actions (node_name, action_id);
-- By task: served by the unique index's prefix would order by name; this
-- one orders by action_id.
create index boot_actions_task_idx on boot_actions (task_id, action_id);
