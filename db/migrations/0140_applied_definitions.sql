-- What the idempotent phase of `stepledger migrate` last applied (db/functions, db/policies and
-- the functions generated from schemas/), as one digest. A migrate that has nothing new to apply
-- leaves a live database alone: re-creating a policy or a view takes an ACCESS EXCLUSIVE lock on
-- its table, which waits behind every reader and blocks every writer meanwhile.
create table ledger.applied_definitions (
  digest text primary key check (digest ~ '^[0-9a-f]{64}$'),
  code_version text not null,
  applied_at timestamptz not null default now()
);
comment on table ledger.applied_definitions is
  'Digests of the functions, views and policies applied by `stepledger migrate`; the newest row is what the database holds.';
revoke all on ledger.applied_definitions from public;
