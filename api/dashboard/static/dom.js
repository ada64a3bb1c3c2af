// Small DOM and formatting helpers. Text always goes in as text (never as HTML).

/** h('tag.class#id', {attr: value, onclick: fn}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...rest] = spec.split(/(?=[.#])/);
  const el = document.createElement(tag || 'div');
  for (const part of rest) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function note(text, kind = 'muted') {
  return h(`p.note.note-${kind}`, {}, text);
}

const money = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 2 });
const quantity = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const dateTime = new Intl.DateTimeFormat('en-GB', {
  year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit',
  second: '2-digit', hour12: false,
});

const day = new Intl.DateTimeFormat('en-GB', { year: 'numeric', month: 'short', day: '2-digit' });

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

export const fmt = {
  money: (v) => (isNum(v) ? money.format(v) : '—'),
  compact: (v) => (isNum(v) ? compact.format(v) : '—'),
  qty: (v) => (isNum(v) ? quantity.format(v) : '—'),
  pct: (v, digits = 1) => (isNum(v) ? `${(v * 100).toFixed(digits)}%` : '—'),
  time: (v) => (v ? dateTime.format(new Date(v)) : '—'),
  ago(v) {
    if (!v) return '—';
    const s = Math.round((Date.now() - new Date(v).getTime()) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  },
  label: (v) => String(v ?? '').replace(/[_-]+/g, ' ').replace(/^\w/, (c) => c.toUpperCase()),
  date: (v) => (v ? day.format(new Date(v)) : '—'),
  /** A date relative to now in whole days: 'in 12 d', 'today', '3 d ago'. */
  until(v) {
    if (!v) return '—';
    const d = Math.round((new Date(v).getTime() - Date.now()) / 86400000);
    if (d === 0) return 'today';
    return d > 0 ? `in ${d} d` : `${-d} d ago`;
  },
};

export function pill(text, kind) {
  return h(`span.pill.pill-${kind || 'neutral'}`, {}, text);
}

const LTV_KIND = { ok: 'ok', warning: 'warn', liquidation: 'danger', unknown: 'neutral' };
export function ltvPill(status) {
  const text = { ok: 'Within lines', warning: 'Above warning line', liquidation: 'Liquidation line', unknown: 'No limit yet' };
  return pill(text[status] || fmt.label(status), LTV_KIND[status]);
}

/** A horizontal LTV bar with ticks at the warning and liquidation lines. */
export function ltvBar(ltv, warning, liquidation) {
  const scale = Math.max(1, liquidation * 1.15);
  const pos = (v) => `${Math.min(100, (v / scale) * 100).toFixed(1)}%`;
  const fill = h('span.ltv-fill');
  const level = !isNum(ltv) ? 'none' : ltv >= liquidation ? 'danger' : ltv >= warning ? 'warn' : 'ok';
  fill.classList.add(`ltv-${level}`);
  const bar = h('span.ltv-bar', { title: `LTV ${fmt.pct(ltv)} · warning ${fmt.pct(warning, 0)} · `
    + `liquidation ${fmt.pct(liquidation, 0)}` },
  fill, h('span.ltv-tick.ltv-tick-warn'), h('span.ltv-tick.ltv-tick-danger'));
  // Widths and positions through the CSSOM: allowed under a CSP without 'unsafe-inline'.
  fill.style.width = isNum(ltv) ? pos(ltv) : '0';
  bar.children[1].style.left = pos(warning);
  bar.children[2].style.left = pos(liquidation);
  return h('span.ltv', {}, h('span.ltv-value', {}, fmt.pct(ltv)), bar);
}

/** Runs fn at most once per `ms`, the last call winning; returns the wrapped function. */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = Math.max(0, last + ms - Date.now());
    clearTimeout(timer);
    timer = setTimeout(() => {
      last = Date.now();
      fn(...args);
    }, wait);
  };
}
