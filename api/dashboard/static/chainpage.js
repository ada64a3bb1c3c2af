// Supply chain: for each programme (a core enterprise's line: line, used, financed, advance rate)
// the chain from the core enterprise down. Each confirmed payable (a root voucher: amount,
// maturity, paid or not) with the tree of vouchers it was split into as it passed from tier 1 to
// tier 2 and 3: holder, amount, status, what the bank financed, maturity. A click on a voucher
// shows its path back to the core enterprise's confirmation (GET /vouchers/{id}). Below, the
// receivables that name a shipment, proven or contradicted by telemetry (trade_status) with the
// main evidence. Live alert and limit events refresh the page (at most every 5 s).
import { allPages, api } from './api.js';
import { evidenceTable } from './alerts.js';
import { fmt, h, note, pill, replace, throttle } from './dom.js';

const VOUCHER_KIND = { active: 'ok', spent: 'neutral', financed: 'info', settled: 'neutral' };
const TRADE_KIND = { verified: 'ok', pending: 'warn', contradicted: 'danger', none: 'neutral' };
const TRADE_ORDER = { contradicted: 0, pending: 1, verified: 2, none: 3 };
const COLUMNS = ['Voucher', 'Tier', 'Holder', 'Amount', 'Status', 'Financed', 'Maturity'];

function kpi(label, value, detail, kind) {
  return h(`div.kpi${kind ? `.kpi-${kind}` : ''}`, {},
    h('span.kpi-label', {}, label), h('span.kpi-value', {}, value),
    detail ? h('span.kpi-detail', {}, detail) : null);
}

/**
 * The vouchers of a programme as trees: { roots, children(id), tier(id) }. The tier is the
 * supply-chain tier of the holder: 1 for the supplier the core enterprise confirmed to, one more
 * at each transfer to another holder; the part a holder keeps when it splits a voucher stays at
 * its tier (the API's `tier` counts every split).
 */
export function voucherTree(vouchers) {
  const byId = new Map(vouchers.map((v) => [v.voucher_id, v]));
  const kids = new Map();
  for (const v of vouchers) {
    if (v.parent_id && byId.has(v.parent_id)) {
      if (!kids.has(v.parent_id)) kids.set(v.parent_id, []);
      kids.get(v.parent_id).push(v);
    }
  }
  // the transferred part first, then the part kept; oldest first
  for (const list of kids.values()) {
    list.sort((a, b) => {
      const keptA = a.holder_id === byId.get(a.parent_id).holder_id;
      const keptB = b.holder_id === byId.get(b.parent_id).holder_id;
      return keptA - keptB || String(a.created_at).localeCompare(String(b.created_at));
    });
  }
  const tiers = new Map();
  const tierOf = (v) => {
    if (tiers.has(v.voucher_id)) return tiers.get(v.voucher_id);
    const parent = v.parent_id ? byId.get(v.parent_id) : null;
    const tier = !parent ? 1 : tierOf(parent) + (parent.holder_id === v.holder_id ? 0 : 1);
    tiers.set(v.voucher_id, tier);
    return tier;
  };
  const roots = vouchers.filter((v) => !v.parent_id || !byId.has(v.parent_id))
    .sort((a, b) => String(a.maturity).localeCompare(String(b.maturity)));
  return { byId, roots, children: (id) => kids.get(id) || [], tier: (v) => tierOf(v) };
}

/** Every voucher of a root's tree, depth first, with its depth. */
function walk(tree, root) {
  const out = [];
  const visit = (v, depth) => {
    out.push([v, depth]);
    for (const child of tree.children(v.voucher_id)) visit(child, depth + 1);
  };
  visit(root, 0);
  return out;
}

/** 'paid' (settled), 'late' (past maturity, unpaid) or 'unpaid', from the root's tree. */
function payableState(rows, root) {
  if (rows.some(([v]) => v.status === 'settled')) return 'paid';
  return new Date(root.maturity).getTime() < Date.now() ? 'late' : 'unpaid';
}

const PAYABLE = { paid: ['Paid', 'ok'], unpaid: ['Unpaid', 'neutral'], late: ['Late', 'danger'] };
const PAYABLE_ORDER = { late: 0, unpaid: 1, paid: 2 };

function holderCell(v, members) {
  const name = members.get(v.holder_id);
  return h('td.holder', {}, h('strong', {}, name || v.holder_id), name ? h('div.sub', {}, v.holder_id) : null);
}

function financedCell(v, programme) {
  if (v.financed_amount == null) return h('td.num.muted.financed', {}, '—');
  return h('td.num.financed.financed-yes', {}, fmt.money(v.financed_amount),
    h('div.sub', {}, `${fmt.pct(programme.advance_rate, 0)} advance · ${fmt.date(v.financed_at)}`));
}

function maturityCell(v, state) {
  const late = state === 'late' && v.status !== 'settled';
  return h('td.nowrap', { title: fmt.time(v.maturity) }, fmt.date(v.maturity),
    h(`div.sub${late ? '.negative' : ''}`, {}, v.status === 'settled' ? `settled ${fmt.date(v.settled_at)}`
      : late ? `${fmt.until(v.maturity).replace(' ago', '')} late` : fmt.until(v.maturity)));
}

function voucherRow(v, depth, { tree, members, programme, state, onToggle }) {
  const tier = tree.tier(v);
  const parent = v.parent_id ? tree.byId.get(v.parent_id) : null;
  const kept = parent && parent.holder_id === v.holder_id;
  const label = depth === 0
    ? [h('strong', {}, 'Payable '), h('span.mono', {}, v.receivable_id), ' ',
      pill(PAYABLE[state][0], PAYABLE[state][1]),
      h('div.sub', {}, `confirmed by ${members.get(v.core_id) || v.core_id} · `, h('span.mono', {}, v.voucher_id))]
    : [h('span.branch', { 'aria-hidden': 'true' }, '└ '), h('span.mono', {}, v.voucher_id),
      h('div.sub', {}, kept ? `kept by ${members.get(v.holder_id) || v.holder_id}`
        : `from ${members.get(parent?.holder_id) || parent?.holder_id || '—'}`)];
  const first = h('td.voucher-cell', {}, label);
  first.style.setProperty('--depth', String(depth));
  const open = () => onToggle(v);
  return h(`tr.clickable.voucher-row${depth === 0 ? '.voucher-root' : ''}`, {
    tabindex: 0,
    title: 'Show the path back to the confirmation',
    dataset: {
      voucher: v.voucher_id, root: v.root_id, tier: String(tier), holder: v.holder_id,
      status: v.status, depth: String(depth), payable: depth === 0 ? state : undefined,
    },
    onclick: open,
    onkeydown: (e) => { if (e.key === 'Enter') open(); },
  },
  first,
  h('td', {}, pill(`Tier ${tier}`, tier === 1 ? 'info' : 'neutral')),
  holderCell(v, members),
  h('td.num.amount', {}, fmt.money(v.amount)),
  h('td', {}, pill(fmt.label(v.status), VOUCHER_KIND[v.status])),
  financedCell(v, programme),
  maturityCell(v, state));
}

/** The path of one voucher back to the core enterprise's confirmation (a VoucherDetail). */
function pathView(detail, members) {
  const c = detail.confirmation || {};
  let tier = 0;
  let holder = null;
  const steps = (detail.path || []).map((step, i) => {
    if (step.holder_id !== holder) tier += 1;
    const kept = step.holder_id === holder;
    holder = step.holder_id;
    const last = i === detail.path.length - 1;
    return h(`li.path-step${last ? '.path-here' : ''}`, {
      dataset: { voucher: step.voucher_id, holder: step.holder_id, tier: String(tier) },
    },
    h('span.path-tier', {}, `Tier ${tier}`),
    h('span.path-main', {},
      h('strong', {}, members.get(step.holder_id) || step.holder_id), ' ',
      h('span.amount', {}, fmt.money(step.amount)), ' ', pill(fmt.label(step.status), VOUCHER_KIND[step.status]),
      h('div.sub', {}, `${i === 0 ? 'confirmed payable' : kept ? 'part kept' : 'transferred'} · `,
        h('span.mono', {}, step.voucher_id), ` · ${fmt.time(step.created_at)} by ${step.created_by}`)));
  });
  return h('div.voucher-path', { dataset: { voucher: detail.voucher_id } },
    h('div.path-head', {}, h('strong', {}, `Path of ${detail.voucher_id}`),
      h('span.muted', {}, ` · ${fmt.money(detail.amount)} held by ${members.get(detail.holder_id) || detail.holder_id}`
        + ` · ${detail.path?.length || 0} step${detail.path?.length === 1 ? '' : 's'} from the confirmation`)),
    h('ol.path', {},
      h('li.path-confirmation', {},
        h('span.path-tier', {}, 'Core'),
        h('span.path-main', {},
          h('strong', {}, members.get(c.debtor_id) || c.debtor_id || detail.core_id),
          ` confirmed receivable `, h('span.mono', {}, c.receivable_id || detail.receivable_id),
          h('div.sub', {}, c.confirmed_at ? `${fmt.time(c.confirmed_at)} by ${c.confirmed_by}` : 'not confirmed',
            detail.trade_status === 'none' ? ' · no shipment named' : ` · trade ${detail.trade_status}`))),
      steps));
}

function programmeCard(chain, openPaths, onToggle) {
  const { programme, members: memberList, vouchers } = chain;
  const members = new Map(memberList.map((m) => [m.borrower_id, m.name]));
  const tree = voucherTree(vouchers);
  const room = programme.line - programme.used;
  const core = members.get(programme.core_id) || programme.core_id;
  const held = new Map();
  for (const v of vouchers) {
    if (v.status === 'active' || v.status === 'financed') held.set(v.holder_id, (held.get(v.holder_id) || 0) + v.amount);
  }

  // open payables first (late, then unpaid, by maturity), the paid ones last
  const payables = tree.roots.map((root) => {
    const rows = walk(tree, root);
    return { root, rows, state: payableState(rows, root) };
  }).sort((a, b) => PAYABLE_ORDER[a.state] - PAYABLE_ORDER[b.state]);
  const bodies = payables.map(({ root, rows, state }) => {
    const trs = [];
    for (const [v, depth] of rows) {
      trs.push(voucherRow(v, depth, { tree, members, programme, state, onToggle }));
      if (openPaths.has(v.voucher_id)) trs.push(pathRow(v.voucher_id));
    }
    return h('tbody.payable', { dataset: { root: root.voucher_id, payable: state } }, trs);
  });

  const table = tree.roots.length
    ? h('table.table.chain-table', {},
      h('thead', {}, h('tr', {}, COLUMNS.map((c, i) => h(i === 3 || i === 5 ? 'th.num' : 'th', {}, c)))),
      bodies)
    : note('No confirmed payables in this programme yet.');

  return h('section.card.programme', { id: `chain-${programme.programme_id}`, dataset: { programme: programme.programme_id } },
    h('header.card-head', {},
      h('h2', {}, `Programme ${programme.programme_id}`),
      h('span.muted', {}, `${core}'s chain · ${programme.currency}`),
      h('a.card-link', { href: `#/facility/${encodeURIComponent(programme.facility_id)}` },
        `alerts on ${programme.facility_id} →`)),
    h('div.card-body', {},
      h('div.kpis.programme-kpis', {},
        kpi('Programme line', fmt.money(programme.line), programme.currency),
        kpi('Used', fmt.money(programme.used), `confirmed, unpaid · ${fmt.money(room)} room`,
          room < 0 ? 'danger' : null),
        kpi('Financed', fmt.money(programme.financed), 'advanced, not yet settled'),
        kpi('Advance rate', fmt.pct(programme.advance_rate, 0), 'of a voucher\'s face value')),
      h('div.chain-core', {},
        h('span.pill.pill-info', {}, 'Core enterprise'),
        h('strong', {}, core), h('span.muted', {}, programme.core_id),
        h('span.chain-members', {}, memberList.filter((m) => m.borrower_id !== programme.core_id).map((m) =>
          h('span.member', { dataset: { member: m.borrower_id } }, m.name,
            h('span.muted', {}, held.has(m.borrower_id) ? ` holds ${fmt.compact(held.get(m.borrower_id))}` : ' holds nothing')))))),
    h('div.card-body.flush', {}, table));
}

function pathRow(voucherId) {
  return h('tr.path-row', { dataset: { pathOf: voucherId } },
    h('td', { colspan: COLUMNS.length }, h('p.loading', {}, 'Loading the path…')));
}

// --- receivables proven or contradicted by telemetry ------------------------------------------------

function yesNo(ok, text) {
  return h(`span.check.check-${ok === true ? 'yes' : ok === false ? 'no' : 'unknown'}`, {}, text);
}

function arrivalCell(ev) {
  const arrival = ev?.arrival;
  if (arrival) {
    return h('td.evidence-arrival', {}, yesNo(true, fmt.time(arrival.entered_at)),
      h('div.sub', {}, `stopped ${fmt.qty(arrival.stop_minutes)} min`));
  }
  const never = ev?.never_left;
  return h('td.evidence-arrival', {}, yesNo(never ? false : null, never ? 'never left the seller' : 'not arrived'));
}

function releaseCell(ev) {
  const matched = ev?.matched_releases || [];
  if (matched.length) {
    return h('td.evidence-release', {}, yesNo(true, matched.join(', ')),
      h('div.sub', {}, `${fmt.qty(ev.released_quantity)} units released`));
  }
  const executed = ev?.releases || [];
  return h('td.evidence-release', {}, yesNo(ev ? false : null,
    executed.length ? `no match (${executed.length} executed)` : 'none executed'));
}

function movedCell(ok, side, word, className) {
  const amount = side?.[word];
  return h(`td.num.${className}`, {}, yesNo(ok, amount == null ? 'unknown' : fmt.qty(amount)),
    side?.before != null && side?.after != null
      ? h('div.sub', {}, `${fmt.qty(side.before)} → ${fmt.qty(side.after)}`) : null);
}

function tradeRow(r) {
  const ev = r.trade_evidence || null;
  const s = r.shipment || {};
  const checks = ev?.checks || {};
  const reasons = ev?.reasons || [];
  return h(`tr.trade-row.trade-${r.trade_status}`, { dataset: { receivable: r.receivable_id, tradeStatus: r.trade_status } },
    h('td', {}, h('span.mono', {}, r.receivable_id),
      h('div.sub', {}, `${r.facility_id} → ${r.debtor_id || r.debtor}`)),
    h('td.num', {}, fmt.money(r.amount), h('div.sub', {}, `due ${fmt.date(r.due)}`)),
    h('td.shipment', {}, s.vehicle ? `${s.vehicle} · ${fmt.qty(s.quantity)} units` : '—',
      h('div.sub', {}, s.seller_lot_id ? `${s.seller_lot_id} → ${s.buyer_lot_id} · ${fmt.time(s.shipped_at)}` : '')),
    h('td', {}, pill(fmt.label(r.trade_status), TRADE_KIND[r.trade_status]),
      r.verified_by === 'telemetry' ? h('div.sub', {}, 'eligible by telemetry') : null),
    arrivalCell(ev),
    releaseCell(ev),
    movedCell(ev ? Boolean(checks.seller_fell) : null, ev?.seller, 'drop', 'evidence-seller'),
    movedCell(ev ? Boolean(checks.buyer_rose) : null, ev?.buyer, 'rise', 'evidence-buyer'),
    h('td.trade-why', {},
      reasons.length ? h('ul.reasons', {}, reasons.slice(0, 3).map((reason) => h('li', {}, reason))) : h('span.muted', {}, 'not judged yet'),
      ev ? h('details.evidence-box', {}, h('summary', {}, 'All evidence'), evidenceTable(ev)) : null));
}

function tradeTable(receivables) {
  const shipped = receivables.filter((r) => r.shipment || (r.trade_status && r.trade_status !== 'none'))
    .sort((a, b) => (TRADE_ORDER[a.trade_status] ?? 9) - (TRADE_ORDER[b.trade_status] ?? 9)
      || String(b.due).localeCompare(String(a.due)));
  if (!shipped.length) return note('No receivable names a shipment yet.');
  return h('table.table.compact#trade-table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'Receivable'), h('th.num', {}, 'Amount'), h('th', {}, 'Shipment'),
      h('th', {}, 'Trade'), h('th', {}, 'Arrived (buyer geofence)'), h('th', {}, 'Release matched'),
      h('th.num', {}, 'Seller drop'), h('th.num', {}, 'Buyer rise'), h('th', {}, 'Why'))),
    h('tbody', {}, shipped.map(tradeRow)));
}

export function chainView(container) {
  const summary = h('span.muted#chain-summary');
  const programmes = h('div.programmes', {}, h('p.loading', {}, 'Loading programmes…'));
  const trades = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading receivables…'));
  const tradeCount = h('span.muted');
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Supply chain'), summary),
    programmes,
    h('section.card#trades', {},
      h('header.card-head', {}, h('h2', {}, 'Trade proven by sensors'),
        h('span.head-note', {}, 'receivables naming a shipment: the delivery verified or contradicted by telemetry'),
        tradeCount),
      trades));

  let gone = false;
  let loads = 0;
  const openPaths = new Set(); // vouchers whose path is shown
  const details = new Map(); // voucher id -> VoucherDetail
  let members = new Map();

  async function fillPath(voucherId) {
    const cell = () => programmes.querySelector(`tr.path-row[data-path-of="${CSS.escape(voucherId)}"] > td`);
    if (details.has(voucherId) && cell()) replace(cell(), pathView(details.get(voucherId), members));
    try {
      const detail = await api(`/vouchers/${encodeURIComponent(voucherId)}`);
      if (gone) return;
      details.set(voucherId, detail);
      if (cell()) replace(cell(), pathView(detail, members));
    } catch (error) {
      if (!gone && error.status !== 401 && cell()) replace(cell(), note(error.message, 'error'));
    }
  }

  function toggle(v) {
    const row = programmes.querySelector(`tr.voucher-row[data-voucher="${CSS.escape(v.voucher_id)}"]`);
    if (openPaths.has(v.voucher_id)) {
      openPaths.delete(v.voucher_id);
      if (row?.nextElementSibling?.matches('tr.path-row')) row.nextElementSibling.remove();
      row?.classList.remove('open');
      return;
    }
    openPaths.add(v.voucher_id);
    row?.classList.add('open');
    row?.after(pathRow(v.voucher_id));
    fillPath(v.voucher_id);
  }

  async function load() {
    const mine = ++loads;
    try {
      const [list, receivables] = await Promise.all([
        api('/programmes'), allPages('/receivables').catch((e) => (e.status === 401 ? Promise.reject(e) : e))]);
      const chains = await Promise.all(list.map((p) => api(`/programmes/${encodeURIComponent(p.programme_id)}/chain`)));
      if (gone || mine !== loads) return;
      members = new Map(chains.flatMap((c) => c.members.map((m) => [m.borrower_id, m.name])));
      replace(programmes, chains.length
        ? chains.map((c) => programmeCard(c, openPaths, toggle))
        : h('section.card', {}, note('No programmes yet: an officer sets a core enterprise\'s line with POST /api/v1/programmes.')));
      for (const id of openPaths) {
        programmes.querySelector(`tr.voucher-row[data-voucher="${CSS.escape(id)}"]`)?.classList.add('open');
        fillPath(id);
      }
      const vouchers = chains.reduce((n, c) => n + c.vouchers.length, 0);
      const financed = chains.reduce((n, c) => n + c.programme.financed, 0);
      summary.textContent = `${chains.length} programme${chains.length === 1 ? '' : 's'} · ${vouchers} voucher${vouchers === 1 ? '' : 's'}`
        + ` · ${fmt.compact(financed)} financed · updated ${fmt.time(new Date())}`;
      if (receivables instanceof Error) {
        replace(trades, note(receivables.message, 'error'));
      } else {
        replace(trades, tradeTable(receivables));
        const by = (s) => receivables.filter((r) => r.trade_status === s).length;
        tradeCount.textContent = `${by('verified')} verified · ${by('pending')} pending · ${by('contradicted')} contradicted`;
      }
    } catch (error) {
      if (!gone && mine === loads && error.status !== 401) replace(programmes, note(error.message, 'error'));
    }
  }

  const refresh = throttle(load, 5000);
  load();
  return {
    onEvent: () => refresh(),
    destroy() { gone = true; },
  };
}
