-- Real invoices (docs/billing.md, "Invoices"):
-- 1. per-client payment terms on ledger.clients (days from issue to due date, with a default);
-- 2. invoices numbered per client: number 1, 2, 3 ... within each client, unique on
--    (client_id, number) and (client_id, invoice_no), so the keys survive a Citus distribution by
--    client_id (no global unique index); issue and due dates;
-- 3. ledger.invoice_documents: the PDF of each finalized invoice, rendered once from the same
--    template as the HTML view and kept with it (immutable like the invoice).

alter table ledger.clients
  add column payment_terms_days integer not null default 30
    check (payment_terms_days between 0 and 365);
comment on column ledger.clients.payment_terms_days is
  'Days from an invoice''s issue date to its due date.';

alter table ledger.invoices
  add column number integer check (number >= 1),
  add column issued_on date,
  add column due_on date;

-- Invoices finalized before this migration get their numbers in period order, issued on the
-- day they were finalized. The immutability triggers (db/functions/60_billing.sql) exist only
-- after a first migrate; they are set aside for this one backfill.
alter table ledger.invoices disable trigger user;
update ledger.invoices i
   set number = n.number,
       issued_on = (i.finalized_at at time zone 'UTC')::date,
       due_on = (i.finalized_at at time zone 'UTC')::date + 30
  from (select client_id, period,
               row_number() over (partition by client_id order by period)::integer as number
          from ledger.invoices) n
 where n.client_id = i.client_id and n.period = i.period;
alter table ledger.invoices enable trigger user;

alter table ledger.invoices
  alter column number set not null,
  alter column issued_on set not null,
  alter column due_on set not null,
  add constraint invoices_due_after_issue check (due_on >= issued_on),
  drop constraint invoices_invoice_no_key,
  add constraint invoices_client_number_key unique (client_id, number),
  add constraint invoices_client_invoice_no_key unique (client_id, invoice_no);

comment on column ledger.invoices.number is 'Sequence number of the invoice within its client (1, 2, ...), gapless.';
comment on column ledger.invoices.issued_on is 'Issue date (UTC): the day the invoice was finalized.';
comment on column ledger.invoices.due_on is 'Due date: issued_on plus the client''s payment terms at finalization.';

create table ledger.invoice_documents (
  client_id ledger.slug not null,
  period date not null,
  media_type text not null default 'application/pdf' check (media_type = 'application/pdf'),
  document bytea not null check (length(document) > 0),
  sha256 text not null,
  rendered_at timestamptz not null default now(),
  rendered_by text not null,
  primary key (client_id, period),
  foreign key (client_id, period) references ledger.invoices
);

comment on table ledger.invoice_documents is
  'The PDF of each finalized invoice, rendered once from the invoice template; immutable.';
