-- What the SDK (loader/stepledger/sdk/) reads about a pipeline before it reports steps: the step
-- keys in order, so that a wrong key fails in the pipeline's code with a suggestion instead of
-- being rejected later by ingest, and so that job.skip_remaining() knows which steps are left.

create or replace function api.step_keys(pipeline text)
returns table (step text, step_index integer, title text)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
-- GET /rpc/step_keys?pipeline=P: the registered steps of a pipeline, in order. The catalog is
-- not client data; ingest tokens may read it too (they may not read api.pipeline_steps).
begin
  if not exists (select from ledger.pipelines p where p.pipeline = step_keys.pipeline) then
    perform ledger._raise_not_found('SL105', format('unknown pipeline "%s"', step_keys.pipeline),
                                    'register it with `stepledger pipeline add FILE.json`');
  end if;
  return query
  select s.step::text, s.step_index, s.title
    from ledger.pipeline_steps s
   where s.pipeline = step_keys.pipeline
   order by s.step_index;
end
$$;
comment on function api.step_keys(text) is
  'The registered steps of a pipeline in order (key, position, title): what a pipeline reports in step.';
