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

/** "3.2 s", "42 s", "1 min 05 s", "1 h 05 min", "2 d 3 h". The value is rounded once, to the
 * precision its unit shows, before it is split: 59.6 s is "1 min 00 s", never "60 s" or
 * "1 min 60 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds === '') return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s)) return '—';
  if (s < 0) return `−${duration(-s)}`;
  const tenths = Math.round(s * 10);
  if (tenths < 100) return `${(tenths / 10).toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
  const minutes = Math.round(s / 60);
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
  const hours = Math.round(s / 3600);
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

// Every amount of money goes through money(): the same currency symbol, grouping and decimals
// everywhere, in three precisions: `exact` (invoice amounts: the currency's decimals), `unit`
// (unit prices: up to 6 decimals, at least the currency's) and `compact` (chart labels: "€863",
// "€1.5K", never "€862.7").
const moneyFmts = new Map();
function moneyFormat(code, precision, large) {
  const key = `${code}|${precision}|${large}`;
  if (!moneyFmts.has(key)) {
    const opts = code ? { style: 'currency', currency: code } : { minimumFractionDigits: 2 };
    if (precision === 'unit') opts.maximumFractionDigits = 6;
    if (precision === 'compact') {
      Object.assign(opts, large
        ? { notation: 'compact', maximumFractionDigits: 1, minimumFractionDigits: 0 }
        : { maximumFractionDigits: 0, minimumFractionDigits: 0 });
    }
    moneyFmts.set(key, new Intl.NumberFormat(locale, opts));
  }
  return moneyFmts.get(key);
}

export function money(amount, currency, { precision = 'exact' } = {}) {
  const n = Number(amount);
  if (amount === null || amount === undefined || amount === '' || !Number.isFinite(n)) return '—';
  const code = /^[A-Z]{3}$/.test(currency || '') ? currency : null;
  return moneyFormat(code, precision, Math.abs(n) >= 1000).format(n);
}

/** A unit price: up to 6 decimals. */
export function unitPrice(amount, currency) {
  return money(amount, currency, { precision: 'unit' });
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
