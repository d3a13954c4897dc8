-- WatchTasks re-reads the tasks changed since shortly before a LISTEN
-- reconnect (store/tasks.ts tasksChangedSince): without an index on updated
-- that scanned the whole table.
create index tasks_updated_idx on tasks (updated);
