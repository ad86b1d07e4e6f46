// The app shell: session lifecycle, navigation by role, hash routing and live refresh.

import { configure, describeError } from './api.js';
import { errorBox, liveIndicator } from './components.js';
import { catalog, changeProbe, forgetCatalog, refreshToken } from './data.js';
import { h, replace } from './dom.js';
import * as session from './session.js';
import { logo, renderLogin } from './views/login.js';

import * as alertsView from './views/alerts.js';
import * as billingView from './views/billing.js';
import * as clientsView from './views/clients.js';
import * as errorsView from './views/errors.js';
import * as jobView from './views/job.js';
import * as jobsView from './views/jobs.js';
import * as pricesView from './views/prices.js';
import * as tokensView from './views/tokens.js';
import * as usageView from './views/usage.js';

export const POLL_MS = Number(globalThis.STEPLEDGER_POLL_MS) || 3000;

// path pattern, view module, roles that may open it, nav label (null: not in the nav)
const ROUTES = [
  { path: '/clients', view: clientsView, roles: ['admin'], nav: 'Overview' },
  { path: '/jobs', view: jobsView, roles: ['client', 'admin'], nav: 'Jobs' },
  { path: '/jobs/:client/:job', view: jobView, roles: ['client', 'admin'], nav: null, parent: '/jobs' },
  { path: '/usage', view: usageView, roles: ['client'], nav: 'Usage & invoices', short: 'Usage' },
  { path: '/errors', view: errorsView, roles: ['admin'], nav: 'Error hotspots', short: 'Hotspots' },
  { path: '/billing', view: billingView, roles: ['admin'], nav: 'Billing' },
  { path: '/prices', view: pricesView, roles: ['admin'], nav: 'Price book' },
  { path: '/tokens', view: tokensView, roles: ['admin'], nav: 'API tokens', short: 'Tokens' },
  { path: '/alerts', view: alertsView, roles: ['client', 'admin'], nav: 'Alerts' },
];

const NAV_ICONS = {
  '/clients': 'M3 13h8V3H3v10zm0 8h8v-6H3v6zm10 0h8V11h-8v10zm0-18v6h8V3h-8z',
  '/jobs': 'M4 6h16M4 12h16M4 18h10',
  '/usage': 'M6 3h9l5 5v13H6zM14 3v6h6M9 13h8M9 17h8',
  '/errors': 'M12 3 2 20h20L12 3zm0 6v5m0 3v.5',
  '/billing': 'M3 7h18v12H3zM3 11h18M7 15h4',
  '/prices': 'M3 12 12 3h9v9l-9 9zM16 8h.01',
  '/tokens': 'M14 10a4 4 0 1 0-3.5 4L9 16H7v2H5v2H2v-3l6.5-6.5',
  '/alerts': 'M18 16v-5a6 6 0 0 0-12 0v5l-2 2h16zM10 20a2 2 0 0 0 4 0',
};

const root = document.getElementById('app');
let current = null; // {route, instance, controller, cleanups, path}
let expiryTimer = null;
let scheduledFor = null;
let refreshTimer = null;
let lastActivity = Date.now();

// -- routing --------------------------------------------------------------------------------------
export function parseHash(hash = window.location.hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const [pathPart, queryPart = ''] = raw.split('?');
  return { path: pathPart || '/', query: Object.fromEntries(new URLSearchParams(queryPart)) };
}

export function buildHash(path, query = {}) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ''));
  const text = qs.toString();
  return `#${path}${text ? `?${text}` : ''}`;
}

function match(path) {
  for (const route of ROUTES) {
    const names = [];
    const pattern = new RegExp(`^${route.path.replace(/:[a-z]+/g, (m) => {
      names.push(m.slice(1));
      return '([^/]+)';
    })}$`);
    const m = pattern.exec(path);
    if (m) {
      const params = {};
      names.forEach((name, i) => { params[name] = decodeURIComponent(m[i + 1]); });
      return { route, params };
    }
  }
  return null;
}

function homeFor(s) {
  return s && s.role === 'admin' ? '/clients' : '/jobs';
}

/** The current location after '#': path and query. */
function rawHash() {
  return window.location.hash.replace(/^#/, '');
}

/** Replace the location with a raw 'path?query' (e.g. the page to return to after sign-in). */
function goTo(raw) {
  const target = typeof raw === 'string' && raw.startsWith('/') && !raw.startsWith('/login') ? raw : '/';
  history.replaceState(null, '', `#${target}`);
  route();
}

export function navigate(path, query = {}, { replace: replaceState = false } = {}) {
  const hash = buildHash(path, query);
  if (replaceState) {
    history.replaceState(null, '', hash);
    route();
  } else if (window.location.hash === hash) {
    route();
  } else {
    window.location.hash = hash;
  }
}

function stopCurrent() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups) {
    try { fn(); } catch { /* a cleanup must not stop the next view */ }
  }
  current = null;
}

function route() {
  const { path, query } = parseHash();
  const s = session.load();

  if (path === '/login') {
    stopCurrent();
    if (s && session.msLeft(s) > 0) {
      goTo(query.next || homeFor(s));
      return;
    }
    showLogin(query.next);
    return;
  }
  if (!s) {
    navigate('/login', { next: path === '/' ? '' : rawHash() }, { replace: true });
    return;
  }
  if (scheduledFor !== s.token) scheduleExpiry(s);
  if (session.msLeft(s) <= 0) {
    expire('Your session has expired. Please sign in again.');
    return;
  }
  if (path === '/') {
    navigate(homeFor(s), {}, { replace: true });
    return;
  }

  const found = match(path);
  // Same view, other filters: let the view update in place (keeps focus in its form).
  if (found && current && current.path === path && current.instance && current.instance.update) {
    current.instance.update(query);
    return;
  }

  stopCurrent();
  const main = showShell(s, found ? found.route.parent || found.route.path : null);
  // A page that cannot be shown says why, with the way back to the start page.
  const notice = (title, text) => {
    replace(main, h('div', { class: 'page' },
      h('h1', { id: 'page-title', tabindex: '-1' }, title),
      h('p', text),
      h('p', h('a', { href: buildHash(homeFor(s)) }, 'Go to the start page'))));
    focusHeading(main);
  };
  if (!found) {
    notice('Page not found', 'There is no page at this address.');
    return;
  }
  if (!found.route.roles.includes(s.role)) {
    notice('Not available', 'This page is not available with your sign-in.');
    return;
  }

  const controller = new AbortController();
  current = { route: found.route, path, controller, cleanups: [], instance: null };
  const mine = current;
  const ctx = {
    params: found.params,
    query,
    session: s,
    signal: controller.signal,
    isAdmin: s.role === 'admin',
    navigate,
    setQuery(next) {
      const hash = buildHash(path, next);
      if (window.location.hash !== hash) history.replaceState(null, '', hash);
      if (mine.instance && mine.instance.update) mine.instance.update(next);
    },
    onCleanup(fn) { mine.cleanups.push(fn); },
    live(onChange) { return startLive(mine, onChange); },
    setTitle(title) { document.title = `${title} · stepledger`; },
  };
  document.title = `${found.route.nav || 'Job'} · stepledger`;
  try {
    const instance = found.route.view.render(main, ctx);
    mine.instance = instance || null;
  } catch (err) {
    replace(main, errorBox(err));
  }
  focusHeading(main);
}

let firstPage = true;
function focusHeading(main) {
  // Move focus to the new page's heading so screen readers announce it (not on first load).
  if (firstPage) { firstPage = false; return; }
  const heading = main.querySelector('#page-title');
  if (heading) heading.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

// -- shell --------------------------------------------------------------------------------------
function showLogin(next) {
  document.body.classList.remove('signed-in');
  document.title = 'Sign in · stepledger';
  replace(root);
  const main = h('main', { id: 'main', tabindex: '-1' });
  root.append(main);
  renderLogin(main, {
    notice: session.takeNotice(),
    onSignedIn(s) {
      forgetCatalog();
      scheduleExpiry(s);
      goTo(next || homeFor(s));
    },
  });
}

let shellFor = null;
function showShell(s, activePath) {
  document.body.classList.add('signed-in');
  if (shellFor !== s.token || !document.getElementById('main') || !document.querySelector('.topbar')) {
    shellFor = s.token;
    const who = s.role === 'admin' ? 'BotImage staff' : (s.client_id || '');
    const navList = h('ul', { class: 'nav-list' });
    for (const r of ROUTES) {
      if (!r.nav || !r.roles.includes(s.role)) continue;
      // On a phone the navigation is a grid of short labels; the accessible name stays the full one,
      // which contains the short label (speech users say what they see).
      navList.append(h('li', h('a', { href: buildHash(r.path), class: 'nav-link', dataset: { path: r.path },
        'aria-label': r.short ? r.nav : null },
      navIcon(r.path), h('span', { class: r.short ? 'nav-long' : null }, r.nav),
      r.short ? h('span', { class: 'nav-short', 'aria-hidden': 'true' }, r.short) : null)));
    }
    const signOut = h('button', { type: 'button', class: 'btn btn-ghost btn-small', onClick: signOutNow }, 'Sign out');
    replace(root,
      h('header', { class: 'topbar' },
        h('a', { class: 'brand', href: buildHash(homeFor(s)), 'aria-label': 'stepledger: start page' },
          logo(), h('span', { class: 'brand-name' }, 'stepledger')),
        h('div', { class: 'topbar-user' },
          h('span', { class: 'user-name', id: 'user-name' },
            h('span', { class: 'user-email' }, s.email || ''),
            h('span', { class: 'user-role' }, who)),
          signOut)),
      h('div', { class: 'layout' },
        h('nav', { class: 'sidenav', 'aria-label': 'Main' }, navList),
        h('main', { id: 'main', tabindex: '-1' })));
    if (s.role === 'client') fillClientName(s);
  }
  for (const link of document.querySelectorAll('.nav-link')) {
    const active = link.dataset.path === activePath;
    link.classList.toggle('active', active);
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  return document.getElementById('main');
}

async function fillClientName(s) {
  try {
    const cat = await catalog();
    const name = cat.clientName(s.client_id);
    const node = document.querySelector('.user-role');
    if (node && name) node.textContent = name;
  } catch {
    // The client id stays shown; the name is a nicety.
  }
}

function navIcon(path) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'nav-icon');
  svg.setAttribute('aria-hidden', 'true');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', NAV_ICONS[path] || 'M4 12h16');
  svg.append(p);
  return svg;
}

// -- session lifecycle --------------------------------------------------------------------------
function signOutNow() {
  stopCurrent();
  session.clear();
  session.setNotice('You have signed out.');
  clearTimeout(expiryTimer);
  clearTimeout(refreshTimer);
  scheduledFor = null;
  shellFor = null;
  forgetCatalog();
  navigate('/login', {}, { replace: true });
}

export function expire(message) {
  stopCurrent();
  const { path } = parseHash();
  const back = path !== '/login' && path !== '/' ? rawHash() : '';
  session.clear();
  session.setNotice(message || 'Your session has expired. Please sign in again.');
  clearTimeout(expiryTimer);
  clearTimeout(refreshTimer);
  scheduledFor = null;
  shellFor = null;
  forgetCatalog();
  navigate('/login', { next: back }, { replace: true });
}

function scheduleExpiry(s) {
  clearTimeout(expiryTimer);
  clearTimeout(refreshTimer);
  scheduledFor = s.token;
  const left = session.msLeft(s);
  if (!Number.isFinite(left)) return;
  // Renew a login token a minute before it ends if the user was active meanwhile.
  if (left > 90000) {
    refreshTimer = setTimeout(() => tryRefresh(s), left - 60000);
  }
  expiryTimer = setTimeout(() => {
    const latest = session.load();
    if (latest && latest.token !== s.token) return;
    expire('Your session has expired. Please sign in again.');
  }, Math.max(0, left) + 250);
}

async function tryRefresh(s) {
  if (Date.now() - lastActivity > 15 * 60000) return;
  try {
    const answer = await refreshToken();
    const next = session.fromLogin(answer, s.email);
    if (!next.token) return;
    session.save(next);
    shellFor = next.token;
    scheduleExpiry(next);
  } catch {
    // No renewal (not offered, or refused): the session ends at its expiry as announced.
  }
}

for (const type of ['pointerdown', 'keydown']) {
  window.addEventListener(type, () => { lastActivity = Date.now(); }, { passive: true });
}

configure({
  token: () => session.load()?.token || null,
  onUnauthorized(err) {
    if (/expired/i.test(err.message || '')) {
      expire('Your session has expired. Please sign in again.');
    } else if (err.code && err.code.startsWith('SL')) {
      // stepledger's own refusals are written for people (e.g. "this login is no longer valid").
      const text = describeError(err).message;
      expire(`${text.charAt(0).toUpperCase()}${text.slice(1).replace(/\.?$/, '.')} Please sign in again.`);
    } else {
      expire('Your sign-in is no longer valid. Please sign in again.');
    }
  },
});

// -- live refresh -------------------------------------------------------------------------------
function startLive(owner, onChange) {
  const indicator = liveIndicator();
  const probe = changeProbe();
  let timer = null;
  let stopped = false;
  let busy = false;

  async function tick() {
    if (stopped) return;
    if (document.hidden) { timer = setTimeout(tick, POLL_MS); return; }
    busy = true;
    try {
      const changed = await probe();
      if (changed && !stopped) await onChange();
      indicator.update(new Date(), true);
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      indicator.update(new Date(), false);
    } finally {
      busy = false;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }
  indicator.update(new Date(), true);
  tick();
  const onVisible = () => { if (!document.hidden && !busy && !stopped) { clearTimeout(timer); tick(); } };
  document.addEventListener('visibilitychange', onVisible);
  owner.cleanups.push(() => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
  });
  return indicator.node;
}

// -- start ----------------------------------------------------------------------------------------
document.querySelector('.skip-link')?.addEventListener('click', (event) => {
  event.preventDefault();
  const main = document.getElementById('main');
  if (main) main.focus();
});

window.addEventListener('hashchange', route);
route();
