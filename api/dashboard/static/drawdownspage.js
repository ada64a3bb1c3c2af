// Drawdowns: the officers' queue. Pending drawdowns (facility, borrower, amount, tenor, purpose,
// when requested and why each waits) with Approve / Reject and an optional comment; a refusal
// (409: past the available limit, a blacklisted borrower) stays in its row. Below, drawdowns past
// their maturity and the newest decisions. Live events refresh it (a decision moves the limit) and
// so does a poll, since a new request that waits raises no event.
import { api, allPages } from './api.js';
import { fmt, h, note, pill, replace, throttle } from './dom.js';

const STATUS_KIND = { pending: 'warn', approved: 'ok', rejected: 'danger', repaid: 'neutral' };
const POLL_MS = 15000;
const DECIDED_SHOWN = 50;

function kpi(label, value, detail, kind) {
  return h(`div.kpi${kind ? `.kpi-${kind}` : ''}`, {},
    h('span.kpi-label', {}, label), h('span.kpi-value', {}, value),
    detail ? h('span.kpi-detail', {}, detail) : null);
}

function facilityCell(d, facilities) {
  const f = facilities.get(d.facility_id);
  return h('td', {}, h('a', { href: `#/facility/${encodeURIComponent(d.facility_id)}` }, d.facility_id),
    h('div.sub', {}, f?.borrower_name ? `${f.borrower_name} · ${d.borrower_id}` : d.borrower_id));
}

function amountCell(d) {
  return h('td.num.amount', {}, fmt.money(d.amount), h('div.sub', {}, d.currency));
}

/** Available now on the facility (from GET /facilities), marked when the amount does not fit. */
function availableCell(d, facilities) {
  const f = facilities.get(d.facility_id);
  if (!f || typeof f.available !== 'number') return h('td.num.muted', {}, '—');
  const short = d.amount > f.available;
  return h(`td.num${short ? '.negative' : ''}`, {}, fmt.money(f.available),
    h('div.sub', {}, short ? `${fmt.money(d.amount - f.available)} short` : `of ${fmt.money(f.limit)} limit`));
}

function reasonsCell(d) {
  return h('td.reasons-cell', {}, d.reasons?.length
    ? h('ul.reasons', {}, d.reasons.map((r) => h('li', {}, r)))
    : h('span.muted', {}, '—'));
}

export function drawdownsView(container) {
  const kpis = h('div');
  const pendingBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading the queue…'));
  const overdueBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading overdue drawdowns…'));
  const decidedBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading decisions…'));
  const updated = h('span.muted#drawdowns-updated');
  const pendingCount = h('span.head-count');
  const notice = h('p.flash#drawdown-notice', { role: 'status', hidden: true });
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Drawdowns'), updated),
    kpis,
    notice,
    h('section.card#pending', {}, h('header.card-head', {}, h('h2', {}, 'Waiting for an officer'), pendingCount,
      h('span.muted', {}, 'an officer may approve past an alert, never past the available limit or for a blacklisted borrower')),
    pendingBox),
    h('section.card#overdue', {}, h('header.card-head', {}, h('h2', {}, 'Overdue'),
      h('span.muted', {}, 'approved and past their maturity')), overdueBox),
    h('section.card#decided', {}, h('header.card-head', {}, h('h2', {}, 'Recent decisions'),
      h('span.muted', {}, `the newest ${DECIDED_SHOWN} requests decided, at once or by an officer`)), decidedBox));

  let gone = false;
  let loads = 0;
  const errors = new Map(); // drawdown id -> the refusal shown in its row until the next try
  const comments = new Map(); // drawdown id -> comment typed (kept across refreshes)
  let deferred = false;

  function decide(d, verb, row) {
    return async () => {
      const buttons = row.querySelectorAll('button');
      for (const b of buttons) b.disabled = true;
      const comment = (comments.get(d.drawdown_id) || '').trim();
      try {
        await api(`/drawdowns/${encodeURIComponent(d.drawdown_id)}/${verb}`, {
          method: 'POST', body: comment ? { comment } : {},
        });
        errors.delete(d.drawdown_id);
        comments.delete(d.drawdown_id);
        notice.textContent = `${d.drawdown_id} (${fmt.money(d.amount)} ${d.currency} on ${d.facility_id}) ${verb === 'approve' ? 'approved' : 'rejected'}.`;
        notice.hidden = false;
        notice.className = `flash flash-${verb === 'approve' ? 'ok' : 'neutral'}`;
      } catch (error) {
        if (error.status === 401) return;
        errors.set(d.drawdown_id, error.status === 409 ? `Refused: ${error.message}` : error.message);
      }
      load();
    };
  }

  function pendingRow(d, facilities) {
    const error = errors.get(d.drawdown_id);
    const comment = h('input.dd-comment', {
      type: 'text', maxlength: 2000, placeholder: 'Comment (optional)', 'aria-label': `Comment on ${d.drawdown_id}`,
      value: comments.get(d.drawdown_id) || undefined,
      oninput: (e) => comments.set(d.drawdown_id, e.target.value),
      onblur: () => { if (deferred) { deferred = false; refresh(); } },
    });
    const row = h(`tr.drawdown-row${error ? '.refused' : ''}`, {
      dataset: { drawdown: d.drawdown_id, status: d.status, facility: d.facility_id },
    },
    facilityCell(d, facilities),
    amountCell(d),
    h('td.num', {}, `${d.tenor_days} d`),
    h('td.purpose', {}, d.purpose),
    h('td.nowrap', { title: fmt.time(d.requested_at) }, fmt.ago(d.requested_at),
      h('div.sub', {}, `by ${d.requested_by || '—'}`)),
    reasonsCell(d),
    availableCell(d, facilities),
    h('td.dd-actions', {}));
    const approve = h('button.btn.btn-primary', { type: 'button', dataset: { action: 'approve' } }, 'Approve');
    const reject = h('button.btn.btn-ghost', { type: 'button', dataset: { action: 'reject' } }, 'Reject');
    approve.addEventListener('click', decide(d, 'approve', row));
    reject.addEventListener('click', decide(d, 'reject', row));
    replace(row.lastElementChild, comment, h('div.actions', {}, approve, reject),
      error ? h('p.form-error.row-error', { role: 'alert' }, error) : null);
    return row;
  }

  function pendingTable(items, facilities) {
    if (!items.length) return note('No drawdown waits for an officer.', 'ok');
    return h('table.table#pending-table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Facility · borrower'), h('th.num', {}, 'Amount'),
        h('th.num', {}, 'Tenor'), h('th', {}, 'Purpose'), h('th', {}, 'Requested'), h('th', {}, 'Waits because'),
        h('th.num', {}, 'Available now'), h('th', {}, 'Decision'))),
      h('tbody', {}, items.map((d) => pendingRow(d, facilities))));
  }

  function overdueTable(items, facilities) {
    if (!items.length) return note('No drawdown is past its maturity.', 'ok');
    return h('table.table.compact#overdue-table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Facility · borrower'), h('th', {}, 'Drawdown'), h('th.num', {}, 'Amount'),
        h('th.num', {}, 'Owed'), h('th', {}, 'Matured'), h('th', {}, 'Purpose'))),
      h('tbody', {}, items.map((d) => h('tr', { dataset: { drawdown: d.drawdown_id, status: d.status } },
        facilityCell(d, facilities),
        h('td.mono', {}, d.drawdown_id),
        amountCell(d),
        h('td.num.negative', {}, fmt.money(d.owed)),
        h('td.nowrap', { title: fmt.time(d.maturity) }, fmt.date(d.maturity),
          h('div.sub.negative', {}, `${fmt.until(d.maturity).replace(' ago', '')} overdue`)),
        h('td', {}, d.purpose)))));
  }

  function decidedTable(items, facilities) {
    if (!items.length) return note('No decisions yet.');
    return h('table.table.compact#decided-table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Facility · borrower'), h('th', {}, 'Drawdown'), h('th.num', {}, 'Amount'),
        h('th', {}, 'Status'), h('th', {}, 'Decided'), h('th', {}, 'Comment · reasons'), h('th.num', {}, 'Owed'),
        h('th', {}, 'Maturity'))),
      h('tbody', {}, items.map((d) => h('tr', { dataset: { drawdown: d.drawdown_id, status: d.status } },
        facilityCell(d, facilities),
        h('td', {}, h('span.mono', {}, d.drawdown_id), h('div.sub', {}, d.source === 'opening' ? 'opening balance' : d.purpose)),
        amountCell(d),
        h('td', {}, pill(fmt.label(d.status), STATUS_KIND[d.status]), d.overdue ? [' ', pill('Overdue', 'danger')] : null),
        h('td.nowrap', { title: fmt.time(d.decided_at) }, d.decided_by === 'auto' ? 'at once' : (d.decided_by || '—'),
          h('div.sub', {}, fmt.ago(d.decided_at))),
        h('td', {}, d.comment ? h('blockquote.comment', {}, d.comment) : null,
          d.reasons?.length ? h('div.sub', {}, `waited: ${d.reasons.join('; ')}`) : null),
        h('td.num', {}, fmt.money(d.owed)),
        h('td.nowrap', {}, d.maturity ? fmt.date(d.maturity) : '—')))));
  }

  /** True while an officer is typing a comment: a refresh would take the field away. */
  function typing() {
    const active = document.activeElement;
    return active instanceof HTMLInputElement && active.classList.contains('dd-comment') && pendingBox.contains(active);
  }

  async function load() {
    if (typing()) { deferred = true; return; }
    const mine = ++loads;
    try {
      const [pending, overdue, recent, facilityPage] = await Promise.all([
        allPages('/drawdowns?status=pending', { max: 2000 }),
        api('/drawdowns?overdue=true&limit=100'),
        api(`/drawdowns?limit=${DECIDED_SHOWN + 50}`),
        api('/facilities?limit=500').catch((e) => (e.status === 401 ? Promise.reject(e) : { items: [] })),
      ]);
      if (gone || mine !== loads) return;
      if (typing()) { deferred = true; return; }
      const facilities = new Map(facilityPage.items.map((f) => [f.facility_id, f]));
      const decided = recent.items.filter((d) => d.status !== 'pending')
        .sort((a, b) => String(b.decided_at || b.requested_at).localeCompare(String(a.decided_at || a.requested_at)))
        .slice(0, DECIDED_SHOWN);
      for (const id of errors.keys()) if (!pending.some((d) => d.drawdown_id === id)) errors.delete(id);
      const sum = (list, key) => list.reduce((total, d) => total + (d[key] || 0), 0);
      const currencies = [...new Set(pending.map((d) => d.currency))];
      replace(kpis, h('div.kpis', {},
        kpi('Waiting', pending.length, pending.length ? `${fmt.compact(sum(pending, 'amount'))} ${currencies.join('/')} requested` : 'queue empty',
          pending.length ? 'warn' : 'ok'),
        kpi('Over the available limit', pending.filter((d) => (d.reasons || []).some((r) => r.includes('available limit'))).length,
          'cannot be approved until the limit allows'),
        kpi('Overdue', overdue.items.length, `${fmt.compact(sum(overdue.items, 'owed'))} owed`,
          overdue.items.length ? 'danger' : 'ok'),
        kpi('Decided (recent)', decided.length, `${decided.filter((d) => d.decided_by === 'auto').length} at once`)));
      replace(pendingBox, pendingTable(pending, facilities));
      replace(overdueBox, overdueTable(overdue.items, facilities));
      replace(decidedBox, decidedTable(decided, facilities));
      pendingCount.textContent = pending.length ? `${pending.length} waiting` : '';
      updated.textContent = `updated ${fmt.time(new Date())}`;
    } catch (error) {
      if (!gone && mine === loads && error.status !== 401) replace(pendingBox, note(error.message, 'error'));
    }
  }

  const refresh = throttle(load, 1000);
  load();
  const poll = setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  return {
    onEvent: () => refresh(),
    destroy() {
      gone = true;
      clearInterval(poll);
    },
  };
}
