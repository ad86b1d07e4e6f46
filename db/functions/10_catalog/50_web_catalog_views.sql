-- The catalog as the web app reads it: client names, pipelines and their ordered steps.
-- security_invoker: the caller's row-level security applies, so a client's users see their own
-- client only, while every signed-in role sees the pipeline catalog (20_row_security.sql).
-- Grants are in db/policies/10_catalog.sql.

create or replace view api.clients with (security_invoker = true) as
select c.client_id,
       c.name,
       c.currency,
       c.created_at
  from ledger.clients c;

comment on view api.clients is 'Billed organisations: id, display name and invoice currency. A client''s users see their own client only; admins see all.';
comment on column api.clients.currency is 'ISO 4217 code of the client''s invoices.';

create or replace view api.pipelines with (security_invoker = true) as
select p.pipeline,
       p.title,
       p.description,
       p.version,
       p.steps_total,
       extract(epoch from p.stall_timeout)::integer as stall_timeout_s,
       p.updated_at
  from ledger.pipelines p;

comment on view api.pipelines is 'Registered pipelines: title, current version, number of steps and stall timeout.';
comment on column api.pipelines.stall_timeout_s is 'Seconds without an event after which a running job counts as stalled.';

create or replace view api.pipeline_steps with (security_invoker = true) as
select s.pipeline,
       s.step,
       s.step_index,
       s.title,
       s.description
  from ledger.pipeline_steps s;

comment on view api.pipeline_steps is 'The ordered steps of each registered pipeline, with their titles.';
comment on column api.pipeline_steps.step_index is 'Position of the step in its pipeline, from 1.';
