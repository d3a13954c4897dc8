-- Tasks and their result messages.

create table tasks (
  task_id            uuid primary key,
  -- Subtasks are deleted with their parent (PurgeTasks deletes whole trees).
  parent_task_id     uuid references tasks (task_id) on delete cascade,
  action             text not null check (action ~ '^[a-z][a-z0-9_]{0,63}$'),
  design_ref         text not null default '' check (length(design_ref) <= 2048),
  status             text not null
                     check (status in ('requested', 'queued', 'running', 'terminating', 'terminated', 'complete')),
  result_status      text not null default 'incomplete'
                     check (result_status in ('incomplete', 'success', 'partial_success', 'failure', 'unreported')),
  result_message     text not null default '' check (length(result_message) <= 1024),
  result_reason      text not null default '' check (length(result_reason) <= 1024),
  result_error_count integer not null default 0 check (result_error_count >= 0),
  result_successes   text[] not null default '{}',
  result_failures    text[] not null default '{}',
  result_links       jsonb not null default '[]' check (jsonb_typeof(result_links) = 'array'),
  node_filter        jsonb check (node_filter is null or jsonb_typeof(node_filter) = 'object'),
  request_context    jsonb check (request_context is null or jsonb_typeof(request_context) = 'object'),
  created            timestamptz not null default now(),
  created_by         text not null default '' check (length(created_by) <= 255),
  updated            timestamptz not null default now(),
  terminated         timestamptz,
  terminated_by      text check (length(terminated_by) <= 255),
  terminate          boolean not null default false,
  retry              integer not null default 0 check (retry >= 0),
  -- Optimistic concurrency and snapshot ordering: +1 on every change.
  version            bigint not null default 1 check (version >= 1),
  claimed_by         text check (length(claimed_by) <= 255),
  claimed_at         timestamptz,
  -- Next sequence number of this task's result messages (allocated under
  -- this row's lock, so sequences are gapless and commit in order).
  next_message_seq   bigint not null default 1 check (next_message_seq >= 1),
  check (task_id <> parent_task_id),
  check ((claimed_by is null) = (claimed_at is null)),
  check (not terminate or terminated is not null)
);

-- ListTasks: keyset order.
create index tasks_created_idx on tasks (created, task_id);
-- ListTasks with a status filter.
create index tasks_status_created_idx on tasks (status, created, task_id);
-- ListTasks with a parent filter, ListSubtasks, Task.subtask_ids.
create index tasks_parent_created_idx on tasks (parent_task_id, created, task_id) where parent_task_id is not null;
-- ClaimNextTask: oldest queued first.
create index tasks_queued_idx on tasks (created, task_id) where status = 'queued';
-- PurgeTasks: finished top-level tasks by age.
create index tasks_purge_idx on tasks (updated)
  where parent_task_id is null and status in ('complete', 'terminated');

create table result_messages (
  task_id      uuid not null references tasks (task_id) on delete cascade,
  seq          bigint not null check (seq >= 1),
  message      text not null check (length(message) <= 1024),
  error        boolean not null default false,
  context_type text not null default '' check (length(context_type) <= 64),
  context      text not null default '' check (length(context) <= 256),
  ts           timestamptz not null default now(),
  extra        jsonb check (extra is null or jsonb_typeof(extra) = 'object'),
  primary key (task_id, seq)
);
