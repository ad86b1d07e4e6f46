-- Housekeeping that keeps ingest cost flat: monthly partitions created ahead of time.

create or replace function ledger.ensure_partitions(p_months_ahead integer default 3)
returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Creates the monthly partitions of the vault and the events, from last month to p_months_ahead
-- months ahead. Rows never land in the default partitions while this runs often enough (migrate,
-- `stepledger up` and the scheduler call it). Returns how many partitions it created.
declare
  v_parent text;
  v_month date;
  v_name text;
  v_created integer := 0;
begin
  foreach v_parent in array array['vault', 'vault_bodies', 'events'] loop
    for v_month in
      -- Months are UTC calendar months, whatever the session's time zone.
      select generate_series(date_trunc('month', (now() at time zone 'UTC') - interval '1 month'),
                             date_trunc('month', (now() at time zone 'UTC')
                                                 + make_interval(months => p_months_ahead)),
                             interval '1 month')::date
    loop
      v_name := format('%s_%s', v_parent, to_char(v_month, 'YYYY_MM'));
      if to_regclass(format('ledger.%I', v_name)) is null then
        execute format(
          'create table ledger.%I partition of ledger.%I for values from (%L) to (%L)',
          v_name, v_parent, v_month::timestamp at time zone 'UTC',
          (v_month + interval '1 month')::timestamp at time zone 'UTC');
        v_created := v_created + 1;
      end if;
    end loop;
  end loop;
  return v_created;
end
$$;
comment on function ledger.ensure_partitions(integer) is 'Creates the monthly vault, vault body and events partitions from last month to N months ahead.';

create or replace function ledger.code_version() returns text
language plpgsql stable as $$
-- PL/pgSQL: ingest asks once per request, and a SQL function's query is planned on every call.
begin
  return (select v.code_version from ledger.code_versions v
           order by v.installed_at desc, v.code_version limit 1);
end
$$;
comment on function ledger.code_version() is 'The version of the code now processing events, recorded by the migration runner.';
