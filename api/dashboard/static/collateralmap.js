// Where the collateral is (Leaflet, no tile layer: nothing is fetched): geofence polygons and the
// last position of each lot's tracker (vehicles), over the offline base map (basemap.js: land,
// country borders, China's provinces). Where the base map cannot be loaded, a faint lat/lon grid
// gives the scale instead. One facility's lots (the facility page) or the whole portfolio's (the
// Map page, with each lot's facility in its tooltip and a click opening that facility).
import { addBaseMap } from './basemap.js';

const STYLE = {
  fence: {
    color: '#1d4ed8', weight: 2, dashArray: '6 4', fillColor: '#3b82f6', fillOpacity: 0.08,
    className: 'pw-geofence',
  },
  inside: { radius: 8, color: '#ffffff', weight: 2, fillColor: '#059669', fillOpacity: 1 },
  outside: { radius: 9, color: '#ffffff', weight: 2, fillColor: '#dc2626', fillOpacity: 1 },
  alert: { radius: 9, color: '#ffffff', weight: 2, fillColor: '#d97706', fillOpacity: 1 },
  grid: { color: '#cbd5e1', weight: 1, opacity: 0.6, interactive: false },
};

// Leaflet puts a string tooltip in as HTML: hand it a text node instead.
const text = (value) => document.createTextNode(value);

function gridStep(span) {
  for (const step of [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]) if (span / step <= 8) return step;
  return 20;
}

/** Which colour a lot's tracker gets: outside its geofence, under an active alert, or fine. */
export function markerState(lot, alertedLots) {
  if (lot.inside_geofence === false) return 'outside';
  return alertedLots.has(lot.lot_id) ? 'alert' : 'inside';
}

/**
 * element: the map's box. options.portfolio: lots of many facilities (tooltips name the
 * facility); options.onSelect(lot): called when a lot's shape is clicked.
 */
export function collateralMap(element, { portfolio = false, onSelect = null } = {}) {
  const L = window.L;
  const map = L.map(element, {
    attributionControl: false, scrollWheelZoom: portfolio, zoomSnap: 0.25, minZoom: 2, maxZoom: 14,
    worldCopyJump: true,
  });
  map.setView([31.2, 121.45], 8); // replaced by the collateral's bounds as soon as there is any
  const grid = L.layerGroup().addTo(map);
  const shapes = L.featureGroup().addTo(map);
  let fitted = false;
  let baseMap = false; // the outlines are drawn: no grid needed
  let lastBounds = null;

  function drawGrid(bounds) {
    grid.clearLayers();
    if (baseMap || !bounds) return;
    const b = bounds.pad(1.5);
    const step = gridStep(Math.max(b.getNorth() - b.getSouth(), b.getEast() - b.getWest()));
    for (let lat = Math.floor(b.getSouth() / step) * step; lat <= b.getNorth(); lat += step) {
      L.polyline([[lat, b.getWest()], [lat, b.getEast()]], STYLE.grid).addTo(grid);
    }
    for (let lon = Math.floor(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
      L.polyline([[b.getSouth(), lon], [b.getNorth(), lon]], STYLE.grid).addTo(grid);
    }
  }

  const ready = addBaseMap(map).then((drawn) => {
    baseMap = drawn > 0;
    drawGrid(lastBounds);
    element.dataset.basemap = baseMap ? 'drawn' : 'unavailable';
    return drawn;
  });

  function name(lot) {
    const what = lot.vehicle ? `${lot.lot_id} · vehicle ${lot.vehicle}` : lot.lot_id;
    return portfolio ? `${what} · ${lot.facility_id}` : what;
  }

  function clickable(layer, lot) {
    if (onSelect) layer.on('click', () => onSelect(lot));
    return layer;
  }

  /** lots: LotPublic rows; alertedLots: ids of lots with an active alert. Returns how many shapes. */
  function update(lots, alertedLots) {
    shapes.clearLayers();
    for (const lot of lots) {
      if (Array.isArray(lot.geofence) && lot.geofence.length >= 3) {
        clickable(L.polygon(lot.geofence, STYLE.fence), lot)
          .bindTooltip(text(`Geofence of ${name(lot)}${lot.site ? ` (${lot.site})` : ''}`))
          .addTo(shapes);
      }
      const at = lot.location;
      if (at && Number.isFinite(at.lat) && Number.isFinite(at.lon)) {
        const state = markerState(lot, alertedLots);
        const where = lot.inside_geofence === false ? 'OUTSIDE its geofence'
          : lot.inside_geofence ? 'inside its geofence' : 'no geofence';
        const alerted = alertedLots.has(lot.lot_id) ? ' · active alert' : '';
        const kind = lot.vehicle ? 'pw-vehicle' : 'pw-tracker';
        clickable(L.circleMarker([at.lat, at.lon], {
          ...STYLE[state], className: `${kind} pw-marker-${state}`,
        }), lot)
          .bindTooltip(text(`${name(lot)} (${lot.commodity}) — ${where}${alerted}`), { direction: 'top' })
          .addTo(shapes);
      }
    }
    const count = shapes.getLayers().length;
    if (count) {
      lastBounds = shapes.getBounds();
      drawGrid(lastBounds);
      if (!fitted) map.fitBounds(lastBounds, { padding: [24, 24], maxZoom: 12 });
      fitted = true;
    }
    return count;
  }

  return {
    update,
    ready,
    resize: () => map.invalidateSize(),
    destroy: () => map.remove(),
  };
}
