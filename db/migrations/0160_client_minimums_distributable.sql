-- ledger.client_minimums in a shape Citus distributes by client_id, co-located with the jobs
-- (docs/adr/0012-citus-distribution.md, "The price book and monthly minimums"): the key includes
-- client_id, client_id is text (the type of every distribution column) with the slug rule as a
-- check, and the rows keep their ids. Citus converts no table with an identity column any
-- further once it is a Citus local table, which the old table became on a coordinator through
-- its foreign key to ledger.clients: so the table is new, and on a coordinator whose tables are
-- already distributed it is distributed here, before its foreign key is added.
-- Its checks and who recorded a row are no longer a trigger of the table: ledger.add_client_minimum
-- (db/functions/40_billing/20_prices.sql) writes every row.

-- The views over it are re-created by the idempotent phase of the same migrate.
drop view if exists api.client_minimums, reporting.revenue_by_client_month,
                    reporting.minimum_commitments;

create temporary table client_minimums_before on commit drop as
  select * from ledger.client_minimums;

drop table ledger.client_minimums;

create table ledger.client_minimums (
  minimum_id bigint generated always as identity,
  client_id text not null,
  effective_from date not null,
  monthly_minimum numeric not null,
  currency text not null,
  note text,
  recorded_at timestamptz not null default now(),
  recorded_by text not null,
  recorded_role text not null,
  recorded_token uuid,
  recorded_via text,
  constraint client_minimums_pkey primary key (client_id, minimum_id),
  constraint client_minimums_client_id_is_slug check ((client_id::ledger.slug) is not null),
  constraint client_minimums_effective_from_check check (extract(day from effective_from) = 1),
  constraint client_minimums_monthly_minimum_check check (monthly_minimum >= 0),
  constraint client_minimums_currency_check check (currency ~ '^[A-Z]{3}$'),
  constraint client_minimums_note_check check (length(note) <= 500)
);
create index client_minimums_lookup on ledger.client_minimums (client_id, effective_from);
comment on table ledger.client_minimums is 'Monthly minimum per client, effective from a calendar month; 0 ends a minimum. Append-only.';

insert into ledger.client_minimums
  (client_id, minimum_id, effective_from, monthly_minimum, currency, note, recorded_at,
   recorded_by, recorded_role, recorded_token, recorded_via)
  overriding system value
  select client_id, minimum_id, effective_from, monthly_minimum, currency, note, recorded_at,
         recorded_by, recorded_role, recorded_token, recorded_via
    from client_minimums_before;

do $$
begin
  -- new ids continue after the copied ones
  perform setval(pg_get_serial_sequence('ledger.client_minimums', 'minimum_id'),
                 coalesce((select max(minimum_id) from ledger.client_minimums), 0) + 1, false);
  if exists (select from pg_catalog.pg_extension where extname = 'citus') then
    if exists (select from pg_dist_partition where logicalrelid = 'ledger.jobs'::regclass) then
      set local citus.multi_shard_modify_mode = 'sequential';
      perform create_distributed_table('ledger.client_minimums', 'client_id',
                                       colocate_with => 'ledger.jobs');
    end if;
  end if;
end
$$;

alter table ledger.client_minimums
  add constraint client_minimums_client_id_fkey foreign key (client_id) references ledger.clients;

-- The price book's checks moved the same way (ledger.add_price): on a coordinator the table is
-- a reference table, whose row trigger would run on every copy.
drop trigger if exists check_price on ledger.prices;
drop function if exists ledger.tg_prices__check(), ledger.tg_client_minimums__check();
