-- The raw vault is append-only for every role but its owner: replay (run as the owner) may record
-- outcomes on a row, nobody else may change or remove what was received. Grants already keep API
-- roles out; this also stops a superuser's or a BI tool's accidental UPDATE or DELETE.

create or replace function ledger.tg_vault__append_only() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  if current_user = 'stepledger_owner' then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  raise exception 'the raw vault is append-only: % by % refused', lower(tg_op), current_user
    using errcode = 'SL205', hint = 'vault rows are kept forever; replay records outcomes as the owner';
end
$$;
comment on function ledger.tg_vault__append_only() is 'Refuses UPDATE, DELETE and TRUNCATE of the vault for every role but the owner.';

-- The vault rows and the request bodies as received (ledger.vault_bodies) keep the same rule.
select ledger._refuse_changes(t, 'ledger.tg_vault__append_only', 'append_only', 'append_only_truncate')
  from unnest(array['ledger.vault', 'ledger.vault_bodies']::regclass[]) t;
