// Where the collateral is (Leaflet, no tile layer: nothing is fetched): geofence polygons, the last
// position of each lot's tracker (vehicles) and a faint lat/lon grid for scale.

const STYLE = {
  fence: { color: '#1d4ed8', weight: 2, dashArray: '6 4', fillColor: '#3b82f6', fillOpacity: 0.08 },
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

export function collateralMap(element) {
  const L = window.L;
  const map = L.map(element, {
    attributionControl: false, scrollWheelZoom: false, zoomSnap: 0.25, minZoom: 2, maxZoom: 14,
  });
  map.setView([31.2, 121.45], 8); // replaced by the collateral's bounds as soon as there is any
  const grid = L.layerGroup().addTo(map);
  const shapes = L.featureGroup().addTo(map);
  let fitted = false;

  function drawGrid(bounds) {
    grid.clearLayers();
    const b = bounds.pad(1.5);
    const step = gridStep(Math.max(b.getNorth() - b.getSouth(), b.getEast() - b.getWest()));
    for (let lat = Math.floor(b.getSouth() / step) * step; lat <= b.getNorth(); lat += step) {
      L.polyline([[lat, b.getWest()], [lat, b.getEast()]], STYLE.grid).addTo(grid);
    }
    for (let lon = Math.floor(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
      L.polyline([[b.getSouth(), lon], [b.getNorth(), lon]], STYLE.grid).addTo(grid);
    }
  }

  /** lots: LotPublic rows; alertedLots: ids of lots with an active alert. Returns how many shapes. */
  function update(lots, alertedLots) {
    shapes.clearLayers();
    for (const lot of lots) {
      const name = lot.vehicle ? `${lot.lot_id} · vehicle ${lot.vehicle}` : lot.lot_id;
      if (Array.isArray(lot.geofence) && lot.geofence.length >= 3) {
        L.polygon(lot.geofence, STYLE.fence).bindTooltip(text(`Geofence of ${name}`)).addTo(shapes);
      }
      const at = lot.location;
      if (at && Number.isFinite(at.lat) && Number.isFinite(at.lon)) {
        const style = lot.inside_geofence === false ? STYLE.outside
          : alertedLots.has(lot.lot_id) ? STYLE.alert : STYLE.inside;
        const where = lot.inside_geofence === false ? 'OUTSIDE its geofence'
          : lot.inside_geofence ? 'inside its geofence' : 'no geofence';
        L.circleMarker([at.lat, at.lon], style)
          .bindTooltip(text(`${name} (${lot.commodity}) — ${where}`), { direction: 'top' })
          .addTo(shapes);
      }
    }
    const count = shapes.getLayers().length;
    if (count) {
      const bounds = shapes.getBounds();
      drawGrid(bounds);
      if (!fitted) map.fitBounds(bounds, { padding: [24, 24], maxZoom: 12 });
      fitted = true;
    }
    return count;
  }

  return {
    update,
    resize: () => map.invalidateSize(),
    destroy: () => map.remove(),
  };
}
