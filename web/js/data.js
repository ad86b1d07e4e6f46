// What the app reads and writes, in one place: each function names the endpoint of the contract
// (DESIGN.md §4), docs/api.md, docs/billing.md or docs/security.md it uses. Views call these,
// never fetch directly.

import { ApiError, get, quoteValue, request, rpc } from './api.js';
import { localDayEnd, localDayStart } from './format.js';

export const JOB_COLUMNS = 'client_id,job_id,pipeline,status,steps_total,steps_done,progress,'
  + 'started_at,updated_at,finished_at,last_error,last_error_step,retry_expected,duration_s,retries';

/** Drill-down filters of the jobs list, answered by POST /rpc/search_jobs (its arguments). */
export const DRILL_KEYS = ['error_code', 'error_step', 'error_source', 'error_text', 'failed_since',
  'failed_until', 'billed_period', 'billed_step'];

/** Orders of the jobs list: the column the API sorts by, most first. */
export const JOB_SORTS = {
  activity: 'updated_at.desc',
  started: 'started_at.desc',
  duration: 'duration_s.desc',
  retries: 'retries.desc',
};

function drillArgs(filters) {
  const args = {};
  for (const key of DRILL_KEYS) if (filters[key]) args[key] = filters[key];
  return Object.keys(args).length ? args : null;
}

export const JOB_STATES = ['running', 'stalled', 'failed', 'completed'];

// -- catalog ------------------------------------------------------------------------------------
let catalogCache = null;

/** Pipelines with their ordered steps, and the clients the caller can see (cached per page load). */
export async function catalog({ refresh = false } = {}) {
  if (catalogCache && !refresh) return catalogCache;
  const [pipelines, steps, clients] = await Promise.all([
    get('/pipelines', { order: 'pipeline' }),
    get('/pipeline_steps', { order: 'pipeline,step_index' }),
    get('/clients', { order: 'name,client_id' }),
  ]);
  const byPipeline = new Map(pipelines.map((p) => [p.pipeline, { ...p, steps: [] }]));
  for (const s of steps) byPipeline.get(s.pipeline)?.steps.push(s);
  catalogCache = {
    pipelines: [...byPipeline.values()],
    pipeline: (key) => byPipeline.get(key) || null,
    stepTitle: (pipeline, step) => byPipeline.get(pipeline)?.steps.find((x) => x.step === step)?.title || step,
    anyStepTitle: (step) => steps.find((x) => x.step === step)?.title || step,
    clients,
    client: (id) => clients.find((c) => c.client_id === id) || null,
    clientName: (id) => clients.find((c) => c.client_id === id)?.name || id,
  };
  return catalogCache;
}

export function forgetCatalog() {
  catalogCache = null;
}

// -- jobs -----------------------------------------------------------------------------------------
/** PostgREST filters of the jobs list. `status`: all | open | running | stalled | failed | completed. */
export function jobFilters({ status, pipeline, from, to, q, client, month } = {}) {
  const params = {};
  if (status === 'open') params.status = 'neq.completed';
  else if (JOB_STATES.includes(status)) params.status = `eq.${status}`;
  if (pipeline) params.pipeline = `eq.${pipeline}`;
  if (client) params.client_id = `eq.${client}`;
  const { since, until } = startedWindow({ from, to, month });
  const started = [];
  if (since) started.push(`gte.${since}`);
  if (until) started.push(`lt.${until}`);
  if (started.length) params.started_at = started;
  if (q) params.job_id = `like.${likePrefix(q)}*`;
  return params;
}

/** The started_at window of the filters: local calendar days (from, to), or a billing month
 * (YYYY-MM, UTC) so that counts line up with the month's revenue. */
export function startedWindow({ from, to, month } = {}) {
  const m = /^(\d{4})-(\d{2})$/.exec(month || '');
  if (m) {
    return {
      since: new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1)).toISOString(),
      until: new Date(Date.UTC(Number(m[1]), Number(m[2]), 1)).toISOString(),
    };
  }
  return { since: localDayStart(from), until: localDayEnd(to) };
}

/** A job id prefix as typed, for a PostgREST like filter: LIKE's own wildcards (% and _) and its
 * escape character are escaped, so `st_mary` matches only st_mary, like starts_with() in
 * POST /rpc/job_counts. PostgREST reads every * as a wildcard: those are dropped. */
function likePrefix(q) {
  return q.replace(/\*/g, '').replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** GET /jobs, one page, with the total count. */
/** GET /jobs, one page, with the total count; with drill-down filters POST /rpc/search_jobs,
 * whose rows are the same and take the same filters. */
export async function listJobs(filters, { offset = 0, limit = 25 } = {}) {
  const order = `${JOB_SORTS[filters.sort] || JOB_SORTS.activity},client_id,job_id`;
  const params = { ...jobFilters(filters), select: JOB_COLUMNS, order, offset, limit };
  const drill = drillArgs(filters);
  const { data, total } = drill
    ? await request('/rpc/search_jobs', { method: 'POST', body: drill, params, count: true })
    : await request('/jobs', { params, count: true });
  return { rows: data || [], total };
}

/** Counts per state of a drill-down: one count per state from POST /rpc/search_jobs. */
async function drillCounts(filters, drill) {
  const base = jobFilters({ ...filters, status: '' });
  const count = async (status) => (await request('/rpc/search_jobs', {
    method: 'POST', body: drill, count: true,
    params: { ...base, ...(status ? { status: `eq.${status}` } : {}), limit: 0 },
  })).total;
  const [running, stalled, failed, completed, total] = await Promise.all(
    [...JOB_STATES, null].map((s) => count(s)));
  return { running, stalled, failed, completed, total };
}

/** Jobs per state with the list's filters except the state: POST /rpc/job_counts. */
export async function jobCounts(filters) {
  const drill = drillArgs(filters);
  if (drill) return drillCounts(filters, drill);
  const { since, until } = startedWindow(filters);
  const answer = await rpc('job_counts', {
    pipeline: filters.pipeline || null,
    since,
    until,
    job_prefix: filters.q ? filters.q.replace(/\*/g, '') : null,
    client: filters.client || null,
  });
  return {
    running: answer.running, stalled: answer.stalled, failed: answer.failed,
    completed: answer.completed, total: answer.total,
  };
}

/** One job with every attempt of every step of its pipeline: POST /rpc/job_timeline. The
 * database decides each step's and attempt's state (pending, not_run, running, stalled,
 * abandoned, completed, failed, skipped); the app only shows them. null: no such job visible. */
export async function jobDetail(clientId, jobId) {
  let timeline;
  try {
    timeline = await rpc('job_timeline', { job_id: jobId, client_id: clientId });
  } catch (err) {
    if (err instanceof ApiError && err.code === 'SL504') return null;
    throw err;
  }
  const { steps: timelineSteps, span, as_of: asOf, ...job } = timeline;
  const steps = timelineSteps.map((s) => ({ ...s, runs: s.runs || [] }));
  const failing = job.status === 'failed'
    ? steps.find((s) => s.state === 'failed' && s.step === job.last_error_step)
      || steps.find((s) => s.state === 'failed') : null;
  return { job, steps, span, asOf, failing, failingRun: failing ? failing.runs[failing.runs.length - 1] : null };
}

// -- live updates ---------------------------------------------------------------------------------
/** A cheap poll: resolves true when a job the caller can see changed since the previous call.
 * POST /rpc/job_changes with the previous cursor and max_jobs 1: the answer stays tiny, and
 * `resync` (more than one job changed) counts as a change too. */
export function changeProbe() {
  let cursor = null;
  return async function probe() {
    const answer = await rpc('job_changes', { since: cursor, max_jobs: 1 });
    const changed = cursor !== null && (answer.resync || (answer.jobs || []).length > 0);
    cursor = answer.cursor;
    return changed;
  };
}

// -- analytics ----------------------------------------------------------------------------------
export async function errorStats({ since, until, client }) {
  return rpc('error_stats_window', { since: since || null, until: until || null, client: client || null });
}

export async function errorsBySource({ since, until, client }) {
  return rpc('error_stats_by_source', { since: since || null, until: until || null, client: client || null });
}

/** Failures per UTC day and step (POST /rpc/error_stats_by_day). */
export async function errorsByDay({ since, until, client }) {
  return rpc('error_stats_by_day', { since: since || null, until: until || null, client: client || null });
}

/** Jobs started per UTC day, with how many failed (POST /rpc/jobs_by_day). */
export async function jobsByDay({ since, until, client }) {
  return rpc('jobs_by_day', { since: since || null, until: until || null, client: client || null });
}

export async function errorCodes({ since, until, client }) {
  return rpc('error_codes', { since: since || null, until: until || null, client: client || null });
}

export async function refreshAnalytics(maxAgeS = 0) {
  return rpc('refresh_analytics', { max_age_s: maxAgeS });
}

/** When each analytics view was last refreshed (GET /analytics_freshness). */
export async function analyticsFreshness() {
  return get('/analytics_freshness');
}

// -- billing --------------------------------------------------------------------------------------
export async function usage({ client, periods }) {
  const params = { order: 'period.desc,client_id,pipeline,step' };
  if (client) params.client_id = `eq.${client}`;
  if (periods && periods.length) params.period = `in.(${periods.map(quoteValue).join(',')})`;
  return get('/usage', params);
}

/** GET /usage_export as CSV: titles beside keys, pipeline order, true/false, ISO 8601 Z. */
export async function usageCsv({ client, periods }) {
  const params = { order: 'period.desc,client_id,pipeline,step_index,step' };
  if (client) params.client_id = `eq.${client}`;
  if (periods && periods.length) params.period = `in.(${periods.map(quoteValue).join(',')})`;
  return (await request('/usage_export', { params, accept: 'text/csv' })).data;
}

export async function refreshUsage() {
  return rpc('refresh_usage', {});
}

/** How fresh GET /usage is: {refreshed_at, age_s, pending_changes} (GET /usage_freshness). */
export async function usageFreshness() {
  const rows = await get('/usage_freshness');
  return rows[0] || null;
}

export async function invoice(clientId, period) {
  return rpc('invoice', { client_id: clientId, period });
}

export async function prices() {
  return get('/prices', { order: 'pipeline,step,client_id.nullsfirst,effective_from.desc' });
}

export async function addPrice(price) {
  const { data } = await request('/prices', { method: 'POST', body: price, returnRepresentation: true });
  return Array.isArray(data) ? data[0] : data;
}

// -- API tokens -----------------------------------------------------------------------------------
export async function apiTokens() {
  return get('/api_tokens', { order: 'created_at.desc' });
}

export async function createApiToken({ client_id, name }) {
  return rpc('create_api_token', { client_id: client_id || null, name, scope: 'ingest' });
}

export async function revokeApiToken(tokenId) {
  return rpc('revoke_api_token', { token_id: tokenId });
}

// -- auth -----------------------------------------------------------------------------------------
export async function login(email, password) {
  return rpc('login', { email, password }, { auth: false });
}

export async function refreshToken() {
  return rpc('refresh_token', {});
}
