-- What the web app's CSV downloads read (GET /usage_export with Accept: text/csv). Spreadsheets
-- read these files, so every value is written the way a spreadsheet and a person expect it:
-- the step's title beside its key, steps in pipeline order (step_index), booleans as true/false
-- and instants in ISO 8601 UTC with a Z, not PostgreSQL's text output (t/f, "+00").
-- security_invoker over api.usage: the caller's own rows only, admins every client's.
-- Grants are in db/policies/10_catalog.sql.

create or replace view api.usage_export with (security_invoker = true) as
select u.period,
       u.client_id,
       c.name as client_name,
       u.pipeline,
       p.title as pipeline_title,
       s.step_index,
       u.step,
       coalesce(s.title, u.step) as step_title,
       u.completed_steps,
       u.units,
       u.amount,
       u.currency,
       u.unpriced_steps,
       case when u.stale then 'true' else 'false' end as stale,
       ledger._csv_instant(u.refreshed_at) as refreshed_at
  from api.usage u
  left join ledger.clients c on c.client_id = u.client_id
  left join ledger.pipelines p on p.pipeline = u.pipeline
  left join ledger.pipeline_steps s on s.pipeline = u.pipeline and s.step = u.step;

comment on view api.usage_export is 'GET /usage for spreadsheets (Accept: text/csv): the same rows with the client name, pipeline and step titles beside their keys, step_index for pipeline order (order=period.desc,client_id,pipeline,step_index), stale as true/false and refreshed_at in ISO 8601 UTC with Z.';
comment on column api.usage_export.step_index is 'Position of the step in its pipeline: sort by it for pipeline order.';
comment on column api.usage_export.stale is 'true when usage of this client and month changed after the last refresh, else false.';
comment on column api.usage_export.refreshed_at is 'When the usage lines were last refreshed, ISO 8601 UTC (…Z).';
