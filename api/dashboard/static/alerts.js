// The alert timeline of a facility: newest first, with the evidence the engine stored, and the
// officer's acknowledge / resolve (with a comment) actions.
import { api } from './api.js';
import { fmt, h, pill, replace } from './dom.js';

export const SEVERITY = { critical: 'danger', warning: 'warn', info: 'neutral' };
export const STATUS = { open: 'danger', acknowledged: 'warn', resolved: 'ok' };

function isPairs(value) {
  return Array.isArray(value) && value.length > 1 && value.every((v) => Array.isArray(v) && v.length === 2);
}

function scalar(key, value) {
  if (typeof value === 'number') {
    if (/ltv|rate|haircut|trust|fraction|volatility/.test(key) && Math.abs(value) <= 5) return fmt.pct(value);
    return fmt.qty(value);
  }
  if (typeof value === 'string' && /^\d{4}-\d\d-\d\dT/.test(value)) return fmt.time(value);
  if (value === null || value === undefined) return '—';
  return String(value);
}

/** A small sparkline of [time, value] samples (the readings behind a detection). */
function sparkline(samples) {
  const canvas = h('canvas.spark', { width: 280, height: 56, 'aria-label': 'samples' });
  const values = samples.map((s) => Number(s[1]));
  requestAnimationFrame(() => {
    const ctx = canvas.getContext('2d');
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const span = hi - lo || 1;
    ctx.strokeStyle = '#dc2626';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = 2 + (i / Math.max(1, values.length - 1)) * (canvas.width - 4);
      const y = canvas.height - 4 - ((v - lo) / span) * (canvas.height - 8);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
  return h('div.spark-wrap', {}, canvas,
    h('span.muted', {}, `${samples.length} samples · ${fmt.qty(values[0])} → ${fmt.qty(values.at(-1))}`));
}

export function evidenceTable(evidence, depth = 0) {
  const rows = Object.entries(evidence || {}).map(([key, value]) => {
    let shown;
    if (isPairs(value) && value.every((s) => typeof s[1] === 'number')) shown = sparkline(value);
    else if (Array.isArray(value)) shown = value.length ? value.map((v) => scalar(key, v)).join(' · ') : '—';
    else if (value && typeof value === 'object') shown = depth < 2 ? evidenceTable(value, depth + 1) : JSON.stringify(value);
    else shown = scalar(key, value);
    return h('tr', {}, h('th', {}, fmt.label(key)), h('td', {}, shown));
  });
  return h('table.evidence', {}, h('tbody', {}, rows));
}

/**
 * The officer's actions on one alert: Acknowledge (open alerts) and Resolve… with a comment (any
 * alert not yet resolved). Returns { actions, resolveForm }; onChanged() runs after a change.
 */
export function alertActions(alert, { onChanged }) {
  const error = h('span.form-error');
  const act = (path, body) => async (event) => {
    event.target.disabled = true;
    try {
      await api(`/alerts/${alert.id}/${path}`, { method: 'POST', body });
      resolveForm.hidden = true; // done: an open form would hold back the refresh (busy())
      onChanged();
    } catch (e) {
      error.textContent = e.message;
      event.target.disabled = false;
    }
  };
  const comment = h('textarea', { rows: 2, maxlength: 2000, placeholder: 'What was found, what was done' });
  const resolveForm = h('form.resolve-form', {
    hidden: true,
    onsubmit: (event) => {
      event.preventDefault();
      act('resolve', { comment: comment.value.trim() || null })({ target: event.submitter || event.target });
    },
  }, comment, h('div.actions', {},
    h('button.btn.btn-primary', { type: 'submit' }, 'Resolve alert'),
    h('button.btn.btn-ghost', {
      type: 'button', onclick: () => { resolveForm.hidden = true; onChanged(); },
    }, 'Cancel')));

  const actions = h('div.actions', {},
    alert.status === 'open'
      ? h('button.btn.btn-secondary', { type: 'button', dataset: { action: 'acknowledge' }, onclick: act('acknowledge') }, 'Acknowledge')
      : null,
    alert.status !== 'resolved'
      ? h('button.btn.btn-ghost', {
        type: 'button', dataset: { action: 'resolve' },
        onclick: () => { resolveForm.hidden = false; comment.focus(); },
      }, 'Resolve…')
      : null,
    error);
  return { actions, resolveForm };
}

/** Who acknowledged and resolved the alert, and its cure deadline, in one line. */
export function alertTrail(alert) {
  return [
    alert.acknowledged_at ? `acknowledged by ${alert.acknowledged_by} ${fmt.ago(alert.acknowledged_at)}` : null,
    alert.resolved_at ? `resolved by ${alert.resolved_by} ${fmt.ago(alert.resolved_at)}` : null,
    alert.cure_deadline && alert.status !== 'resolved' ? `cure by ${fmt.time(alert.cure_deadline)}` : null,
  ].filter(Boolean).join(' · ');
}

function alertItem(alert, { onChanged, fresh, open }) {
  const { actions, resolveForm } = alertActions(alert, { onChanged });
  const trail = alertTrail(alert);

  return h(`li.timeline-item.sev-${alert.severity}${fresh ? '.fresh' : ''}`, {
    dataset: { alertId: alert.id, type: alert.type, status: alert.status },
  },
  h('div.timeline-dot'),
  h('div.timeline-body', {},
    h('div.timeline-head', {},
      pill(fmt.label(alert.severity), SEVERITY[alert.severity]),
      h('strong', {}, fmt.label(alert.type)),
      alert.lot_id ? h('span.muted', {}, alert.lot_id) : null,
      h('span.spacer'),
      h('span.status', {}, pill(fmt.label(alert.status), STATUS[alert.status])),
      h('time.muted', { datetime: alert.raised_at, title: fmt.time(alert.raised_at) }, fmt.ago(alert.raised_at))),
    h('p.message', {}, alert.message),
    trail ? h('p.trail.muted', {}, trail) : null,
    alert.comment ? h('blockquote.comment', {}, alert.comment) : null,
    h('details.evidence-box', { open }, h('summary', {}, 'Evidence'), evidenceTable(alert.evidence)),
    actions, resolveForm));
}

/** True while the officer is typing a resolution comment: a refresh would throw it away. */
export function busy(list) {
  return list.querySelector('.resolve-form:not([hidden])') !== null;
}

/**
 * Renders alerts into `list`. Alerts not in `seen` are flashed as new unless this is the first
 * render (`seen` is null then); returns the ids seen so far. Open evidence stays open.
 */
export function renderAlerts(list, alerts, { seen, showResolved, onChanged }) {
  const open = new Set([...list.querySelectorAll('details[open]')]
    .map((d) => Number(d.closest('[data-alert-id]')?.dataset.alertId)));
  const shown = alerts.filter((a) => showResolved || a.status !== 'resolved');
  const items = shown.map((a) => alertItem(a, {
    onChanged, fresh: seen !== null && !seen.has(a.id), open: open.has(a.id),
  }));
  const ids = new Set(seen || []);
  for (const a of alerts) ids.add(a.id);
  replace(list, items.length ? items : h('li.timeline-empty.muted', {},
    showResolved ? 'No alerts for this facility.' : 'No active alerts for this facility.'));
  return ids;
}
