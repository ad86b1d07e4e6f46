// Charts as inline SVG: horizontal bars (by step, by site) and monthly columns. Every chart has a
// text alternative: the numbers are also in the accessible name or in an adjacent table.

import { h, s } from './dom.js';

/**
 * Horizontal bar chart. items: [{label, value, note, tone, href}] (already sorted); with href the
 * name links to the rows behind the bar (a drill-down). Renders as HTML
 * rows with SVG bars so long labels wrap on a phone.
 */
export function barList(items, { valueText = (v) => String(v), label, max } = {}) {
  const top = max ?? Math.max(1, ...items.map((i) => Number(i.value) || 0));
  return h('ul', { class: 'barlist', 'aria-label': label },
    items.map((item) => {
      const pct = Math.max(0, Math.min(1, (Number(item.value) || 0) / top));
      return h('li', { class: 'barlist-row' },
        h('div', { class: 'barlist-label' },
          h('span', { class: 'barlist-name' }, item.href ? h('a', { href: item.href }, item.label) : item.label),
          h('span', { class: 'barlist-value' }, valueText(item.value, item))),
        s('svg', { class: 'barlist-svg', viewBox: '0 0 100 6', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
          s('rect', { x: 0, y: 0, width: 100, height: 6, rx: 3, class: 'bar-track' }),
          s('rect', { x: 0, y: 0, width: Math.max(pct * 100, pct > 0 ? 1.5 : 0), height: 6, rx: 3,
            class: `bar-fill ${item.tone ? `bar-${item.tone}` : ''}` })),
        item.note ? h('span', { class: 'barlist-note muted small' }, item.note) : null);
    }));
}

/**
 * Vertical columns, one per category (e.g. months, days), with the value above each column. Plain
 * HTML so the labels stay legible at any width. With onSelect, each column is a button whose name
 * is its visible text followed by the full figure (never a name that hides what is shown).
 * items: [{key, label, value, text, short, name, selected}]
 * values: 'all' shows every value above its column on wide screens; on a phone none (they would
 * collide), and the selected item's full figure is written under the chart.
 * 'none' (many narrow columns, e.g. days): no values on the columns, only the tallest as a scale.
 */
export function columns(items, { label, onSelect, values = 'all', labelEvery = 1 } = {}) {
  const top = Math.max(1, ...items.map((i) => Number(i.value) || 0));
  const list = h('ul', { class: ['columns', values === 'none' && 'columns-no-values'], 'aria-label': label },
    items.map((item, index) => {
      const v = Number(item.value) || 0;
      const pct = v > 0 ? Math.max(2, (v / top) * 100) : 0;
      const full = `${item.name || item.label}: ${item.text}`;
      const showLabel = index % labelEvery === 0 || item.selected;
      const inner = [
        values === 'none' ? null : h('span', { class: 'column-value' }, v > 0 ? item.short || item.text : ''),
        h('span', { class: 'column-track', 'aria-hidden': 'true' },
          h('span', { class: ['column-bar', item.tone && `column-bar-${item.tone}`], style: { height: `${pct}%` } })),
        h('span', { class: ['column-label', !showLabel && 'column-label-skipped'] }, item.label),
        h('span', { class: 'visually-hidden' }, ` (${full})`),
      ];
      return h('li', { class: ['column', item.selected && 'column-selected'], dataset: { key: item.key } },
        onSelect
          ? h('button', { type: 'button', class: 'column-button', 'aria-pressed': String(Boolean(item.selected)),
            onClick: () => onSelect(item.key) }, inner)
          : h('div', { class: 'column-button' }, inner));
    }));
  const selected = items.find((i) => i.selected);
  return h('div', { class: 'columns-chart' },
    values === 'none' ? h('p', { class: 'columns-scale muted small', 'aria-hidden': 'true' }, `Tallest: ${items.find((i) => Number(i.value) === top)?.text ?? '0'}`) : null,
    list,
    selected && values !== 'none' ? h('p', { class: 'columns-selected-text small', 'aria-hidden': 'true' }, `${selected.name || selected.label}: ${selected.text}`) : null);
}
