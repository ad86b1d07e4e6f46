-- The caller's client where every Citus node can see it (docs/adr/0012-citus-distribution.md).
-- Citus evaluates row-level-security policies only on the workers, in connections it opens as the
-- query's role, where PostgREST's request.jwt.claims (set_config(..., true)) is not visible and a
-- policy may read no table. The client therefore travels in one setting, stepledger.client_id:
-- set with SET LOCAL before each API request (Citus propagates SET LOCAL to the workers when
-- citus.propagate_set_commands = 'local', which authenticator has on a coordinator), or stored as
-- the role default of a login bound to a client. On a single node it is set all the same.

create or replace function auth.start_request() returns void
language plpgsql volatile as $$
-- PostgREST's db-pre-request: auth.pre_request's checks, then the caller's client for the
-- workers. Invoker's rights and no SET clause on purpose: a function with a SET clause (as
-- security definer functions here have) would undo the SET LOCAL when it returns.
begin
  perform auth.pre_request();
  execute format('set local stepledger.client_id = %L', coalesce(auth.client_id(), ''));
end
$$;
comment on function auth.start_request() is 'PostgREST db-pre-request hook: auth.pre_request(), then SET LOCAL stepledger.client_id to the caller''s client, which Citus carries to the workers.';

create or replace function auth.caller_client_id() returns text
language sql stable parallel safe as $$
  -- stepledger.client_id, unless the role stores a binding (a login bound to one client: a
  -- placeholder role default, which only a superuser or a holder of SET on the parameter can
  -- write) that the session no longer carries: then null, so a policy shows nothing. Reads the
  -- catalog only: a policy on a Citus shard may not read Citus tables.
  select case when b.bound is null
                or b.bound = current_setting('stepledger.client_id', true)
              then nullif(current_setting('stepledger.client_id', true), '') end
    from (select (select substr(c, length('stepledger.client_id=') + 1)
                    from pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c
                   where s.setrole = (select r.oid from pg_catalog.pg_roles r
                                       where r.rolname = current_user)
                     and s.setdatabase = 0
                     and c like 'stepledger.client\_id=%') as bound) b
$$;
comment on function auth.caller_client_id() is 'The client whose rows the caller may read, from what every Citus node knows: stepledger.client_id, unless the role''s stored binding says otherwise (then null).';
