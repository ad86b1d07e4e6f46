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
 * Vertical columns, one per category (e.g. months), with the value above each column.
 * items: [{key, label, value, text, selected}]
 */
export function columns(items, { label, onSelect } = {}) {
  const width = 100 * items.length;
  const height = 150;
  const top = Math.max(1, ...items.map((i) => Number(i.value) || 0));
  const plot = height - 40;
  const svg = s('svg', {
    class: 'columns-svg', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  });
  items.forEach((item, i) => {
    const v = Number(item.value) || 0;
    const barH = v > 0 ? Math.max(2, (v / top) * (plot - 14)) : 0;
    const x = i * 100 + 22;
    const y = plot - barH;
    const g = s('g', { class: ['column', item.selected && 'column-selected'].filter(Boolean).join(' ') },
      s('title', {}, `${item.label}: ${item.text}`),
      s('rect', { x, y: 0, width: 56, height: plot, class: 'column-hit' }),
      s('rect', { x, y, width: 56, height: barH, rx: 4, class: 'column-bar' }),
      s('text', { x: x + 28, y: plot + 18, 'text-anchor': 'middle', class: 'column-label' }, item.label),
      v > 0 ? s('text', { x: x + 28, y: Math.max(12, y - 6), 'text-anchor': 'middle', class: 'column-value' }, item.short || item.text) : null);
    if (onSelect) {
      g.addEventListener('click', () => onSelect(item.key));
      g.style.cursor = 'pointer';
    }
    svg.append(g);
  });
  svg.append(s('line', { x1: 0, x2: width, y1: plot, y2: plot, class: 'axis' }));
  return h('div', { class: 'columns' }, svg);
}
