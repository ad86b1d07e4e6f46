-- The spine: catalog, raw vault, accepted events, and the live state derived from them.
-- Functions live in db/functions/ and policies in db/policies/ (re-applied on every migrate).
-- Every tenant table carries client_id and its keys start with it (docs/scaling.md).

create schema ledger;     -- private tables
create schema api;        -- the HTTP surface: views and functions only
create schema reporting;  -- read-only views for BI logins
create schema auth;       -- private auth helpers and tables

comment on schema api is 'stepledger HTTP API: pipelines send step events; clients follow jobs, usage and errors.';

create domain ledger.slug as text
  check (value ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
comment on domain ledger.slug is 'Lower-case identifier: letters, digits, _ and -, 1 to 63 characters.';

create domain ledger.step_status as text
  check (value in ('started', 'completed', 'failed', 'skipped'));

-- Code versions that processed vault rows; the newest row is the running one.
create table ledger.code_versions (
  code_version text primary key,
  installed_at timestamptz not null default now()
);

create table ledger.clients (
  client_id ledger.slug primary key,
  name text not null check (length(name) between 1 and 200),
  currency text not null default 'EUR' check (currency ~ '^[A-Z]{3}$'),
  created_at timestamptz not null default now()
);

create table ledger.pipelines (
  pipeline ledger.slug primary key,
  title text not null check (length(title) between 1 and 200),
  description text,
  stall_timeout interval not null default '1 hour' check (stall_timeout > interval '0'),
  version integer not null default 1 check (version >= 1),
  steps_total integer not null default 0 check (steps_total >= 0),
  definition jsonb not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table ledger.pipeline_steps (
  pipeline ledger.slug not null references ledger.pipelines on delete cascade,
  step ledger.slug not null,
  step_index integer not null check (step_index >= 1),
  title text not null check (length(title) between 1 and 200),
  description text,
  data_schema jsonb check (data_schema is null or jsonb_typeof(data_schema) = 'object'),
  added_in_version integer not null default 1,
  primary key (pipeline, step),
  unique (pipeline, step_index) deferrable initially deferred
);

-- Raw vault: every payload as received, valid or not, kept forever. Partitioned by month of
-- arrival so that ingest only ever touches the newest partition.
create table ledger.vault (
  client_id text not null,            -- who the row is attributed to ('' when nobody can be)
  received_at timestamptz not null default now(),
  vault_id bigint generated always as identity,
  batch_id uuid not null,
  position integer not null,          -- index in the batch (0-based) or line number (1-based)
  channel text not null check (channel in ('json', 'ndjson')),
  event_id text,
  payload jsonb,                      -- the element as received, when it was JSON
  raw_text text,                      -- the text as received, when it was not JSON
  outcome text not null check (outcome in ('accepted', 'duplicate', 'rejected')),
  errors jsonb not null default '[]' check (jsonb_typeof(errors) = 'array'),
  sender_role text,
  token_id uuid,
  code_version text not null,
  primary key (client_id, received_at, vault_id),
  check (payload is not null or raw_text is not null)
) partition by range (received_at);

create table ledger.vault_default partition of ledger.vault default;
create index on ledger.vault (received_at);
create index on ledger.vault (batch_id);
create index on ledger.vault (outcome, received_at) where outcome = 'rejected';

-- Deduplication keys: one row per accepted (client, event_id), across all months.
create table ledger.event_ids (
  client_id text not null,
  event_id text not null,
  primary key (client_id, event_id)
);

-- Accepted events. The migration runner adds a CHECK constraint that validates the payload against
-- schemas/step_event.v1.json (through an immutable wrapper generated from that file), so no path,
-- HTTP, psql or a future loader, can store an event that breaks the envelope.
create table ledger.events (
  client_id ledger.slug not null,
  received_at timestamptz not null,
  event_id text not null,
  vault_id bigint not null,
  job_id text not null,
  pipeline ledger.slug not null,
  step ledger.slug not null,
  status ledger.step_status not null,
  occurred_at timestamptz not null,
  attempt integer not null check (attempt >= 1),
  units numeric not null check (units >= 0),
  error_code text,
  error_message text,
  error_retryable boolean,
  source text,
  payload jsonb not null,
  primary key (client_id, received_at, event_id)
) partition by range (received_at);

create table ledger.events_default partition of ledger.events default;
create index on ledger.events (client_id, job_id);

-- One row per attempt of a step in a job: the live view of step runs.
create table ledger.step_runs (
  client_id text not null,
  job_id text not null,
  step text not null,
  attempt integer not null,
  pipeline text not null,
  step_index integer not null,
  status ledger.step_status not null,
  started_at timestamptz,
  finished_at timestamptz,
  units numeric,
  error_code text,
  error_message text,
  error_retryable boolean,
  source text,
  decided_at timestamptz not null,    -- occurred_at of the event that set the status
  events integer not null default 0,
  updated_at timestamptz not null default now(),
  primary key (client_id, job_id, step, attempt)
);

-- The latest attempt of each step of a job, and the completion that bills it.
create table ledger.job_steps (
  client_id text not null,
  job_id text not null,
  step text not null,
  pipeline text not null,
  step_index integer not null,
  latest_attempt integer not null,
  latest_status ledger.step_status not null,
  latest_at timestamptz not null,
  billed_attempt integer,             -- latest completed attempt, if any
  billed_units numeric,
  completed_at timestamptz,
  primary key (client_id, job_id, step)
);

create table ledger.jobs (
  client_id text not null,
  job_id text not null,
  pipeline text not null,
  steps_total integer not null,       -- the pipeline's step count when the job started
  steps_done integer not null default 0,
  status text not null default 'running' check (status in ('running', 'completed', 'failed')),
  started_at timestamptz not null,
  updated_at timestamptz not null,    -- latest occurred_at of its events
  finished_at timestamptz,
  last_error text,
  last_error_step text,
  last_received_at timestamptz not null default now(),
  events integer not null default 0,
  primary key (client_id, job_id)
);

create index on ledger.jobs (client_id, updated_at desc);
create index on ledger.jobs (updated_at desc);
create index on ledger.jobs (client_id, status, updated_at desc);
