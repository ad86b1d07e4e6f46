-- Vault fidelity (docs/adr/0007-vault-bodies.md): the exact bytes of every ingest request body,
-- kept once per request beside the per-element vault rows of the same batch_id.
--
-- A body may carry events of several clients, or name no valid client at all: it is attributed
-- to the one client all its vault rows are attributed to ('' when there is none or more than
-- one), which is also its distribution key on Citus. Admins read it; no client role is granted it.

create table ledger.vault_bodies (
  client_id text not null,            -- the one client of all its vault rows, else ''
  received_at timestamptz not null default now(),
  batch_id uuid not null,             -- = ledger.vault.batch_id of its elements
  channel text not null check (channel in ('json', 'ndjson')),
  body bytea compression lz4 not null, -- exactly as received, compressed by TOAST
  problems jsonb not null default '[]' check (jsonb_typeof(problems) = 'array'),
  elements integer not null check (elements >= 0),
  sender_role text,
  token_id uuid,
  code_version text not null,
  primary key (client_id, received_at, batch_id)
) partition by range (received_at);

create table ledger.vault_bodies_default partition of ledger.vault_bodies default;
create index on ledger.vault_bodies (batch_id);

comment on table ledger.vault_bodies is
  'Every ingest request body exactly as received (bytes), once per request; its elements are the ledger.vault rows with the same batch_id.';
comment on column ledger.vault_bodies.problems is
  'What was wrong with the bytes: [{message, offset?, path?, line?}] e.g. invalid UTF-8 at byte offset N, NUL byte, duplicate key, byte order mark.';
comment on column ledger.vault_bodies.elements is 'How many ledger.vault rows the body produced.';

-- job_changes cursors no longer expose transaction ids (docs/api.md, live updates): api.jobs loses
-- its changed_xid column (the view is re-created from db/views without it).
drop view if exists api.jobs cascade;
