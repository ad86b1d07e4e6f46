// What the app reads and writes, in one place: each function names the endpoint of the contract
// (DESIGN.md §4), docs/api.md, docs/billing.md or docs/security.md it uses. Views call these,
// never fetch directly.

import { get, quoteValue, request, rpc } from './api.js';
import { localDayEnd, localDayStart } from './format.js';

export const JOB_COLUMNS = 'client_id,job_id,pipeline,status,steps_total,steps_done,progress,'
  + 'started_at,updated_at,finished_at,last_error,last_error_step';

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
export function jobFilters({ status, pipeline, from, to, q, client } = {}) {
  const params = {};
  if (status === 'open') params.status = 'neq.completed';
  else if (JOB_STATES.includes(status)) params.status = `eq.${status}`;
  if (pipeline) params.pipeline = `eq.${pipeline}`;
  if (client) params.client_id = `eq.${client}`;
  const since = localDayStart(from);
  const until = localDayEnd(to);
  const started = [];
  if (since) started.push(`gte.${since}`);
  if (until) started.push(`lt.${until}`);
  if (started.length) params.started_at = started;
  if (q) params.job_id = `like.${likePrefix(q)}*`;
  return params;
}

/** A job id prefix as typed, for a PostgREST like filter: LIKE's own wildcards (% and _) and its
 * escape character are escaped, so `st_mary` matches only st_mary, like starts_with() in
 * POST /rpc/job_counts. PostgREST reads every * as a wildcard: those are dropped. */
function likePrefix(q) {
  return q.replace(/\*/g, '').replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** GET /jobs, one page, with the total count. */
export async function listJobs(filters, { offset = 0, limit = 25 } = {}) {
  const params = {
    ...jobFilters(filters), select: JOB_COLUMNS, order: 'updated_at.desc,client_id,job_id',
    offset, limit,
  };
  const { data, total } = await request('/jobs', { params, count: true });
  return { rows: data || [], total };
}

/** Jobs per state with the list's filters except the state: POST /rpc/job_counts. */
export async function jobCounts(filters) {
  const answer = await rpc('job_counts', {
    pipeline: filters.pipeline || null,
    since: localDayStart(filters.from),
    until: localDayEnd(filters.to),
    job_prefix: filters.q ? filters.q.replace(/\*/g, '') : null,
    client: filters.client || null,
  });
  return {
    running: answer.running, stalled: answer.stalled, failed: answer.failed,
    completed: answer.completed, total: answer.total,
  };
}

/** One job with every attempt of every step of its pipeline (steps not reached yet: pending). */
export async function jobDetail(clientId, jobId) {
  const [jobs, runs] = await Promise.all([
    get('/jobs', { client_id: `eq.${clientId}`, job_id: `eq.${jobId}`, select: '*' }),
    get('/step_runs', { client_id: `eq.${clientId}`, job_id: `eq.${jobId}`, order: 'step_index,attempt' }),
  ]);
  if (!jobs.length) return null;
  const job = jobs[0];
  const cat = await catalog();
  const defined = cat.pipeline(job.pipeline)?.steps || [];
  const byStep = new Map(defined.map((s) => [s.step, {
    step: s.step, step_index: s.step_index, title: s.title, runs: [],
  }]));
  for (const r of runs) {
    if (!byStep.has(r.step)) byStep.set(r.step, { step: r.step, step_index: r.step_index, title: r.step, runs: [] });
    byStep.get(r.step).runs.push(r);
  }
  const jobOpen = job.status === 'running' || job.status === 'stalled';
  const steps = [...byStep.values()].sort((a, b) => a.step_index - b.step_index);
  for (const s of steps) {
    const last = s.runs.length ? s.runs[s.runs.length - 1] : null;
    for (const r of s.runs) {
      // An attempt still `started` is running, unless a later attempt replaced it or the job ended.
      r.state = r.state || (r.status !== 'started' ? r.status
        : r !== last || !jobOpen ? 'abandoned' : job.status === 'stalled' ? 'stalled' : 'running');
    }
    s.state = last ? last.state : 'pending';
    s.started_at = s.runs.find((r) => r.started_at)?.started_at || null;
    s.finished_at = last ? last.finished_at : null;
  }
  const failing = job.status === 'failed'
    ? steps.find((s) => s.state === 'failed' && s.step === job.last_error_step)
      || steps.find((s) => s.state === 'failed') : null;
  return { job, steps, failing, failingRun: failing ? failing.runs[failing.runs.length - 1] : null };
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

export async function usageCsv({ client, periods }) {
  const params = { order: 'period.desc,client_id,pipeline,step' };
  if (client) params.client_id = `eq.${client}`;
  if (periods && periods.length) params.period = `in.(${periods.map(quoteValue).join(',')})`;
  return (await request('/usage', { params, accept: 'text/csv' })).data;
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
