// Reconciliation (T+0): the bank's core-ledger statements imported (period, lines, matched, breaks
// by kind), the breaks of the import chosen (kind, facility, reference, detail, bank line, alert),
// an upload form for a statement (CSV or camt.053 XML, sent as text/csv or application/xml) that
// shows the result or the lines the server refused, and goods three ways per lot (pledged,
// sensor-verified, the warehouse operator's stock ledger; differences past 2 % flagged), filtered
// by facility. #/reconciliation?import=<id>&facility_id=<id> opens an import and a facility.
import { api, upload } from './api.js';
import { fmt, h, note, pill, replace } from './dom.js';

const IMPORTS_SHOWN = 50;
const KIND_SEVERITY = {
  missing_in_platform: 'danger', duplicate: 'danger', amount_mismatch: 'danger',
  missing_in_bank: 'warn', date_mismatch: 'warn',
};
const DIFFERENCES = [
  ['sensors_vs_pledged', 'Sensors − pledged'],
  ['operator_vs_pledged', 'Operator − pledged'],
  ['sensors_vs_operator', 'Sensors − operator'],
];

function facilityLink(id) {
  return h('a.facility-link', { href: `#/facility/${encodeURIComponent(id)}` }, id);
}

function kindPills(counts) {
  const kinds = Object.entries(counts || {}).filter(([, n]) => n);
  if (!kinds.length) return h('span.check.check-yes', {}, 'no breaks');
  return kinds.map(([kind, n]) => [pill(`${fmt.label(kind)} ${n}`, KIND_SEVERITY[kind]), ' ']);
}

/** The media type a statement file is sent as: XML (camt.053) or CSV. */
function mediaType(file) {
  if (/\.xml$/i.test(file.name) || /xml/.test(file.type)) return 'application/xml';
  return 'text/csv';
}

/** A 422's per-line errors: loc ['body', 'line', n, field] -> 'line n · field: message'. */
function lineErrors(errors) {
  return h('ul.line-errors#upload-errors', {}, errors.map((e) => {
    const [, where, line, field] = e.loc || [];
    const label = where === 'line' ? `line ${line}${field ? ` · ${field}` : ''}` : (e.loc || []).join('.');
    return h('li', { dataset: { line: where === 'line' ? line : '' } }, h('strong', {}, label), ': ', e.msg);
  }));
}

export function reconciliationView(container, params = new URLSearchParams()) {
  const importsBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading statement imports…'));
  const breaksBox = h('div.card-body.flush', {}, note('Choose an import above to see its breaks.'));
  const breaksTitle = h('h2', {}, 'Breaks');
  const breaksInfo = h('span.muted');
  const goodsBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading goods…'));
  const result = h('div.upload-result#upload-result', { role: 'status', hidden: true });
  const file = h('input#statement-file', { type: 'file', name: 'statement', accept: '.csv,.xml,text/csv,application/xml', required: true });
  const send = h('button.btn.btn-primary#statement-upload', { type: 'submit' }, 'Reconcile');
  const facility = h('select#goods-facility', { name: 'facility_id' }, h('option', { value: '' }, 'All facilities'));
  const form = h('form.upload-form#statement-form', {},
    h('label.filter', { for: 'statement-file' }, h('span.filter-label', {}, 'Statement (CSV or camt.053 XML)'), file),
    send,
    h('span.muted', {}, 'CSV: reference,facility_id,amount,currency,direction,value_date'));
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Reconciliation'),
      h('span.muted', {}, 'T+0: the bank\'s core ledger against the platform\'s drawdowns and repayments; goods three ways')),
    h('section.card#statement-upload-card', {}, h('header.card-head', {}, h('h2', {}, 'Upload a statement')),
      h('div.card-body', {}, form, result)),
    h('section.card#imports', {}, h('header.card-head', {}, h('h2', {}, 'Statement imports'),
      h('span.muted', {}, `the newest ${IMPORTS_SHOWN}; a click shows the breaks`)), importsBox),
    h('section.card#breaks', {}, h('header.card-head', {}, breaksTitle, breaksInfo), breaksBox),
    h('section.card#goods', {}, h('header.card-head.filters-head', {}, h('h2', {}, 'Goods three ways'),
      h('label.filter.goods-filter', { for: 'goods-facility' }, h('span.filter-label', {}, 'Facility'), facility)),
    goodsBox));

  let gone = false;
  let selected = Number(params.get('import')) || null;
  let goodsLoads = 0;

  function importsTable(items) {
    if (!items.length) return note('No statement has been imported yet.');
    return h('table.table.compact#imports-table', {},
      h('thead', {}, h('tr', {}, h('th.num', {}, '#'), h('th', {}, 'Period'), h('th', {}, 'Source'),
        h('th.num', {}, 'Lines'), h('th.num', {}, 'Matched'), h('th.num', {}, 'Breaks'),
        h('th', {}, 'By kind'), h('th', {}, 'Imported'))),
      h('tbody', {}, items.map((s) => {
        const row = h(`tr.import-row.clickable${s.id === selected ? '.selected' : ''}`, {
          dataset: { import: s.id, breaks: s.breaks }, tabindex: 0,
        },
        h('td.num.mono', {}, String(s.id)),
        h('td.nowrap', {}, `${fmt.date(s.period_from)} – ${fmt.date(s.period_to)}`),
        h('td', {}, s.source, h('div.sub', {}, s.format === 'camt053' ? 'camt.053' : 'CSV')),
        h('td.num', {}, String(s.lines)),
        h('td.num', {}, String(s.matched)),
        h(`td.num${s.breaks ? '.negative' : ''}`, {}, String(s.breaks)),
        h('td', {}, kindPills(s.counts)),
        h('td.nowrap', { title: fmt.time(s.imported_at) }, fmt.ago(s.imported_at), h('div.sub', {}, `by ${s.imported_by}`)));
        row.addEventListener('click', () => select(s.id));
        row.addEventListener('keydown', (e) => { if (e.key === 'Enter') select(s.id); });
        return row;
      })));
  }

  function breaksTable(statement) {
    if (!statement.break_list.length) return note('Every line matched: no breaks.', 'ok');
    return h('table.table.compact#breaks-table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Kind'), h('th', {}, 'Facility'), h('th', {}, 'Reference'),
        h('th', {}, 'Detail'), h('th.num', {}, 'Bank line'), h('th', {}, 'Platform'), h('th', {}, 'Alert'))),
      h('tbody', {}, statement.break_list.map((b) => h(`tr.break-row.kind-${b.kind}`, {
        dataset: { break: b.id, kind: b.kind, reference: b.reference, facility: b.facility_id },
      },
      h('td', {}, pill(fmt.label(b.kind), KIND_SEVERITY[b.kind])),
      h('td', {}, facilityLink(b.facility_id)),
      h('td.mono', {}, b.reference),
      h('td.break-detail', {}, b.detail),
      h('td.num', {}, b.bank_line ?? '—'),
      h('td.mono', {}, b.platform_reference || '—'),
      h('td', {}, b.alert_id
        ? h('a.alert-link', {
          href: `#/alerts?status=any&type=reconciliation_break&facility_id=${encodeURIComponent(b.facility_id)}`,
          title: 'the reconciliation_break alert on the facility',
        }, `#${b.alert_id}`)
        : h('span.muted', {}, 'no facility'))))));
  }

  async function loadImports() {
    try {
      const page = await api(`/reconciliation/statements?limit=${IMPORTS_SHOWN}`);
      if (gone) return;
      replace(importsBox, importsTable(page.items));
      if (selected === null && page.items.length) select(page.items[0].id);
    } catch (error) {
      if (!gone && error.status !== 401) replace(importsBox, note(error.message, 'error'));
    }
  }

  async function select(id) {
    selected = id;
    for (const row of importsBox.querySelectorAll('tr.import-row')) {
      row.classList.toggle('selected', Number(row.dataset.import) === id);
    }
    breaksTitle.textContent = `Breaks of import #${id}`;
    replace(breaksBox, h('p.loading', {}, 'Loading breaks…'));
    try {
      const statement = await api(`/reconciliation/statements/${id}`);
      if (gone || selected !== id) return;
      breaksInfo.textContent = `${statement.source} · ${statement.lines} lines, ${statement.matched} matched, `
        + `${statement.breaks} break${statement.breaks === 1 ? '' : 's'}`;
      breaksBox.dataset.import = String(id);
      replace(breaksBox, breaksTable(statement));
    } catch (error) {
      if (!gone && error.status !== 401) replace(breaksBox, note(error.message, 'error'));
    }
  }

  function goodsTable(items) {
    if (!items.length) return note('No pledged lot here.');
    const flagged = items.filter((g) => g.flagged.length).length;
    return h('table.table.compact#goods-table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Lot'), h('th', {}, 'Facility'), h('th.num', {}, 'Pledged'),
        h('th.num', {}, 'Sensors'), h('th.num', {}, 'Operator'),
        DIFFERENCES.map(([, label]) => h('th.num', {}, label)), h('th', {}, flagged ? `${flagged} flagged` : 'Status'))),
      h('tbody', {}, items.map((g) => h(`tr.goods-row${g.flagged.length ? '.flagged' : ''}`, {
        dataset: { lot: g.lot_id, facility: g.facility_id, flagged: g.flagged.join(' ') },
      },
      h('td.mono', {}, g.lot_id),
      h('td', {}, facilityLink(g.facility_id)),
      h('td.num', {}, fmt.qty(g.pledged)),
      h('td.num', {}, fmt.qty(g.sensors)),
      h('td.num', {}, fmt.qty(g.operator)),
      DIFFERENCES.map(([name]) => {
        const d = g.differences[name];
        const off = g.flagged.includes(name);
        return h(`td.num${off ? '.negative' : ''}`, { dataset: { difference: name } },
          typeof d === 'number' ? `${d > 0 ? '+' : ''}${fmt.qty(d)}` : '—');
      }),
      h('td', {}, g.flagged.length
        ? g.flagged.map((name) => [pill(fmt.label(name), 'danger'), ' '])
        : h('span.check.check-yes', {}, 'within 2 %'))))));
  }

  async function loadGoods() {
    const mine = ++goodsLoads;
    const query = facility.value ? `?facility_id=${encodeURIComponent(facility.value)}` : '';
    if (!goodsBox.querySelector('table')) replace(goodsBox, h('p.loading', {}, 'Loading goods…'));
    try {
      const items = await api(`/reconciliation/goods${query}`);
      if (gone || mine !== goodsLoads) return;
      replace(goodsBox, goodsTable(items));
      goodsBox.dataset.facility = facility.value;
    } catch (error) {
      if (!gone && mine === goodsLoads && error.status !== 401) replace(goodsBox, note(error.message, 'error'));
    }
  }

  async function loadFacilities() {
    try {
      const page = await api('/facilities?limit=500');
      if (gone) return;
      const wanted = params.get('facility_id') || facility.value;
      const ids = page.items.map((f) => f.facility_id).sort();
      if (wanted && !ids.includes(wanted)) ids.push(wanted);
      replace(facility, h('option', { value: '' }, 'All facilities'), ids.map((id) => h('option', { value: id }, id)));
      facility.value = wanted || '';
    } catch (error) {
      if (error.status === 401) throw error;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) return;
    send.disabled = true;
    result.hidden = false;
    result.className = 'upload-result';
    replace(result, h('p.loading', {}, `Reconciling ${chosen.name}…`));
    try {
      const text = await chosen.text();
      const statement = await upload('/reconciliation/statements', text, mediaType(chosen), { filename: chosen.name });
      if (gone) return;
      result.className = `upload-result flash ${statement.breaks ? 'flash-neutral' : 'flash-ok'}`;
      result.dataset.outcome = 'imported';
      replace(result, h('p', {}, h('strong', {}, `Import #${statement.id}: `),
        `${statement.lines} lines, ${statement.matched} matched, ${statement.breaks} break${statement.breaks === 1 ? '' : 's'} `,
        kindPills(statement.counts)));
      form.reset();
      selected = statement.id;
      await loadImports();
      select(statement.id);
    } catch (error) {
      if (gone || error.status === 401) return;
      result.className = 'upload-result flash flash-error';
      result.dataset.outcome = `refused-${error.status}`;
      replace(result, h('p.form-error', { role: 'alert' },
        error.status === 422 ? 'The statement was refused; nothing was stored:' : `Refused (${error.status}): ${error.message}`),
      error.errors?.length ? lineErrors(error.errors) : null);
    } finally {
      send.disabled = false;
    }
  });
  facility.addEventListener('change', loadGoods);

  loadImports();
  if (selected !== null) select(selected);
  loadFacilities().then(loadGoods, () => {});
  return {
    onEvent: (name) => { if (name === 'limit') loadGoods(); },
    destroy() { gone = true; },
  };
}
