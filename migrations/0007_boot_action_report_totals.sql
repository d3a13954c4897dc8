-- What each boot action's reports have stored so far: the number of detail
-- messages and their bytes (message text plus extra as JSON). A report is
-- refused whole when it would take either past the server's per-action
-- limits (STATEMGMT_BOOT_ACTION_MAX_DETAILS, _MAX_DETAIL_BYTES); the report
-- transaction reads and raises them under the action's row lock, so
-- concurrent reports cannot together pass a limit.
alter table boot_actions
  add column detail_count integer not null default 0 check (detail_count >= 0),
  add column detail_bytes bigint not null default 0 check (detail_bytes >= 0);

-- Actions still open to reports count what they already have (their
-- messages carry context_type 'bootaction' and the action id as context).
-- jsonb's text form is a little longer than compact JSON: the backfill can
-- only overcount.
update boot_actions b
set detail_count = m.n, detail_bytes = m.bytes
from (
  select r.task_id, r.context, count(*)::integer as n,
         sum(octet_length(r.message) + coalesce(octet_length(r.extra::text), 0))::bigint as bytes
  from result_messages r
  -- Only the tasks of open actions (by the primary key's task_id prefix), not every message.
  where r.task_id in (select task_id from boot_actions where status = 'incomplete') and r.context_type = 'bootaction'
  group by r.task_id, r.context
) m
where b.status = 'incomplete' and m.task_id = b.task_id and m.context = b.action_id;
