// The HTTP client for PostgREST behind nginx (/api/). Every failure becomes an ApiError with a
// message a person can read: PostgREST's message and hint, or a plain sentence for network and
// server faults. Never a stack trace, never an HTML error page.

export const API_BASE = (globalThis.STEPLEDGER_API_BASE || '/api').replace(/\/$/, '');

let tokenProvider = () => null;
let unauthorizedHandler = () => {};

/** Wire the session in: where the token comes from, and what to do on HTTP 401. */
export function configure({ token, onUnauthorized }) {
  if (token) tokenProvider = token;
  if (onUnauthorized) unauthorizedHandler = onUnauthorized;
}

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const b = body && typeof body === 'object' ? body : {};
    super(typeof b.message === 'string' && b.message ? b.message : fallback);
    this.name = 'ApiError';
    this.status = status;
    this.code = typeof b.code === 'string' ? b.code : null;
    this.hint = typeof b.hint === 'string' ? b.hint : null;
    this.details = typeof b.details === 'string' ? b.details : null;
  }

  /** True when the endpoint itself does not exist on this server (not yet deployed). */
  get missingEndpoint() {
    return this.status === 404 && ['PGRST202', 'PGRST205', '42P01', '42883'].includes(this.code);
  }
}

function statusSentence(status) {
  if (status === 0) return 'Cannot reach the server. Check your network connection and try again.';
  if (status === 401) return 'Your session is no longer valid. Please sign in again.';
  if (status === 403) return 'You do not have permission to do this.';
  if (status === 404) return 'Not found.';
  if (status === 408 || status === 504) return 'The server took too long to answer. Please try again.';
  if (status === 413) return 'The request is too large.';
  if (status === 429) return 'Too many requests. Please wait a moment and try again.';
  if (status >= 500) return `The server had a problem (HTTP ${status}). Please try again in a moment.`;
  return `The request failed (HTTP ${status}).`;
}

/** A readable sentence for any error, for display. */
export function describeError(err) {
  if (err instanceof ApiError) {
    let message = err.message || statusSentence(err.status);
    // PostgREST's own wording for a few common cases, said for people.
    if (err.code === '42501') message = 'You do not have permission to do this.';
    if (err.code === 'PGRST301' || err.code === 'PGRST302') message = statusSentence(401);
    if (err.code === '23505') message = `This already exists. ${err.details || ''}`.trim();
    return { message, hint: err.hint, details: err.code === '23505' ? null : err.details };
  }
  if (err && err.name === 'AbortError') return { message: 'Cancelled.' };
  return { message: 'Something went wrong in the app. Please reload the page and try again.' };
}

function buildUrl(path, params) {
  const url = new URL(API_BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === '') continue;
    if (Array.isArray(value)) value.forEach((v) => url.searchParams.append(key, v));
    else url.searchParams.append(key, value);
  }
  return url;
}

/**
 * request('/jobs', {params: {...}, count: true}) → {data, total, headers}
 * Options: method, params (query string), body (JSON), count (Prefer: count=exact),
 * accept ('text/csv' → data is a Blob), auth (default true), signal, single.
 */
export async function request(path, opts = {}) {
  const { method = 'GET', params, body, count, accept, auth = true, signal } = opts;
  const headers = { Accept: accept || 'application/json' };
  const prefer = [];
  if (count) prefer.push('count=exact');
  if (opts.returnRepresentation) prefer.push('return=representation');
  if (prefer.length) headers.Prefer = prefer.join(', ');
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const token = auth ? tokenProvider() : null;
  if (token) headers.Authorization = `Bearer ${token}`;

  let response;
  try {
    response = await fetch(buildUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, null, statusSentence(0));
  }

  const type = response.headers.get('Content-Type') || '';
  if (!response.ok) {
    let errBody = null;
    if (type.includes('json')) {
      try { errBody = await response.json(); } catch { errBody = null; }
    }
    const error = new ApiError(response.status, errBody, statusSentence(response.status));
    if (response.status === 401 && auth && token) unauthorizedHandler(error);
    throw error;
  }

  let data = null;
  if (accept && !accept.includes('json')) {
    data = await response.blob();
  } else if (response.status !== 204 && type.includes('json')) {
    const text = await response.text();
    data = text ? JSON.parse(text) : null;
  }
  let total = null;
  const range = response.headers.get('Content-Range');
  if (range && range.includes('/')) {
    const n = Number(range.split('/')[1]);
    if (Number.isFinite(n)) total = n;
  }
  return { data, total, headers: response.headers };
}

export async function get(path, params, opts = {}) {
  return (await request(path, { ...opts, params })).data;
}

export async function rpc(name, args, opts = {}) {
  return (await request(`/rpc/${name}`, { ...opts, method: 'POST', body: args || {} })).data;
}

/** Escape a value for a PostgREST filter list or like pattern. */
export function quoteValue(value) {
  return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}
