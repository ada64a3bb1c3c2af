// The limit history of one facility (Chart.js, time axis from chartjs-adapter-date-fns): the
// limit and the drawn amount on the money axis, verified and declared quantity on their own axis,
// and the price of each commodity behind it on a third.

const COLORS = {
  limit: '#1d4ed8', drawn: '#64748b', verified: '#059669', declared: '#6ee7b7',
  prices: ['#d97706', '#9333ea', '#db2777', '#0891b2'],
};
const MAX_POINTS = 2000;

function line(label, axis, color, extra = {}) {
  return {
    label, yAxisID: axis, data: [], borderColor: color, backgroundColor: color,
    borderWidth: 2, pointRadius: 0, pointHitRadius: 6, stepped: true, ...extra,
  };
}

export function limitChart(canvas, currency) {
  const byId = new Map(); // snapshot id -> point
  const chart = new window.Chart(canvas, {
    type: 'line',
    data: {
      datasets: [
        line(`Limit (${currency})`, 'money', COLORS.limit,
          { fill: 'origin', backgroundColor: 'rgba(29, 78, 216, 0.08)' }),
        line(`Drawn (${currency})`, 'money', COLORS.drawn, { borderDash: [6, 4], borderWidth: 1.5 }),
        line('Verified quantity', 'qty', COLORS.verified),
        line('Declared quantity', 'qty', COLORS.declared, { borderDash: [3, 3], borderWidth: 1.5 }),
      ],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { position: 'bottom', labels: { boxWidth: 12, boxHeight: 2, usePointStyle: false } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.parsed.y.toLocaleString('en-US', { maximumFractionDigits: 2 })}` } },
      },
      scales: {
        x: {
          type: 'time',
          time: {
            tooltipFormat: 'dd MMM yyyy HH:mm:ss',
            displayFormats: { second: 'HH:mm:ss', minute: 'HH:mm', hour: 'dd MMM HH:mm', day: 'dd MMM' },
          },
          ticks: { maxTicksLimit: 8 },
          grid: { color: '#eef1f5' } },
        money: { position: 'left', beginAtZero: true, title: { display: true, text: currency },
          grid: { color: '#eef1f5' }, ticks: { callback: compactTick } },
        qty: { position: 'right', beginAtZero: true, title: { display: true, text: 'units' },
          grid: { drawOnChartArea: false }, ticks: { callback: compactTick } },
        price: { position: 'right', title: { display: true, text: `price (${currency})` },
          grid: { drawOnChartArea: false }, beginAtZero: true },
      },
    },
  });

  function priceDataset(commodity) {
    let dataset = chart.data.datasets.find((d) => d.commodity === commodity);
    if (!dataset) {
      const n = chart.data.datasets.filter((d) => d.commodity).length;
      dataset = line(`Price: ${commodity}`, 'price', COLORS.prices[n % COLORS.prices.length],
        { borderWidth: 1.5 });
      dataset.commodity = commodity;
      chart.data.datasets.push(dataset);
    }
    return dataset;
  }

  /** Adds snapshots (any order, duplicates ignored) and redraws. */
  function add(points) {
    let changed = false;
    for (const p of points) {
      if (!byId.has(p.id)) {
        byId.set(p.id, p);
        changed = true;
      }
    }
    if (!changed) return;
    const sorted = [...byId.values()].sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id - b.id));
    const kept = sorted.slice(-MAX_POINTS);
    if (kept.length < sorted.length) for (const p of sorted.slice(0, -MAX_POINTS)) byId.delete(p.id);
    const xy = (key) => kept.map((p) => ({ x: Date.parse(p.time), y: p[key] }));
    const [limit, drawn, verified, declared] = chart.data.datasets;
    limit.data = xy('limit');
    drawn.data = xy('outstanding');
    verified.data = xy('verified_quantity');
    declared.data = xy('declared_quantity');
    const commodities = new Set(kept.flatMap((p) => Object.keys(p.prices || {})));
    for (const commodity of commodities) {
      priceDataset(commodity).data = kept
        .filter((p) => p.prices && p.prices[commodity] != null)
        .map((p) => ({ x: Date.parse(p.time), y: p.prices[commodity] }));
    }
    chart.update('none');
  }

  return {
    add,
    get size() { return byId.size; },
    get lastId() { return Math.max(0, ...byId.keys()); },
    destroy: () => chart.destroy(),
  };
}

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
function compactTick(value) { return compact.format(value); }
