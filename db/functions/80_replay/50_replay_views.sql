-- Replay runs (`stepledger replay`): admins only. security_invoker: the caller's rights apply.

create or replace view api.replays with (security_invoker = true) as
select r.replay_id,
       r.started_at,
       r.updated_at,
       r.requested_by,
       r.filters,
       r.code_version,
       r.replayed,
       r.accepted,
       r.duplicates,
       r.rejected
  from ledger.replays r;

comment on view api.replays is 'Admin: one row per replay run of the vault, with its filters, the code version that ran it and what became of the replayed rows.';
comment on column api.replays.filters is 'The run''s filters: outcome, since, until, client_id.';
comment on column api.replays.replayed is 'Vault rows replayed so far; accepted + duplicates + rejected.';
