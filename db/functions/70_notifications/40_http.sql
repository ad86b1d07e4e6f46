-- The HTTP surface: endpoints, test-send, redelivery, thresholds, e-mail opt-in (the outbox's design and error codes: 10_targets.sql).

create or replace function ledger._caller_may_manage(p_client_id text) returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$
  -- Admins manage every endpoint; a client user those of its own client (never all-clients ones).
  select case auth.role() when 'admin' then true
                          when 'stepledger_owner' then true
                          when 'client' then p_client_id is not null and p_client_id = auth.client_id()
                          else false end
$$;
comment on function ledger._caller_may_manage(text) is 'Whether the caller may manage webhooks of this client (null: all clients).';

create or replace function ledger._new_webhook_secret() returns text
language sql volatile set search_path = pg_catalog, pg_temp as $$
  select 'whsec_' || encode(public.gen_random_bytes(32), 'base64')
$$;
comment on function ledger._new_webhook_secret() is 'A new signing secret: whsec_ and 32 random bytes in base64.';

create or replace function api.create_webhook(url text, events text[], client_id text default null,
                                              description text default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- A client user creates endpoints for its own client (client_id omitted or its own); admins for
-- one client or for all (client_id null). The secret is returned here and never again.
declare
  v_client text := coalesce(create_webhook.client_id,
                            case when auth.role() = 'client' then auth.client_id() end);
  -- the event types an endpoint may subscribe to (not webhook.test, sent on demand)
  c_events constant text[] := array['job.failed', 'job.recovered', 'job.stalled', 'job.completed',
                                    'invoice.finalized', 'usage.threshold_crossed'];
  v_problem text;
  v_unknown text;
  v_events ledger.notification_event[];
  v_actor text;
  v_row ledger.webhooks;
begin
  if auth.role() not in ('admin', 'client', 'stepledger_owner') then
    raise exception 'role "%" may not create webhooks', auth.role() using errcode = 'SL604';
  end if;
  if not ledger._caller_may_manage(v_client) then
    raise exception 'webhooks for client "%" are not yours to create', coalesce(v_client, '(all clients)')
      using errcode = 'SL604', hint = 'a client user creates webhooks for its own client only';
  end if;
  if v_client is not null and not exists (select from ledger.clients c where c.client_id = v_client) then
    raise exception 'unknown client "%"', v_client using errcode = 'SL603';
  end if;
  if events is null or cardinality(events) = 0 then
    raise exception 'events: name at least one event type' using errcode = 'SL602',
      hint = array_to_string(c_events, ', ');
  end if;
  select e into v_unknown from unnest(events) e where e is null or e <> all (c_events) limit 1;
  if found then
    raise exception 'events: unknown event type "%"', coalesce(v_unknown, 'null') using errcode = 'SL602',
      hint = array_to_string(c_events, ', ');
  end if;
  v_problem := ledger._webhook_url_problem(url, (ledger._notification_settings()).allow_private_targets);
  if v_problem is not null then
    raise exception 'url refused: %', v_problem using errcode = 'SL601',
      hint = 'an https URL of a public host';
  end if;
  if description is not null and length(description) > 200 then
    raise exception 'description: at most 200 characters' using errcode = 'SL602';
  end if;
  -- values, not a subquery or a record's field in VALUES: Citus refuses those in an INSERT
  -- into its tables (ADR 0012)
  v_events := (select array_agg(distinct e order by e) from unnest(events) e)::ledger.notification_event[];
  v_actor := (ledger._actor()).actor;
  insert into ledger.webhooks (client_id, url, events, secret, description, created_by)
  values (v_client, url, v_events, ledger._new_webhook_secret(), description, v_actor)
  returning * into v_row;
  return jsonb_build_object('webhook_id', v_row.webhook_id, 'secret', v_row.secret,
                            'client_id', v_row.client_id, 'url', v_row.url,
                            'events', to_jsonb(v_row.events));
end
$$;
comment on function api.create_webhook(text, text[], text, text) is
  'Creates a webhook endpoint: {"url": "https://…", "events": ["job.failed", …], "client_id": "…" | null} → {"webhook_id", "secret": "whsec_…"} (the secret is shown once). Admins for one client or all (client_id null); a client user for its own client only.';

create or replace function ledger._visible_webhook(p_webhook_id uuid) returns ledger.webhooks
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The endpoint if the caller may manage it; else SL603 (the same answer whether it exists or not).
declare
  w ledger.webhooks;
begin
  select * into w from ledger.webhooks x where x.webhook_id = p_webhook_id;
  if not found or not ledger._caller_may_manage(w.client_id) then
    raise exception 'webhook % not found', coalesce(p_webhook_id::text, 'null') using errcode = 'SL603';
  end if;
  return w;
end
$$;
comment on function ledger._visible_webhook(uuid) is 'The webhook the caller may manage, or error SL603.';

create or replace function ledger._sendable_webhook(p_webhook_id uuid) returns ledger.webhooks
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The endpoint the caller may manage (ledger._visible_webhook) when it is enabled; SL606 while it
-- is disabled, since nothing is sent to it then.
declare
  w ledger.webhooks := ledger._visible_webhook(p_webhook_id);
begin
  if w.disabled_at is not null then
    raise exception 'webhook % is disabled: %', w.webhook_id, w.disabled_reason using errcode = 'SL606',
      hint = 'enable it first (POST /rpc/enable_webhook)';
  end if;
  return w;
end
$$;
comment on function ledger._sendable_webhook(uuid) is 'The enabled webhook the caller may manage, or error SL603 / SL606 (disabled).';

create or replace function api.delete_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  w ledger.webhooks := ledger._visible_webhook(delete_webhook.webhook_id);
begin
  delete from ledger.webhooks x where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'deleted', true);
end
$$;
comment on function api.delete_webhook(uuid) is 'Deletes a webhook endpoint and its delivery history: {"webhook_id"}.';

create or replace function api.rotate_webhook_secret(webhook_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  w ledger.webhooks := ledger._visible_webhook(rotate_webhook_secret.webhook_id);
  v_secret text := ledger._new_webhook_secret();
begin
  update ledger.webhooks x set secret = v_secret, secret_rotated_at = now()
   where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'secret', v_secret);
end
$$;
comment on function api.rotate_webhook_secret(uuid) is 'Replaces the signing secret of an endpoint: {"webhook_id"} → {"webhook_id", "secret"} (shown once). Messages not yet delivered are signed with the new one.';

create or replace function api.enable_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  w ledger.webhooks := ledger._visible_webhook(enable_webhook.webhook_id);
begin
  update ledger.webhooks x set disabled_at = null, disabled_reason = null, failing_since = null
   where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'enabled', true);
end
$$;
comment on function api.enable_webhook(uuid) is 'Enables an endpoint that was disabled after failing: {"webhook_id"}. Deliveries cancelled meanwhile can be sent again with POST /rpc/redeliver.';

create or replace function api.test_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Sends a webhook.test message to this endpoint only.
declare
  w ledger.webhooks := ledger._sendable_webhook(test_webhook.webhook_id);
  v_seq bigint;
  v_delivery uuid;
begin
  insert into ledger.notification_messages (client_id, event_type, body, dispatched_at)
  values (w.client_id, 'webhook.test',
          jsonb_build_object('type', 'webhook.test',
                             'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'data', jsonb_build_object('webhook_id', w.webhook_id, 'client_id', w.client_id)),
          now())
  returning message_seq into v_seq;
  insert into ledger.webhook_deliveries (webhook_id, client_id, message_seq)
  values (w.webhook_id, w.client_id, v_seq)
  returning delivery_id into v_delivery;
  perform pg_notify('stepledger_notifications', '');
  return jsonb_build_object('webhook_id', w.webhook_id, 'delivery_id', v_delivery,
                            'message_id', (select m.message_id from ledger.notification_messages m
                                            where m.message_seq = v_seq));
end
$$;
comment on function api.test_webhook(uuid) is 'Sends a webhook.test message to one endpoint now: {"webhook_id"} → {"delivery_id", "message_id"}.';

create or replace function api.redeliver(delivery_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Sends a delivery again (same webhook-id), whatever its state; retries start over.
declare
  d ledger.webhook_deliveries;
  w ledger.webhooks;
begin
  select * into d from ledger.webhook_deliveries x where x.delivery_id = redeliver.delivery_id for update;
  if not found then
    raise exception 'delivery % not found', coalesce(redeliver.delivery_id::text, 'null') using errcode = 'SL603';
  end if;
  w := ledger._sendable_webhook(d.webhook_id);
  update ledger.webhook_deliveries x
     set state = 'pending', next_attempt_at = now(), lease_until = null, first_attempt_at = null,
         finished_at = null
   where x.delivery_id = d.delivery_id;
  perform pg_notify('stepledger_notifications', '');
  return jsonb_build_object('delivery_id', d.delivery_id, 'state', 'pending');
end
$$;
comment on function api.redeliver(uuid) is 'Sends a delivery again with the same webhook-id: {"delivery_id"}.';

create or replace function api.set_usage_alert(client_id text, amount numeric, currency text default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Admins: the monthly usage threshold of a client (amount null removes it). A changed threshold
-- may be crossed again in the same month.
declare
  v_currency text;
begin
  if auth.role() not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not set usage alerts', auth.role() using errcode = 'SL604';
  end if;
  select c.currency into v_currency from ledger.clients c where c.client_id = set_usage_alert.client_id;
  if not found then
    raise exception 'unknown client "%"', set_usage_alert.client_id using errcode = 'SL603';
  end if;
  if amount is null then
    delete from ledger.usage_alerts a where a.client_id = set_usage_alert.client_id;
    return jsonb_build_object('client_id', set_usage_alert.client_id, 'amount', null);
  end if;
  if amount <= 0 then
    raise exception 'amount: % is not a positive amount', amount using errcode = 'SL605';
  end if;
  v_currency := coalesce(upper(currency), v_currency);
  if v_currency !~ '^[A-Z]{3}$' then
    raise exception 'currency: "%" is not an ISO 4217 code', currency using errcode = 'SL605';
  end if;
  insert into ledger.usage_alerts as a (client_id, amount, currency, set_by)
  values (set_usage_alert.client_id, amount, v_currency, (ledger._actor()).actor)
  on conflict on constraint usage_alerts_pkey do update
     set amount = excluded.amount, currency = excluded.currency, set_at = now(),
         set_by = excluded.set_by,
         crossed_period = case when (a.amount, a.currency) = (excluded.amount, excluded.currency)
                               then a.crossed_period end;
  return jsonb_build_object('client_id', set_usage_alert.client_id, 'amount', amount,
                            'currency', v_currency);
end
$$;
comment on function api.set_usage_alert(text, numeric, text) is
  'Admins: the monthly usage threshold of a client: {"client_id", "amount", "currency"} (amount null removes it). usage.threshold_crossed is sent once per month when the month''s amount passes it.';

create or replace function ledger._caller_user_id() returns uuid
language sql stable set search_path = pg_catalog, pg_temp as $$
  -- The signed-in person (login tokens carry the user id as sub); null for API tokens.
  select case when auth.claims()->>'sub' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (auth.claims()->>'sub')::uuid end
$$;
comment on function ledger._caller_user_id() is 'The user id of a login token, or null.';

create or replace function api.set_email_alerts(events text[]) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- The caller's own e-mail opt-in: job.failed and/or job.stalled of its client (admins: of every
-- client); an empty list opts out.
declare
  v_user uuid := ledger._caller_user_id();
  v_bad text;
  v_events ledger.notification_event[];
  v_now timestamptz;
begin
  if auth.role() not in ('admin', 'client') or v_user is null
     or not exists (select from auth.users u where u.user_id = v_user and u.disabled_at is null) then
    raise exception 'only a signed-in person may opt in to e-mails' using errcode = 'SL604';
  end if;
  select e into v_bad from unnest(coalesce(events, '{}')) e
   where e is null or e not in ('job.failed', 'job.stalled') limit 1;
  if found then
    raise exception 'events: "%" cannot be sent by e-mail', coalesce(v_bad, 'null') using errcode = 'SL602',
      hint = 'job.failed, job.stalled';
  end if;
  if coalesce(cardinality(events), 0) = 0 then
    delete from ledger.email_subscriptions s where s.user_id = v_user;
  else
    -- values computed apart: on a Citus cluster an INSERT takes no subquery, and its DO UPDATE
    -- no now()
    v_events := (select array_agg(distinct e order by e) from unnest(events) e);
    v_now := now();
    insert into ledger.email_subscriptions as s (user_id, events)
    values (v_user, v_events)
    on conflict (user_id) do update set events = excluded.events, updated_at = v_now;
  end if;
  return jsonb_build_object('events', coalesce((select to_jsonb(s.events) from ledger.email_subscriptions s
                                                 where s.user_id = v_user), '[]'::jsonb),
                            'email_enabled', (ledger._notification_settings()).email_enabled);
end
$$;
comment on function api.set_email_alerts(text[]) is 'The caller''s e-mail opt-in: {"events": ["job.failed", "job.stalled"]} ([] opts out). Sent only when the operator configured e-mail.';

create or replace function ledger._caller_email_alerts()
returns table (email text, events text[], email_enabled boolean)
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  -- The signed-in caller's own row only (people cannot read auth.users).
  select u.email, coalesce(s.events::text[], '{}'),
         (select st.email_enabled from ledger.notification_settings st)
    from auth.users u
    left join ledger.email_subscriptions s on s.user_id = u.user_id
   where u.user_id = ledger._caller_user_id() and auth.role() in ('admin', 'client')
$$;
comment on function ledger._caller_email_alerts() is 'The caller''s e-mail opt-in, for api.email_alerts.';
