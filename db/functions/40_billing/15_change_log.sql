-- The billing change log's transaction id on a Citus cluster (ADR 0012).
-- The usage refresh absorbs the change-log rows that its snapshot (the coordinator's) saw, by
-- their `xid`. A row written by a trigger on a worker's shard would carry the worker's own
-- transaction id, which means nothing in the coordinator's snapshot; so the coordinator tells the
-- workers its id first (a propagated SET LOCAL), as ingest passes its id explicitly.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL413  a change to log on a Citus worker without the coordinator's transaction id

create or replace function ledger._set_local_on_every_node(p_name text, p_value text)
returns void
language plpgsql volatile
-- No SET clause (and so no search_path: every name is qualified): a function with one would
-- undo the SET LOCAL on return, as auth.start_request explains.
as $$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'citus') then
    -- Citus sends the SET LOCAL that follows to every worker connection of the transaction
    execute 'set local citus.propagate_set_commands = ''local''';
  end if;
  execute pg_catalog.format('set local %s = %L', p_name, p_value);
end
$$;
comment on function ledger._set_local_on_every_node(text, text) is
  'SET LOCAL of a stepledger.* setting in this transaction, on the coordinator and, on a Citus cluster, on every worker it writes to.';

create or replace function ledger.share_transaction_id() returns xid8
language plpgsql volatile as $$
-- Before deleting or truncating ledger.job_steps by hand on a cluster (a rebuild): the triggers
-- that log the months it changes run on the workers, and log this transaction's id. Harmless on
-- a single node, where they see it anyway.
declare
  v_xid xid8 := pg_catalog.pg_current_xact_id();
begin
  perform ledger._set_local_on_every_node('stepledger.xact_id', v_xid::text);
  return v_xid;
end
$$;
comment on function ledger.share_transaction_id() is
  'Tells the Citus workers this transaction''s id, which the billing change log records (run it before deleting job steps by hand on a cluster).';

create or replace function ledger._change_log_xid() returns xid8
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- The id to log a billing change under: the one the coordinator shared, else this transaction's
-- own, except on a Citus worker, where that would be the worker's (refused: SL413).
declare
  v_shared text := nullif(current_setting('stepledger.xact_id', true), '');
begin
  if v_shared is not null then
    return v_shared::xid8;
  end if;
  if exists (select from pg_extension where extname = 'citus') then  -- (a single node has no
    if not citus_is_coordinator() then                                 -- citus_is_coordinator)
      raise exception 'a billing change on a Citus worker needs the coordinator''s transaction id'
        using errcode = 'SL413',
              hint = 'run select ledger.share_transaction_id() first in the transaction';
    end if;
  end if;
  return pg_current_xact_id();
end
$$;
comment on function ledger._change_log_xid() is 'The transaction id a billing change is logged under (the coordinator''s on a Citus cluster).';
