-- Notifications (docs/notifications.md, docs/adr/0008-notification-outbox.md), in this folder:
-- settings and allowed targets (this file), the outbox (20), delivery (30), the HTTP surface (40)
-- and its views (50).
--
-- Writing messages: ledger._enqueue_notification() inserts one outbox row, in the transaction of
-- the change that causes it:
--   job.failed / job.recovered / job.completed  ingest compares each job's status before and
--                                               after its batch (ledger._fold_progress)
--   job.stalled                                 ledger.scan_stalled_jobs(), run by the scheduler
--   invoice.finalized                           ledger._finalize_invoice() (40_billing/)
--   usage.threshold_crossed                     ledger.refresh_usage() (40_billing/)
-- Delivering them: the delivery worker (stepledger.operator.notify) calls dispatch_notifications(),
-- claim_webhook_deliveries() and record_webhook_attempt() (and the e-mail pair); the retry
-- schedule, the final outcomes and the disabling of failing endpoints are decided here.
--
-- Error codes (SQLSTATE in the body's "code"):
--   SL601  URL refused (scheme, host, private address)   SL602  unknown event type / no events
--   SL603  webhook, delivery or client not found or not visible
--   SL604  not allowed for this role                      SL605  bad threshold or currency
--   SL606  endpoint disabled (redeliver)

create or replace function ledger._notification_settings() returns ledger.notification_settings
language sql stable set search_path = pg_catalog, pg_temp as $$
  select s from ledger.notification_settings s where s.singleton
$$;
comment on function ledger._notification_settings() is 'The delivery settings row.';

-- -- Targets (SSRF) -----------------------------------------------------------------------------

create or replace function ledger.webhook_address_blocked(p_address inet) returns boolean
language sql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
  -- Loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254 and
  -- fd00:ec2::254 included), multicast, reserved and unspecified addresses, and IPv4 addresses
  -- embedded in IPv6 (mapped, NAT64) judged as IPv4. The one rule for creation and delivery.
  select case
           when family(p_address) = 6 and (p_address << '::ffff:0:0/96' or p_address << '64:ff9b::/96')
             then ledger.webhook_address_blocked(
                    ('0.0.0.0'::inet + (host(p_address)::inet - (case when p_address << '::ffff:0:0/96'
                                                                      then '::ffff:0.0.0.0' else '64:ff9b::' end)::inet)))
           else p_address << any (array[
                  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16',
                  '172.16.0.0/12', '192.0.0.0/24', '192.0.2.0/24', '192.168.0.0/16', '198.18.0.0/15',
                  '198.51.100.0/24', '203.0.113.0/24', '224.0.0.0/4', '240.0.0.0/4',
                  '::/128', '::1/128', 'fc00::/7', 'fe80::/10', 'ff00::/8', '2001:db8::/32',
                  '100::/64']::inet[])
                or p_address = any (array['0.0.0.0', '::', '::1']::inet[])
         end
$$;
comment on function ledger.webhook_address_blocked(inet) is
  'Whether a webhook may not be sent to this address (loopback, private, link-local, metadata, reserved), unless the operator allows private targets.';

create or replace function ledger._webhook_url_problem(p_url text, p_allow_private boolean)
returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
-- Why a URL may not be a webhook target, or null. Host names are resolved, and checked again, by
-- the delivery worker before every attempt (DNS may change); here literal addresses and names
-- that always mean this machine or the cloud's metadata service are refused.
declare
  v_parts text[];
  v_host text;
  v_address inet;
begin
  if p_url is null or length(p_url) > 2000 then
    return 'the URL is missing or longer than 2000 characters';
  end if;
  if p_url ~ '[\s<>"{}|\\^`]' then
    return 'the URL contains spaces or characters that must be percent-encoded';
  end if;
  v_parts := regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[0-9A-Fa-f:.]+\]|[^/?#:\[\]]+)(?::([0-9]{1,5}))?([/?#].*)?$');
  if v_parts is null then
    return 'not an absolute http(s) URL';
  end if;
  if p_url ~ '^[^:]+://[^/?#]*@' then
    return 'credentials in the URL are not allowed';
  end if;
  if lower(v_parts[1]) not in ('https', 'http') then
    return format('scheme "%s" is not allowed (https only)', v_parts[1]);
  end if;
  if lower(v_parts[1]) = 'http' and not p_allow_private then
    return 'plain http is not allowed: use https';
  end if;
  if v_parts[3] is not null and (v_parts[3]::integer < 1 or v_parts[3]::integer > 65535) then
    return format('port %s is out of range', v_parts[3]);
  end if;
  if p_allow_private then
    return null;
  end if;
  v_host := lower(trim(both '[]' from v_parts[2]));
  v_host := rtrim(v_host, '.');
  if v_host = 'localhost' or v_host like '%.localhost' or v_host like '%.local'
     or v_host like '%.internal' or v_host in ('metadata', 'instance-data') then
    return format('host "%s" is a local or metadata name', v_host);
  end if;
  if v_host ~ '^[0-9a-f:.]+$' and (v_host ~ ':' or v_host ~ '^[0-9.]+$') then
    begin
      v_address := v_host::inet;
    exception when invalid_text_representation then
      -- 0x7f.1, 2130706433 and other spellings some resolvers accept as an address
      return format('host "%s" is not a valid address', v_host);
    end;
    if ledger.webhook_address_blocked(v_address) then
      return format('address %s is loopback, private, link-local or reserved', host(v_address));
    end if;
  elsif v_host ~ '^[0-9.x]+$' or v_host ~ '^0x' then
    return format('host "%s" is not a valid address', v_host);
  end if;
  return null;
end
$$;
comment on function ledger._webhook_url_problem(text, boolean) is 'Why a URL may not be a webhook target (scheme, credentials, local or private host), or null.';
