// Formatting for people: dates and times in the browser's own time zone, durations, money.

const locale = undefined; // the browser's locale
export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

const dateTimeFmt = new Intl.DateTimeFormat(locale, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const dateTimeSecFmt = new Intl.DateTimeFormat(locale, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  second: '2-digit', timeZoneName: 'short',
});
const sameYearFmt = new Intl.DateTimeFormat(locale, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const timeFmt = new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(locale, { year: 'numeric', month: 'short', day: 'numeric' });
const monthFmt = new Intl.DateTimeFormat(locale, { year: 'numeric', month: 'long', timeZone: 'UTC' });
const shortMonthFmt = new Intl.DateTimeFormat(locale, { month: 'short', timeZone: 'UTC' });
const relFmt = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' });
const intFmt = new Intl.NumberFormat(locale);
const pctFmt = new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: 1 });

function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "Mar 4, 2025, 14:05" in the user's zone. */
export function dateTime(value) {
  const d = toDate(value);
  return d ? dateTimeFmt.format(d) : '—';
}

/** "Mar 4, 14:05" within the current year, else as dateTime(): for lists. */
export function dateTimeShort(value, now = new Date()) {
  const d = toDate(value);
  if (!d) return '—';
  return d.getFullYear() === now.getFullYear() ? sameYearFmt.format(d) : dateTimeFmt.format(d);
}

/** Full timestamp with seconds and zone name, for tooltips and <time> titles. */
export function dateTimeFull(value) {
  const d = toDate(value);
  return d ? dateTimeSecFmt.format(d) : '';
}

export function time(value) {
  const d = toDate(value);
  return d ? timeFmt.format(d) : '—';
}

export function date(value) {
  const d = toDate(value);
  return d ? dateFmt.format(d) : '—';
}

/** "3 minutes ago" */
export function relative(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return '—';
  const seconds = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return relFmt.format(Math.round(seconds), 'second');
  if (abs < 45 * 60) return relFmt.format(Math.round(seconds / 60), 'minute');
  if (abs < 22 * 3600) return relFmt.format(Math.round(seconds / 3600), 'hour');
  if (abs < 26 * 86400) return relFmt.format(Math.round(seconds / 86400), 'day');
  return dateTime(d);
}

/** "1 h 05 min", "42 s", "3.2 s" */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds === '') return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s)) return '—';
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function int(value) {
  const n = Number(value);
  return Number.isFinite(n) ? intFmt.format(n) : '—';
}

export function percent(value) {
  const n = Number(value);
  return Number.isFinite(n) ? pctFmt.format(n) : '—';
}

const moneyFmts = new Map();
export function money(amount, currency) {
  const n = Number(amount);
  if (!Number.isFinite(n)) return '—';
  const code = /^[A-Z]{3}$/.test(currency || '') ? currency : null;
  if (!code) return n.toFixed(2);
  if (!moneyFmts.has(code)) {
    moneyFmts.set(code, new Intl.NumberFormat(locale, { style: 'currency', currency: code }));
  }
  return moneyFmts.get(code).format(n);
}

/** A unit price may carry more decimals than money: keep up to 6. */
export function unitPrice(amount, currency) {
  const n = Number(amount);
  if (!Number.isFinite(n)) return '—';
  const code = /^[A-Z]{3}$/.test(currency || '') ? currency : undefined;
  return new Intl.NumberFormat(locale, code
    ? { style: 'currency', currency: code, maximumFractionDigits: 6 }
    : { maximumFractionDigits: 6 }).format(n);
}

/** "2025-03" → "March 2025" */
export function period(value) {
  const m = /^(\d{4})-(\d{2})$/.exec(value || '');
  if (!m) return value || '—';
  return monthFmt.format(new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1)));
}

export function periodShort(value) {
  const m = /^(\d{4})-(\d{2})$/.exec(value || '');
  if (!m) return value || '';
  return shortMonthFmt.format(new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1)));
}

/** Billing periods are calendar months in UTC: the current one, and the n before it. */
export function recentPeriods(n = 12, now = new Date()) {
  const out = [];
  for (let i = 0; i < n; i += 1) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i, 1));
    out.push(`${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, '0')}`);
  }
  return out;
}

export function currentPeriod(now = new Date()) {
  return recentPeriods(1, now)[0];
}

/** A local calendar date (YYYY-MM-DD from <input type=date>) → the instant it starts, ISO. */
export function localDayStart(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  if (!m) return null;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])).toISOString();
}

/** The instant the day after a local calendar date starts: the end of a date range. */
export function localDayEnd(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  if (!m) return null;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + 1).toISOString();
}

/** Today's local date as YYYY-MM-DD. */
export function todayLocal(now = new Date()) {
  const p = (n) => String(n).padStart(2, '0');
  return `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}`;
}

/** A <time> element-friendly ISO string. */
export function iso(value) {
  const d = toDate(value);
  return d ? d.toISOString() : '';
}
