-- The change logs that keep derived data fresh (ADR 0016): ledger.billing_changes (months of
-- usage) and ledger.analytics_changes (days of error statistics and timings). Each row names a
-- client ('' is every client) and the first and last period that changed; a refresh rewrites
-- what the rows its snapshot saw name, then deletes those rows.

create or replace function ledger._changed_ranges(p_change_log regclass, p_first text, p_last text,
                                                  p_snapshot pg_snapshot)
returns table (client_id text, range_from date, range_until date)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The rows of p_change_log visible in p_snapshot, merged per client into disjoint ranges
-- [range_from, range_until) of the periods in its columns p_first .. p_last (an open end is every
-- period before or after), ordered by client and range: each range is rewritten once, however
-- many rows name it. Run as a statement of its own, so that on a Citus cluster it is grouped on
-- the workers by client.
begin
  return query execute format(
    'select m.client_id, lower(m.ranges), upper(m.ranges)
       from (select ch.client_id, unnest(range_agg(daterange(ch.%I, ch.%I, ''[]''))) as ranges
               from %s ch
              where pg_visible_in_snapshot(ch.xid, $1)
              group by ch.client_id) m
      order by m.client_id, lower(m.ranges)', p_first, p_last, p_change_log)
    using p_snapshot;
end
$$;
comment on function ledger._changed_ranges(regclass, text, text, pg_snapshot) is
  'Private: the ranges of periods a change log names per client, as a refresh''s snapshot saw them.';
