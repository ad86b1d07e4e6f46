-- The loader and replay (docs/pipelines.md, `stepledger load` and `stepledger replay`).
--
-- 1. Two more vault channels: 'file' for lines a loader could not read as events (kept raw, with
--    the loader's reason and the line number as position), 'replay' for the re-processing of a
--    vault row by `stepledger replay` (the new row holds the payload as re-processed, and its
--    token_id is the replay run's id).
-- 2. Each vault row records its replays in `replays`: an append-only JSON array written only by
--    the owner (ledger._replay, security definer). What was received is never changed.
-- 3. ledger.replays: one row per replay run, its filters and counters.

alter table ledger.vault drop constraint vault_channel_check;
alter table ledger.vault add constraint vault_channel_check
  check (channel in ('json', 'ndjson', 'file', 'replay'));

alter table ledger.vault add column replays jsonb not null default '[]';
alter table ledger.vault add constraint vault_replays_check check (jsonb_typeof(replays) = 'array');
comment on column ledger.vault.replays is
  'Replays of this row, oldest first: [{replay_id, replayed_at, outcome, errors, vault_id, code_version}]; vault_id is the replay''s own vault row.';

create table ledger.replays (
  replay_id uuid primary key default gen_random_uuid(),
  started_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  requested_by text not null,            -- API role and JWT subject of the caller
  filters jsonb not null,                -- {outcome, since, until, client_id}
  code_version text not null,
  replayed integer not null default 0 check (replayed >= 0),
  accepted integer not null default 0 check (accepted >= 0),
  duplicates integer not null default 0 check (duplicates >= 0),
  rejected integer not null default 0 check (rejected >= 0)
);
comment on table ledger.replays is 'One row per `stepledger replay` run: filters, code version and counters.';
