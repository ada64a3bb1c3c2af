// Portfolio: every facility with limit, drawn, available, LTV against its lines and open alerts,
// riskiest first (the API's order), plus the newest active alerts (the Alerts page has them all).
// Refreshed on live events.
import { api } from './api.js';
import { fmt, h, ltvBar, ltvPill, note, pill, replace, throttle } from './dom.js';

const SEVERITY = { critical: 'danger', warning: 'warn', info: 'neutral' };

function kpi(label, value, detail, kind) {
  return h(`div.kpi${kind ? `.kpi-${kind}` : ''}`, {},
    h('span.kpi-label', {}, label), h('span.kpi-value', {}, value),
    detail ? h('span.kpi-detail', {}, detail) : null);
}

function summary(facilities) {
  const sum = (key) => facilities.reduce((total, f) => total + (f[key] || 0), 0);
  const currency = facilities[0]?.currency || '';
  const atRisk = facilities.filter((f) => f.ltv_status === 'warning' || f.ltv_status === 'liquidation');
  const critical = sum('critical_alerts');
  return h('div.kpis', {},
    kpi('Facilities', facilities.length, `${fmt.compact(sum('line'))} ${currency} in lines`),
    kpi('Dynamic limit', `${fmt.compact(sum('limit'))}`, currency),
    kpi('Drawn', fmt.compact(sum('outstanding')), currency),
    kpi('Available', fmt.compact(sum('available')), currency, sum('available') < 0 ? 'danger' : null),
    kpi('Beyond LTV lines', atRisk.length, atRisk.length ? 'top-up or liquidation' : 'all within lines',
      atRisk.length ? 'warn' : 'ok'),
    kpi('Open alerts', sum('open_alerts'), `${critical} critical`, critical ? 'danger' : null));
}

function facilityRow(f) {
  const open = () => { location.hash = `#/facility/${encodeURIComponent(f.facility_id)}`; };
  const alerts = f.open_alerts
    ? h('span.alert-count', {}, pill(String(f.open_alerts), f.critical_alerts ? 'danger' : 'warn'),
      f.critical_alerts ? h('span.muted', {}, ` ${f.critical_alerts} critical`) : null)
    : h('span.muted', {}, 'none');
  return h('tr.clickable', {
    tabindex: 0, dataset: { facility: f.facility_id }, onclick: open,
    onkeydown: (e) => { if (e.key === 'Enter') open(); },
  },
  h('td', {}, h('a', { href: `#/facility/${encodeURIComponent(f.facility_id)}` }, f.facility_id),
    h('div.sub', {}, f.borrower_name)),
  h('td.num', {}, fmt.money(f.line)),
  h('td.num', {}, fmt.money(f.limit)),
  h('td.num', {}, fmt.money(f.outstanding)),
  h(`td.num${f.available < 0 ? '.negative' : ''}`, {}, fmt.money(f.available)),
  h('td', {}, ltvBar(f.ltv, f.warning_ltv, f.liquidation_ltv)),
  h('td', {}, ltvPill(f.ltv_status)),
  h('td', {}, alerts),
  h('td.muted', {}, fmt.ago(f.time)));
}

function facilityTable(facilities) {
  if (!facilities.length) return note('No facilities yet: load a portfolio (`pledgewatch portfolio load`).');
  const currency = facilities[0].currency;
  return h('table.table#portfolio-table', {},
    h('thead', {}, h('tr', {},
      h('th', {}, 'Facility'), h('th.num', {}, `Line (${currency})`), h('th.num', {}, 'Limit'),
      h('th.num', {}, 'Drawn'), h('th.num', {}, 'Available'), h('th', {}, 'LTV vs lines'),
      h('th', {}, 'Status'), h('th', {}, 'Open alerts'), h('th', {}, 'Updated'))),
    h('tbody', {}, facilities.map(facilityRow)));
}

function alertList(alerts) {
  if (!alerts.length) return note('No active alerts.', 'ok');
  return h('ul.feed', {}, alerts.map((a) => h('li.feed-item', {},
    pill(fmt.label(a.severity), SEVERITY[a.severity]),
    h('div', {},
      h('a', { href: `#/facility/${encodeURIComponent(a.facility_id)}` },
        `${fmt.label(a.type)} · ${a.facility_id}`),
      h('div.sub', {}, a.message)),
    h('span.muted.nowrap', {}, fmt.ago(a.raised_at)))));
}

export function portfolioView(container) {
  const kpis = h('div');
  const table = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading facilities…'));
  const feed = h('div.card-body', {}, h('p.loading', {}, 'Loading alerts…'));
  const updated = h('span.muted');
  const shownAlerts = h('span.muted');
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Portfolio'), updated),
    kpis,
    h('section.card', {}, h('header.card-head', {}, h('h2', {}, 'Facilities by risk'),
      h('span.muted', {}, 'critical alerts first, then LTV against the liquidation line')), table),
    h('section.card', {}, h('header.card-head', {}, h('h2', {}, 'Active alerts'), shownAlerts,
      h('a.card-link#all-alerts', { href: '#/alerts' }, 'All alerts, with filters →')), feed));

  let gone = false;
  async function load() {
    try {
      const [facilities, alerts] = await Promise.all([
        api('/facilities?limit=500'), api('/alerts?status=active&limit=8')]);
      if (gone) return;
      replace(kpis, summary(facilities.items));
      replace(table, facilityTable(facilities.items));
      replace(feed, alertList(alerts.items));
      const open = facilities.items.reduce((total, f) => total + (f.open_alerts || 0), 0);
      shownAlerts.textContent = alerts.items.length < open
        ? `newest ${alerts.items.length} of ${open}` : '';
      updated.textContent = `updated ${fmt.time(new Date())}`;
    } catch (error) {
      if (!gone && error.status !== 401) replace(table, note(error.message, 'error'));
    }
  }
  const refresh = throttle(load, 1000);
  load();
  return {
    onEvent: () => refresh(),
    destroy() { gone = true; },
  };
}
