// The portfolio on one map: every lot's site geofence and every vehicle's last position, coloured
// as on the facility page (inside its geofence, under an active alert, outside its geofence), over
// the offline base map of country and province outlines. A click opens the lot's facility; the
// vehicles are listed under the map. Live events refresh it.
import { allPages, has } from './api.js';
import { collateralMap, markerState } from './collateralmap.js';
import { fmt, h, note, pill, replace, throttle } from './dom.js';

const MARKER = { inside: ['ok', 'inside geofence'], alert: ['warn', 'active alert'], outside: ['danger', 'OUTSIDE geofence'] };

function legend() {
  const item = (kind, text) => h('span.legend-item', {}, h(`span.swatch.swatch-${kind}`), text);
  return h('div.legend', {},
    item('inside', 'tracker inside its geofence'), item('alert', 'lot with an active alert'),
    item('outside', 'outside its geofence'), item('fence', 'site geofence'),
    item('border', 'country / province border'));
}

function vehicleTable(lots, alertedLots) {
  const vehicles = lots.filter((l) => l.vehicle || l.location);
  if (!vehicles.length) return note('No vehicles or trackers report a position yet.');
  return h('table.table.compact#vehicle-table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'Vehicle / tracker'), h('th', {}, 'Lot'), h('th', {}, 'Facility'),
      h('th', {}, 'Last position'), h('th', {}, 'Last fix'), h('th', {}, 'State'))),
    h('tbody', {}, vehicles.map((lot) => {
      const at = lot.location;
      const [kind, text] = at ? MARKER[markerState(lot, alertedLots)] : ['neutral', 'no position'];
      return h('tr', { dataset: { lot: lot.lot_id, vehicle: lot.vehicle || '' } },
        h('td', {}, h('strong', {}, lot.vehicle || at?.device_id || '—')),
        h('td', {}, lot.lot_id, h('div.sub', {}, lot.commodity)),
        h('td', {}, h('a', { href: `#/facility/${encodeURIComponent(lot.facility_id)}` }, lot.facility_id)),
        h('td.num', {}, at ? `${Number(at.lat).toFixed(4)}, ${Number(at.lon).toFixed(4)}` : '—'),
        h('td.muted', { title: at ? fmt.time(at.time) : '' }, at ? fmt.ago(at.time) : '—'),
        h('td', {}, pill(text, kind)));
    })));
}

export function mapView(container) {
  const box = h('div.map.map-large#portfolio-map');
  const mapNote = h('div.map-note');
  const summary = h('span.muted#map-summary');
  const vehicles = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading vehicles…'));
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Map'), summary),
    h('section.card', {},
      h('header.card-head', {}, h('h2', {}, 'Sites and vehicles'), legend()),
      h('div.card-body.map-body', {}, box, mapNote)),
    h('section.card', {}, h('header.card-head', {}, h('h2', {}, 'Vehicles and trackers'),
      h('span.muted', {}, 'last reported position of each lot\'s tracker')), vehicles));

  const map = collateralMap(box, {
    portfolio: true,
    onSelect: (lot) => { location.hash = `#/facility/${encodeURIComponent(lot.facility_id)}`; },
  });
  let gone = false;

  async function load() {
    try {
      if (!(await has('/lots'))) {
        replace(mapNote, 'Map not available: this server has no /api/v1/lots.');
        replace(vehicles, note('Not available from this server.'));
        return;
      }
      const [lots, alerts] = await Promise.all([allPages('/lots'), allPages('/alerts?status=active')]);
      if (gone) return;
      const alertedLots = new Set(alerts.filter((a) => a.lot_id).map((a) => a.lot_id));
      const shapes = map.update(lots, alertedLots);
      const fenced = lots.filter((l) => Array.isArray(l.geofence) && l.geofence.length >= 3).length;
      const positioned = lots.filter((l) => l.location).length;
      const outside = lots.filter((l) => l.inside_geofence === false).length;
      const unmapped = lots.filter((l) => !l.location && !l.geofence).length;
      replace(summary, `${lots.length} lots · ${fenced} geofenced sites · ${positioned} position${positioned === 1 ? '' : 's'}`
        + `${outside ? ` · ${outside} outside their geofence` : ''}`);
      replace(mapNote, !shapes ? 'No positions or geofences yet: lots in warehouse bays carry no coordinates.'
        : `${lots.length - unmapped} of ${lots.length} lots mapped${unmapped ? ` · ${unmapped} in warehouse bays without coordinates` : ''}`);
      mapNote.classList.toggle('map-note-empty', !shapes);
      replace(vehicles, vehicleTable(lots, alertedLots));
    } catch (error) {
      if (!gone && error.status !== 401) replace(mapNote, error.message);
    }
  }

  // Every lot of the portfolio is asked again: at most every 5 s however many events arrive.
  const refresh = throttle(load, 5000);
  load();
  return {
    onEvent: () => refresh(),
    destroy() {
      gone = true;
      map.destroy();
    },
  };
}
