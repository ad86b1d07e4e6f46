// The signed-in session: the token from POST /rpc/login, kept in sessionStorage (one tab, gone
// when the tab closes). The token's own claims decide what the app shows; the database decides
// what the token may read.

const KEY = 'stepledger.session';
const NOTICE_KEY = 'stepledger.notice';

/** Decode a JWT's payload without verifying it (the server verifies). */
export function decodeJwt(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** Build a session from a login answer {token, role, client_id, expires_at}. */
export function fromLogin(answer, email) {
  const claims = decodeJwt(answer.token) || {};
  const expMs = answer.expires_at ? Date.parse(answer.expires_at)
    : (claims.exp ? claims.exp * 1000 : NaN);
  return {
    token: answer.token,
    role: answer.role || claims.role,
    client_id: answer.client_id ?? claims.client_id ?? null,
    email: claims.email || email || null,
    expires_at: Number.isFinite(expMs) ? new Date(expMs).toISOString() : null,
  };
}

/** The stored session, or null when there is none or it is not usable. */
export function load() {
  let raw;
  try {
    raw = sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
  if (!raw) return null;
  try {
    const session = JSON.parse(raw);
    if (!session || typeof session.token !== 'string' || !session.role) return null;
    return session;
  } catch {
    return null;
  }
}

export function save(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clear() {
  sessionStorage.removeItem(KEY);
}

/** Milliseconds until the session expires (negative when it has); Infinity without expiry. */
export function msLeft(session, now = Date.now()) {
  if (!session || !session.expires_at) return Infinity;
  return Date.parse(session.expires_at) - now;
}

export function isAdmin(session) {
  return Boolean(session) && session.role === 'admin';
}

/** A one-shot message for the sign-in page (e.g. why the session ended). */
export function setNotice(text) {
  if (text) sessionStorage.setItem(NOTICE_KEY, text);
  else sessionStorage.removeItem(NOTICE_KEY);
}

export function takeNotice() {
  const text = sessionStorage.getItem(NOTICE_KEY);
  sessionStorage.removeItem(NOTICE_KEY);
  return text;
}
