// Charts as inline SVG: horizontal bars (by step, by site) and monthly columns. Every chart has a
// text alternative: the numbers are also in the accessible name or in an adjacent table.

import { h, s } from './dom.js';

/**
 * Horizontal bar chart. items: [{label, value, note, tone}] (already sorted). Renders as HTML
 * rows with SVG bars so long labels wrap on a phone.
 */
export function barList(items, { valueText = (v) => String(v), label, max } = {}) {
  const top = max ?? Math.max(1, ...items.map((i) => Number(i.value) || 0));
  return h('ul', { class: 'barlist', 'aria-label': label },
    items.map((item) => {
      const pct = Math.max(0, Math.min(1, (Number(item.value) || 0) / top));
      return h('li', { class: 'barlist-row' },
        h('div', { class: 'barlist-label' },
          h('span', { class: 'barlist-name' }, item.label),
          h('span', { class: 'barlist-value' }, valueText(item.value, item))),
        s('svg', { class: 'barlist-svg', viewBox: '0 0 100 6', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
          s('rect', { x: 0, y: 0, width: 100, height: 6, rx: 3, class: 'bar-track' }),
          s('rect', { x: 0, y: 0, width: Math.max(pct * 100, pct > 0 ? 1.5 : 0), height: 6, rx: 3,
            class: `bar-fill ${item.tone ? `bar-${item.tone}` : ''}` })),
        item.note ? h('span', { class: 'barlist-note muted small' }, item.note) : null);
    }));
}

/**
 * Vertical columns, one per category (e.g. months), with the value above each column. Plain HTML
 * so the labels stay legible at any width. With onSelect, each column is a button.
 * items: [{key, label, value, text, short, selected}]
 */
export function columns(items, { label, onSelect } = {}) {
  const top = Math.max(1, ...items.map((i) => Number(i.value) || 0));
  return h('ul', { class: 'columns', 'aria-label': label },
    items.map((item) => {
      const v = Number(item.value) || 0;
      const pct = v > 0 ? Math.max(2, (v / top) * 100) : 0;
      const inner = [
        h('span', { class: 'column-value', 'aria-hidden': 'true' }, v > 0 ? item.short || item.text : ''),
        h('span', { class: 'column-track', 'aria-hidden': 'true' },
          h('span', { class: 'column-bar', style: { height: `${pct}%` } })),
        h('span', { class: 'column-label', 'aria-hidden': 'true' }, item.label),
      ];
      const name = `${item.name || item.label}: ${item.text}`;
      return h('li', { class: ['column', item.selected && 'column-selected'] },
        onSelect
          ? h('button', { type: 'button', class: 'column-button', 'aria-label': name,
            'aria-pressed': String(Boolean(item.selected)), onClick: () => onSelect(item.key) }, inner)
          : h('div', { class: 'column-button', role: 'img', 'aria-label': name }, inner));
    }));
}
