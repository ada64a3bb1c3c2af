// One facility: limit and LTV, the limit history with what moved it, the lots on a map, sensor
// health, the alert timeline and release approvals. Live events refresh what they touch.
import { api, optional } from './api.js';
import { busy, renderAlerts } from './alerts.js';
import { collateralMap } from './collateralmap.js';
import { fmt, h, ltvBar, ltvPill, note, pill, replace, throttle } from './dom.js';
import { limitChart } from './limitchart.js';
import { gradeBadge } from './ratingspage.js';

const RELEASE_KIND = { requested: 'warn', approved: 'ok', executed: 'neutral', rejected: 'danger' };
const POLL_MS = 10000;

function card(title, body, extra) {
  return h('section.card', {}, h('header.card-head', {}, h('h2', {}, title), extra), body);
}

function kpi(label, value, detail, kind) {
  return h(`div.kpi${kind ? `.kpi-${kind}` : ''}`, {},
    h('span.kpi-label', {}, label), h('span.kpi-value', {}, value),
    detail ? h('span.kpi-detail', {}, detail) : null);
}

function kpis(f) {
  return h('div.kpis', {},
    kpi('Credit line', fmt.compact(f.line), f.currency),
    kpi('Dynamic limit', fmt.compact(f.limit), f.limit < f.line ? 'bound by the borrowing base' : 'bound by the line'),
    kpi('Drawn', fmt.compact(f.outstanding), f.currency),
    kpi('Available', fmt.compact(f.available), f.currency, f.available < 0 ? 'danger' : null),
    kpi('Collateral value', fmt.compact(f.collateral_value),
      `${f.currency} · ${fmt.compact(f.trusted_collateral_value)} trust-weighted (LTV basis)`),
    h(`div.kpi.kpi-ltv.kpi-${f.ltv_status === 'ok' ? 'ok' : f.ltv_status === 'warning' ? 'warn' : f.ltv_status === 'liquidation' ? 'danger' : 'none'}`, {},
      h('span.kpi-label', {}, 'LTV against its lines'),
      ltvBar(f.ltv, f.warning_ltv, f.liquidation_ltv),
      h('span.kpi-detail', {}, `warning ${fmt.pct(f.warning_ltv, 0)} · liquidation ${fmt.pct(f.liquidation_ltv, 0)}`)));
}

function trustPill(trust) {
  if (trust == null) return pill('—', 'neutral');
  return pill(fmt.pct(trust, 0), trust >= 0.9 ? 'ok' : trust >= 0.5 ? 'warn' : 'danger');
}

function lotsTable(lots, alertedLots) {
  if (!lots.length) return note('No pledged lots.');
  return h('table.table#lots-table', {},
    h('thead', {}, h('tr', {},
      h('th', {}, 'Lot'), h('th', {}, 'Where'), h('th.num', {}, 'Declared'), h('th.num', {}, 'Verified'),
      h('th', {}, 'Trust'), h('th.num', {}, 'Value'), h('th', {}, 'Sensors'), h('th', {}, 'Geofence'))),
    h('tbody', {}, lots.map((lot) => {
      const p = lot.pledge || {};
      const short = p.verified != null && p.declared && p.verified < p.declared * 0.98;
      const sensors = lot.sensors || [];
      const online = sensors.filter((s) => s.online).length;
      const reasons = Object.entries(p.trust_factors || {}).map(([k, v]) => `${fmt.label(k)} ${fmt.pct(v, 0)}`);
      return h('tr', { dataset: { lot: lot.lot_id } },
        h('td', {}, h('strong', {}, lot.lot_id), alertedLots.has(lot.lot_id) ? [' ', pill('alert', 'danger')] : null,
          h('div.sub', {}, `${lot.commodity} · ${lot.registration_no || ''}`)),
        h('td', {}, lot.vehicle ? `vehicle ${lot.vehicle}` : (lot.site || '—')),
        h('td.num', {}, fmt.qty(p.declared ?? lot.declared_quantity)),
        h(`td.num${short ? '.negative' : ''}`, {}, fmt.qty(p.verified)),
        h('td', { title: reasons.join(', ') || 'all sensors agree' }, trustPill(p.trust)),
        h('td.num', {}, fmt.money(p.value)),
        h('td', {}, sensors.length ? pill(`${online}/${sensors.length} online`, online === sensors.length ? 'ok' : 'danger') : h('span.muted', {}, 'none')),
        h('td', {}, lot.inside_geofence == null ? h('span.muted', {}, lot.geofence ? 'no position' : '—')
          : lot.inside_geofence ? pill('inside', 'ok') : pill('outside', 'danger')));
    })));
}

const HEALTH_METRICS = [
  ['power_v', 'Power', (v) => `${fmt.qty(v)} V`],
  ['tamper', 'Tamper', (v) => (v ? 'TRIGGERED' : 'ok')],
  ['camera_ok', 'Camera', (v) => (v ? 'ok' : 'FAULT')],
  ['door_open', 'Door', (v) => (v ? 'open' : 'closed')],
  ['temp_c', 'Temp', (v) => `${fmt.qty(v)} °C`],
];

function sensorTable(devices) {
  if (!devices.length) return note('No sensors bound to these lots.');
  return h('table.table.compact#sensor-table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Lot'), h('th', {}, 'Status'),
      h('th', {}, 'Last seen'), HEALTH_METRICS.map(([, label]) => h('th', {}, label)))),
    h('tbody', {}, devices.map((d) => {
      const readings = d.readings || {};
      return h('tr', {},
        h('td', {}, h('strong', {}, d.device_id), h('div.sub', {}, d.kind)),
        h('td', {}, d.lot_id || '—'),
        h('td', {}, d.online == null ? pill('unknown', 'neutral') : d.online ? pill('online', 'ok') : pill('offline', 'danger')),
        h('td.muted', { title: fmt.time(d.last_seen) }, fmt.ago(d.last_seen)),
        HEALTH_METRICS.map(([metric, , show]) => {
          const r = readings[metric];
          const bad = r && ((metric === 'tamper' && r.value) || (metric === 'camera_ok' && !r.value));
          return h(`td${bad ? '.negative' : ''}`, {}, r ? show(r.value) : '—');
        }));
    })));
}

function releaseList(releases, onChanged) {
  if (!releases.length) return note('No release orders for this facility.');
  return h('table.table#release-table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'Order'), h('th', {}, 'Lot'), h('th.num', {}, 'Quantity'),
      h('th', {}, 'Status'), h('th', {}, 'Requested'), h('th', {}, ''))),
    h('tbody', {}, releases.map((r) => {
      const error = h('span.form-error');
      const act = (verb) => async (event) => {
        event.target.disabled = true;
        try {
          await api(`/releases/${encodeURIComponent(r.release_id)}/${verb}`, { method: 'POST' });
          onChanged();
        } catch (e) {
          error.textContent = e.message;
          event.target.disabled = false;
        }
      };
      const open = r.status === 'requested' || r.status === 'approved';
      return h('tr', { dataset: { release: r.release_id } },
        h('td', {}, r.release_id), h('td', {}, r.lot_id), h('td.num', {}, fmt.qty(r.quantity)),
        h('td', {}, pill(fmt.label(r.status), RELEASE_KIND[r.status])),
        h('td.muted', { title: fmt.time(r.requested_at) }, fmt.ago(r.requested_at)),
        h('td.actions', {},
          r.status === 'requested' ? h('button.btn.btn-secondary', { type: 'button', onclick: act('approve') }, 'Approve') : null,
          open ? h('button.btn.btn-ghost', { type: 'button', onclick: act('reject') }, 'Reject') : null,
          error));
    })));
}

export function facilityView(container, facilityId) {
  const id = encodeURIComponent(facilityId);
  const title = h('h1', {}, facilityId);
  const subtitle = h('span.muted');
  const status = h('span');
  const grade = h('span.facility-grade#facility-grade'); // the borrower's credit grade, a link to its rating
  const summary = h('div', {}, h('p.loading', {}, 'Loading…'));
  const canvas = h('canvas#limit-chart', { 'aria-label': 'limit history' });
  const chartNote = h('div');
  const mapBox = h('div.map#collateral-map');
  const mapNote = h('div.map-note');
  const lotsBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading lots…'));
  const sensorsBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading sensors…'));
  const alertList = h('ol.timeline#alert-timeline');
  const releasesBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading release orders…'));
  const why = h('div.card-body');
  const showResolved = h('input', { type: 'checkbox', id: 'show-resolved' });

  replace(container,
    h('div.page-head', {}, h('a.back', { href: '#/' }, '← Portfolio'), title, status, grade, subtitle),
    summary,
    h('div.grid-2', {},
      card('Limit history', h('div.card-body', {}, h('div.chart-box', {}, canvas), chartNote),
        h('span.muted', {}, 'limit, drawn, verified quantity and the price behind them')),
      card('Collateral map', h('div.card-body.map-body', {}, mapBox, mapNote),
        h('span.muted', {}, 'geofences and trackers'))),
    card('Alerts', h('div.card-body', {}, alertList),
      h('label.toggle', {}, showResolved, ' show resolved')),
    card('Pledged lots', lotsBox, h('span.muted', {}, 'declared vs verified, trust and value (latest snapshot)')),
    h('div.grid-2', {},
      card('Sensor health', sensorsBox),
      card('Release orders', releasesBox, h('span.muted', {}, 'goods may leave only against an approved order'))),
    card('Why this limit', why));

  let gone = false;
  let facility = null;
  let chart = null;
  let map = null;
  let seenAlerts = null;
  let alerts = [];
  let lots = [];
  let explainedId = null;
  const alertedLots = () => new Set(alerts.filter((a) => a.status !== 'resolved' && a.lot_id).map((a) => a.lot_id));
  const guard = (fn) => async () => {
    if (gone) return;
    try {
      await fn();
    } catch (error) {
      if (!gone && error.status !== 401) console.warn(`facility ${facilityId}:`, error.message);
    }
  };

  const loadSummary = guard(async () => {
    try {
      facility = await api(`/facilities/${id}`);
    } catch (error) {
      if (error.status === 404) replace(summary, note(`No facility ${facilityId}.`, 'error'));
      throw error;
    }
    if (gone) return;
    replace(subtitle, `${facility.borrower_id} · ${facility.currency} · updated ${fmt.ago(facility.time)}`);
    replace(status, ltvPill(facility.ltv_status));
    replace(summary, kpis(facility));
    if (!chart) chart = limitChart(canvas, facility.currency);
    if (facility.snapshot_id && facility.snapshot_id !== explainedId) loadWhy(facility.snapshot_id);
    if (!grade.dataset.borrower) loadGrade(facility.borrower_id);
  });

  async function loadGrade(borrowerId) {
    grade.dataset.borrower = borrowerId;
    try {
      const rating = await api(`/borrowers/${encodeURIComponent(borrowerId)}/rating`);
      if (gone || !rating.current) return;
      grade.dataset.grade = rating.current.grade;
      replace(grade, 'Grade', gradeBadge(rating.current.grade, borrowerId, { id: 'facility-grade-link' }));
    } catch (error) { // not rated, or a server without ratings: no badge
      if (!gone && error.status !== 401 && error.status !== 404) console.warn(`rating of ${borrowerId}:`, error.message);
    }
  }

  const loadHistory = guard(async () => {
    if (!chart) await loadSummary();
    if (!chart) return;
    const page = await api(`/facilities/${id}/limits?limit=${chart.size ? 50 : 500}`);
    if (gone) return;
    chart.add(page.items);
    replace(chartNote, chart.size ? null : note('No limit computed yet: waiting for the first snapshot.'));
  });

  const loadWhy = throttle(guard(async () => {
    const snapshotId = facility.snapshot_id;
    const explained = await api(`/facilities/${id}/limits/${snapshotId}`);
    if (gone) return;
    explainedId = snapshotId;
    replace(why,
      explained.changes.length ? h('div.changes', {}, h('strong', {}, 'Last move: '), explained.changes.join('; ')) : null,
      h('pre.explain', {}, explained.explanation));
  }), 1000);

  let alertLoads = 0; // loads started; only the newest one paints
  const loadAlerts = guard(async () => {
    if (busy(alertList)) return; // an officer is typing a comment; refresh when done
    const mine = ++alertLoads;
    const page = await api(`/alerts?facility_id=${id}&limit=200`);
    // A live refresh started before an acknowledge can answer after the refresh that follows
    // it: painting that older answer last showed the alert as open again.
    if (gone || mine !== alertLoads) return;
    alerts = page.items;
    seenAlerts = renderAlerts(alertList, alerts, {
      seen: seenAlerts, showResolved: showResolved.checked, onChanged: () => { loadAlerts(); loadSummary(); },
    });
  });

  const drawLots = () => {
    replace(lotsBox, lotsTable(lots, alertedLots()));
    if (!map) map = collateralMap(mapBox);
    const shapes = map.update(lots, alertedLots());
    const mapped = lots.filter((l) => l.location || l.geofence).length;
    const unmapped = lots.length - mapped;
    replace(mapNote, !shapes ? 'No positions or geofences: these lots sit in warehouse bays without GPS trackers.'
      : `${mapped} of ${lots.length} lots mapped${unmapped ? ` · ${unmapped} in warehouse bays without GPS` : ''}`);
    mapNote.classList.toggle('map-note-empty', !shapes);
  };

  const loadLots = guard(async () => {
    const page = await optional(`/lots?facility_id=${id}&limit=500`);
    if (gone) return;
    if (page === null) {
      replace(lotsBox, note('Lot status is not available from this server (no /api/v1/lots).'));
      replace(mapNote, 'Map not available: this server has no /api/v1/lots.');
      return;
    }
    lots = page.items;
    drawLots();
  });

  const loadSensors = guard(async () => {
    const latest = await optional(`/telemetry/latest?facility_id=${id}&limit=500`);
    if (gone) return;
    if (latest !== null) {
      replace(sensorsBox, sensorTable(latest.items));
      return;
    }
    const devices = await optional(`/devices?facility_id=${id}&limit=500`);
    if (gone) return;
    replace(sensorsBox, devices === null
      ? note('Sensor health is not available from this server (no /api/v1/devices).')
      : sensorTable(devices.items));
  });

  const loadReleases = guard(async () => {
    const page = await optional(`/releases?facility_id=${id}&limit=100`);
    if (gone) return;
    replace(releasesBox, page === null
      ? note('Release approvals are not available from this server (no /api/v1/releases).')
      : releaseList(page.items, () => { loadReleases(); loadLots(); }));
  });

  showResolved.addEventListener('change', () => { seenAlerts = null; loadAlerts(); });

  const onLimit = throttle(() => { loadSummary(); loadHistory(); loadLots(); }, 1000);
  const onAlert = throttle(async () => { await loadAlerts(); loadSummary(); if (lots.length) drawLots(); }, 300);
  const poll = setInterval(() => { loadSensors(); loadReleases(); }, POLL_MS);

  (async () => {
    await loadSummary();
    await Promise.all([loadHistory(), loadAlerts(), loadLots(), loadSensors(), loadReleases()]);
    if (lots.length) drawLots();
  })();

  return {
    onEvent(name, data) {
      if (data.facility_id !== facilityId) return;
      if (name === 'limit') onLimit();
      else if (name === 'alert') onAlert();
    },
    destroy() {
      gone = true;
      clearInterval(poll);
      chart?.destroy();
      map?.destroy();
    },
  };
}
