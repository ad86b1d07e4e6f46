-- Roles of the auth area (issue 3), set up by a superuser on every migrate (idempotent).
--
--   bi_all_clients  group of BI logins bound to no client (created with the others in
--                   00_roles.sql): its policies (select_all_clients) let it read every client's
--                   rows. It inherits bi_reader's grants and adds none.
--
-- BI logins themselves are created by `stepledger bi-user add` (auth.add_bi_login) as members of
-- bi_reader (bound to one client) or bi_all_clients (bound to none).

grant bi_reader to bi_all_clients;
-- The owner creates and drops BI logins and must be able to grant both groups.
grant bi_all_clients to stepledger_owner with admin option;

-- auth.add_bi_login stores a BI login's client as its role default stepledger.client_id, which
-- every Citus node applies to the login's connections (ADR 0012); only a superuser or a holder
-- of SET on the parameter may store it (on a Citus cluster, granted on every worker as well).
grant set on parameter stepledger.client_id to stepledger_owner;
