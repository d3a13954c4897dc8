-- Build data history of nodes, and leader election leases.

alter table tasks add column claimed_term bigint not null default 0 check (claimed_term >= 0);
-- ListTasks filtered on the term a task was claimed under.
create index tasks_claimed_term_idx on tasks (claimed_term, created, task_id) where claimed_term > 0;

create table build_data (
  build_data_id bigint generated always as identity primary key,
  node_name     text not null check (length(node_name) between 1 and 255),
  -- No foreign key on purpose: build data outlives the task that collected
  -- it (PurgeTasks deletes tasks, never build data). Existence is checked
  -- when a record is created.
  task_id       uuid not null,
  collected_at  timestamptz not null default now(),
  generator     text not null check (length(generator) between 1 and 256),
  data_format   text not null check (length(data_format) between 3 and 255),
  data_element  bytea not null check (octet_length(data_element) > 0)
);

-- ListBuildData by node, by task, or all; newest first; and latest per generator.
create index build_data_node_idx on build_data (node_name, collected_at desc, build_data_id desc);
create index build_data_task_idx on build_data (task_id, collected_at desc, build_data_id desc);
create index build_data_collected_idx on build_data (collected_at desc, build_data_id desc);
create index build_data_generator_idx on build_data (generator, collected_at desc, build_data_id desc);

-- One lease per election. Every time is the database's clock; a lease is
-- held while holder is not null and expires_at > now().
create table leases (
  election    text primary key check (election ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  holder      text check (length(holder) between 1 and 255),
  term        bigint not null check (term >= 1),
  ttl         interval not null check (ttl between interval '1 second' and interval '1 hour'),
  acquired_at timestamptz not null,
  renewed_at  timestamptz not null,
  expires_at  timestamptz not null
);

-- Every term ever granted, for audits ("who led when") and tests.
create table lease_history (
  election    text not null,
  term        bigint not null,
  holder      text not null,
  acquired_at timestamptz not null,
  -- Last known end of the term: moved by renewals, cut short by resignation.
  ends_at     timestamptz not null,
  primary key (election, term)
);
