// Sign in: POST /rpc/login with email and password.

import { ApiError } from '../api.js';
import { errorBox } from '../components.js';
import { login } from '../data.js';
import { field, h, replace, setFieldError } from '../dom.js';
import * as session from '../session.js';

export function renderLogin(root, { notice, onSignedIn }) {
  const email = h('input', {
    type: 'email', name: 'email', autocomplete: 'username', required: true, spellcheck: 'false',
    autocapitalize: 'none', inputmode: 'email',
  });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
  const messages = h('div', { class: 'login-messages', 'aria-live': 'polite' });
  if (notice) {
    messages.append(h('div', { class: 'alert alert-warning', role: 'status' }, h('p', notice)));
  }

  const form = h('form', { class: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    messages,
    field('Email', email),
    field('Password', password),
    submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setFieldError(email, email.value.trim() ? null : 'Enter your email address.');
    setFieldError(password, password.value ? null : 'Enter your password.');
    if (!email.value.trim() || !password.value) {
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    replace(messages);
    try {
      const answer = await login(email.value.trim(), password.value);
      const s = session.fromLogin(answer, email.value.trim());
      if (!s.token || !s.role) throw new ApiError(500, null, 'The server answered without a token.');
      session.save(s);
      onSignedIn(s);
    } catch (err) {
      const wrong = err instanceof ApiError && (err.status === 401 || err.status === 403);
      if (wrong && err.status === 401) {
        replace(messages, h('div', { class: 'alert alert-error', role: 'alert' },
          h('p', { class: 'alert-title' }, 'Sign-in failed'),
          h('p', 'The email or password is not correct.')));
      } else {
        replace(messages, errorBox(err, { title: 'Sign-in failed' }));
      }
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });

  replace(root,
    h('div', { class: 'login-page' },
      h('div', { class: 'login-card' },
        h('div', { class: 'login-brand' }, logo(), h('span', 'stepledger')),
        h('h1', { id: 'login-title', tabindex: '-1' }, 'Sign in'),
        h('p', { class: 'muted' }, 'Follow your analysis jobs, their progress and your usage.'),
        form),
      h('p', { class: 'login-foot muted small' },
        'Your session ends when you close this tab or after a period of inactivity.')));
  (notice ? root.querySelector('#login-title') : email).focus();
}

export function logo() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 32 32');
  svg.setAttribute('class', 'logo');
  svg.setAttribute('aria-hidden', 'true');
  const parts = [
    ['rect', { x: '2', y: '2', width: '28', height: '28', rx: '7', class: 'logo-bg' }],
    ['path', { d: 'M9 21h4v-4h4v-4h4V9', class: 'logo-line' }],
    ['circle', { cx: '21', cy: '9', r: '2.2', class: 'logo-dot' }],
  ];
  for (const [tag, attrs] of parts) {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    svg.append(el);
  }
  return svg;
}
