-- Loader and replay: who may call what (db/functions/80_replay/10_replay.sql, 81_load_files.sql).
-- The vault stays append-only: API roles get no UPDATE or DELETE on it; only the owner (through
-- api.replay, security definer) appends to a row's `replays`.

-- Replay runs are operator records, not client data: admins only.
alter table ledger.replays enable row level security;
drop policy if exists select_admin on ledger.replays;
create policy select_admin on ledger.replays for select to admin using (true);
grant select on ledger.replays to admin;
grant select on api.replays to admin;

grant execute on function api.replay(text, timestamptz, timestamptz, text, uuid, integer, boolean) to admin;
grant execute on function api.ingest_unreadable(jsonb) to ingest, admin;
