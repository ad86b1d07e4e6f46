-- Helpers the feature folders call while they load: one home for the forms of DDL that several
-- features repeat. Owner only (nothing is granted on them).

create or replace function ledger._refuse_changes(p_table regclass, p_trigger_function regproc,
                                                  p_row_trigger text, p_truncate_trigger text)
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Puts p_trigger_function before UPDATE and DELETE of each row of p_table and before TRUNCATE
-- of the whole table: the append-only vault and the immutable billing rows. On a partitioned
-- table the row trigger is cloned onto every partition, present and future.
begin
  execute format('create or replace trigger %I before update or delete on %s
                    for each row execute function %s()', p_row_trigger, p_table, p_trigger_function);
  execute format('create or replace trigger %I before truncate on %s
                    for each statement execute function %s()', p_truncate_trigger, p_table,
                 p_trigger_function);
end
$$;
comment on function ledger._refuse_changes(regclass, regproc, text, text) is
  'Private: the row (UPDATE, DELETE) and statement (TRUNCATE) triggers of a table whose rows may not change.';

create or replace function ledger._create_media_type(p_domain text, p_base regtype) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- A PostgREST 12 media type handler is a domain named after the type, in the api schema: a
-- function returning it answers Accept: <type> with the raw value. Kept when it exists, since
-- the functions returning it depend on it.
begin
  if to_regtype(format('api.%I', p_domain)) is null then
    execute format('create domain api.%I as %s', p_domain, p_base);
  end if;
end
$$;
comment on function ledger._create_media_type(text, regtype) is
  'Private: creates the api domain that makes PostgREST serve a function''s result as this media type.';
