// Small DOM helpers. Text always goes in as text nodes, never as HTML, so data from the API
// cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Append children (strings, numbers, nodes, arrays, null/false skipped) to a node. */
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false || child === true) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs, svg) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class' || key === 'className') {
      node.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'dataset') {
      Object.assign(node.dataset, value);
    } else if (key === 'style' && typeof value === 'object') {
      for (const [prop, v] of Object.entries(value)) node.style.setProperty(prop, v);
    } else if (!svg && (key === 'value' || key === 'checked' || key === 'selected' || key === 'disabled')) {
      node[key] = value;
      if (key !== 'value' && value) node.setAttribute(key, '');
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

/** h('div', {class: 'x', onClick: fn}, 'text', child, [more]) → HTMLElement */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs instanceof Node || typeof attrs !== 'object' || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = null;
  }
  setAttrs(node, attrs, false);
  return append(node, ...children);
}

/** s('rect', {x: 1}) → SVGElement */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs, true);
  return append(node, ...children);
}

/** Replace every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

let idCounter = 0;
/** A document-unique id for label/aria wiring. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: label + control + optional hint and error slot. */
export function field(labelText, control, { hint, wide } = {}) {
  const id = control.id || uid('f');
  control.id = id;
  const hintNode = hint ? h('small', { class: 'field-hint', id: `${id}-hint` }, hint) : null;
  const errorNode = h('small', { class: 'field-error', id: `${id}-error`, hidden: true });
  const described = [hintNode && hintNode.id, errorNode.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  return h('div', { class: ['field', wide && 'field-wide'] },
    h('label', { for: id }, labelText), control, hintNode, errorNode);
}

/** Show or clear the error of a field made by field(). */
export function setFieldError(control, message) {
  const errorNode = document.getElementById(`${control.id}-error`);
  if (message) {
    control.setAttribute('aria-invalid', 'true');
    if (errorNode) { errorNode.textContent = message; errorNode.hidden = false; }
  } else {
    control.removeAttribute('aria-invalid');
    if (errorNode) { errorNode.textContent = ''; errorNode.hidden = true; }
  }
}

/** <select> with options [{value, label}] or [value]. */
export function select(options, value, attrs = {}) {
  const node = h('select', attrs);
  for (const opt of options) {
    const o = typeof opt === 'object' ? opt : { value: opt, label: opt };
    node.append(h('option', { value: o.value, selected: String(o.value) === String(value ?? '') }, o.label));
  }
  return node;
}
