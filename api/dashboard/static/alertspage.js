// Alerts across the portfolio: every alert the officer may see, newest first, filtered by status,
// severity, type and facility (kept in the address: #/alerts?status=open&severity=critical), 50 at
// a time with "Load more" until the last one, each linking to its facility, with the same
// Acknowledge / Resolve actions as the facility page. Live alert events refresh the list.
import { api, queryValues } from './api.js';
import { SEVERITY, STATUS, alertActions, alertTrail, busy, evidenceTable } from './alerts.js';
import { fmt, h, note, pill, replace, throttle } from './dom.js';

export const PAGE_SIZE = 50;
const STATUSES = [
  ['active', 'Active (open or acknowledged)'], ['open', 'Open'], ['acknowledged', 'Acknowledged'],
  ['resolved', 'Resolved'], ['any', 'Any status'],
];
const SEVERITIES = [['', 'Any severity'], ['critical', 'Critical'], ['warning', 'Warning'], ['info', 'Info']];
const FILTERS = ['status', 'severity', 'type', 'facility_id'];

/** The filters in the address (#/alerts?...), with the defaults filled in. */
function readFilters(params) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || '']));
  if (!filters.status) filters.status = 'active';
  return filters;
}

function addressOf(filters) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    if (filters[name] && !(name === 'status' && filters[name] === 'active')) params.set(name, filters[name]);
  }
  const query = params.toString();
  return query ? `#/alerts?${query}` : '#/alerts';
}

/** The API's query for the filters (status `any` is no filter). */
function apiQuery(filters) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    if (filters[name] && !(name === 'status' && filters[name] === 'any')) params.set(name, filters[name]);
  }
  return params;
}

/** Puts `options` ([value, text] pairs) in a select, keeping `value` chosen (added if unknown). */
function setOptions(control, options, value) {
  const known = options.some(([v]) => v === value);
  const all = known || !value ? options : [...options, [value, value]];
  replace(control, all.map(([v, text]) => h('option', { value: v }, text)));
  control.value = value;
}

function select(id, label, onchange) {
  const control = h(`select#${id}`, { name: id, onchange });
  return [control, h('label.filter', { for: id }, h('span.filter-label', {}, label), control)];
}

function alertRow(alert, onChanged) {
  const { actions, resolveForm } = alertActions(alert, { onChanged });
  const trail = alertTrail(alert);
  const facility = `#/facility/${encodeURIComponent(alert.facility_id)}`;
  return h(`tr.alert-row.sev-${alert.severity}`, {
    dataset: {
      alertId: alert.id, status: alert.status, severity: alert.severity, type: alert.type,
      facility: alert.facility_id,
    },
  },
  h('td', {}, pill(fmt.label(alert.severity), SEVERITY[alert.severity])),
  h('td.alert-cell', {},
    h('strong', {}, fmt.label(alert.type)),
    h('div.message', {}, alert.message),
    trail ? h('div.sub', {}, trail) : null,
    alert.comment ? h('blockquote.comment', {}, alert.comment) : null,
    h('details.evidence-box', {}, h('summary', {}, 'Evidence'), evidenceTable(alert.evidence))),
  h('td', {}, h('a.facility-link', { href: facility }, alert.facility_id),
    alert.borrower_id ? h('div.sub', {}, alert.borrower_id) : null),
  h('td', {}, alert.lot_id || h('span.muted', {}, '—')),
  h('td', {}, pill(fmt.label(alert.status), STATUS[alert.status])),
  h('td.muted.nowrap', { title: fmt.time(alert.raised_at) }, fmt.ago(alert.raised_at)),
  h('td.alert-actions', {}, actions, resolveForm));
}

export function alertsView(container, params) {
  let filters = readFilters(params);
  const filterBar = h('form.filters#alert-filters', { onsubmit: (e) => e.preventDefault() });
  const body = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading alerts…'));
  const shown = h('span.muted#alerts-shown');
  const more = h('button.btn.btn-secondary#load-more', { type: 'button', hidden: true }, 'Load more');
  const footer = h('div.card-foot', {}, shown, more);
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Alerts'),
      h('span.muted', {}, 'every facility, newest first')),
    h('section.card', {}, h('header.card-head.filters-head', {}, filterBar), body, footer));

  let gone = false;
  let items = [];
  let next = null;
  let loads = 0; // loads started; only the newest one paints
  let facilities = [];
  let types = [];

  const change = (name) => (event) => {
    filters = { ...filters, [name]: event.target.value };
    history.replaceState(null, '', addressOf(filters));
    reload();
  };
  const [byStatus, statusField] = select('filter-status', 'Status', change('status'));
  const [bySeverity, severityField] = select('filter-severity', 'Severity', change('severity'));
  const [byType, typeField] = select('filter-type', 'Type', change('type'));
  const [byFacility, facilityField] = select('filter-facility', 'Facility', change('facility_id'));
  replace(filterBar, statusField, severityField, typeField, facilityField,
    h('button.btn.btn-ghost#clear-filters', {
      type: 'button',
      onclick: () => {
        filters = readFilters(new URLSearchParams());
        history.replaceState(null, '', addressOf(filters));
        drawFilters();
        reload();
      },
    }, 'Clear filters'));

  /** The filters' choices (the lists of types and facilities arrive later) and current values. */
  function drawFilters() {
    setOptions(byStatus, STATUSES, filters.status);
    setOptions(bySeverity, SEVERITIES, filters.severity);
    setOptions(byType, [['', 'Any type'], ...types.map((t) => [t, fmt.label(t)])], filters.type);
    setOptions(byFacility, [['', 'All facilities'],
      ...facilities.map((f) => [f.facility_id, `${f.facility_id} · ${f.borrower_name}`])],
    filters.facility_id);
  }

  function paint() {
    const refresh = () => refreshList();
    replace(body, items.length
      ? h('table.table.alerts-table#alerts-table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Severity'), h('th', {}, 'Alert'),
          h('th', {}, 'Facility'), h('th', {}, 'Lot'), h('th', {}, 'Status'), h('th', {}, 'Raised'),
          h('th', {}, ''))),
        h('tbody', {}, items.map((a) => alertRow(a, refresh))))
      : note(filters.status === 'active' && !filters.severity && !filters.type && !filters.facility_id
        ? 'No active alerts.' : 'No alerts match these filters.', 'muted'));
    shown.textContent = items.length
      ? `${items.length} alert${items.length === 1 ? '' : 's'} shown${next !== null ? ' · more below' : ' · all shown'}`
      : '';
    more.hidden = next === null;
    more.disabled = false;
  }

  /** The first `count` alerts for the filters (at least one page), asked 500 at a time. */
  async function fetchFirst(count) {
    const query = apiQuery(filters);
    const out = [];
    let offset = 0;
    while (offset !== null && out.length < count) {
      query.set('limit', String(Math.min(500, count - out.length)));
      query.set('offset', String(offset));
      const page = await api(`/alerts?${query}`);
      out.push(...page.items);
      offset = page.next_offset;
    }
    return { items: out, next: offset };
  }

  async function load(count) {
    const mine = ++loads;
    try {
      const page = await fetchFirst(count);
      if (gone || mine !== loads) return;
      ({ items, next } = page);
      paint();
    } catch (error) {
      if (!gone && mine === loads && error.status !== 401) replace(body, note(error.message, 'error'));
    }
  }

  function reload() {
    replace(body, h('p.loading', {}, 'Loading alerts…'));
    load(PAGE_SIZE);
  }

  /** After an action or a live event: the same number of rows, fresh. */
  function refreshList() {
    if (busy(body)) return; // an officer is typing a comment; refresh when done
    load(Math.max(PAGE_SIZE, items.length));
  }

  more.addEventListener('click', async () => {
    if (next === null) return;
    more.disabled = true;
    const mine = ++loads;
    try {
      const query = apiQuery(filters);
      query.set('limit', String(PAGE_SIZE));
      query.set('offset', String(next));
      const page = await api(`/alerts?${query}`);
      if (gone || mine !== loads) return;
      const have = new Set(items.map((a) => a.id)); // new alerts may have shifted the pages
      items = [...items, ...page.items.filter((a) => !have.has(a.id))];
      next = page.next_offset;
      paint();
    } catch (error) {
      if (!gone && error.status !== 401) replace(shown, error.message);
      more.disabled = false;
    }
  });

  drawFilters();
  reload();
  (async () => {
    const [facilityPage, alertTypes] = await Promise.all([
      api('/facilities?limit=500').catch(() => ({ items: [] })),
      queryValues('/alerts', 'type').catch(() => []),
    ]);
    if (gone) return;
    facilities = facilityPage.items;
    types = alertTypes;
    drawFilters();
  })();

  const onAlert = throttle(refreshList, 1000);
  return {
    onEvent: (name) => { if (name === 'alert') onAlert(); },
    destroy() { gone = true; },
  };
}
