// Credit ratings: the newest rating of every borrower (GET /ratings, filter by grade) and one
// borrower's rating (GET /borrowers/<id>/rating): grade, score, PD, reason codes, the grade
// history (a table and a line of the score) and the grade changes with the terms they moved.
import { allPages, api } from './api.js';
import { fmt, h, note, replace } from './dom.js';

export const GRADES = ['A', 'B', 'C', 'D', 'E', 'F', 'G'];

/** A grade as a coloured badge; a link to the borrower's rating when `borrowerId` is given. */
export function gradeBadge(grade, borrowerId, attrs = {}) {
  const kind = `.grade-${String(grade || 'none').toLowerCase()}`;
  const text = grade || '—';
  if (!borrowerId) return h(`span.grade-badge${kind}`, { title: `grade ${text}`, ...attrs }, text);
  return h(`a.grade-badge${kind}`, {
    href: `#/ratings/${encodeURIComponent(borrowerId)}`, title: `grade ${text}: the rating of ${borrowerId}`, ...attrs,
  }, text);
}

const card = (model, version) => `${model} v${version}`;
const points = (v) => (typeof v === 'number' ? `−${fmt.qty(v)} pts` : '');

function reasonItems(reasons, shown = reasons?.length || 0) {
  if (!reasons?.length) return h('span.muted', {}, '—');
  return h('ul.reasons.rating-reasons', {}, reasons.slice(0, shown).map((r) => h('li.reason', {
    dataset: { feature: r.feature, bin: r.bin },
  }, h('strong', {}, fmt.label(r.feature)), ' ', h('span.bin', {}, r.bin), ' ', h('span.muted', {}, points(r.points_lost)))));
}

async function borrowerNames() {
  try {
    return new Map((await allPages('/borrowers', { max: 5000 })).map((b) => [b.borrower_id, b.name]));
  } catch (error) {
    if (error.status === 401) throw error;
    return new Map();
  }
}

export function ratingsView(container, params) {
  const grade = GRADES.includes(params.get('grade')) ? params.get('grade') : '';
  const select = h('select#filter-grade', { 'aria-label': 'grade' },
    h('option', { value: '' }, 'Any grade'),
    GRADES.map((g) => h('option', { value: g, selected: g === grade }, `Grade ${g}`)));
  select.addEventListener('change', () => {
    location.hash = select.value ? `#/ratings?grade=${select.value}` : '#/ratings';
  });
  const box = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading ratings…'));
  const shown = h('span.muted#ratings-shown');
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Ratings'),
      h('span.muted', {}, 'the newest rating of each borrower: score, PD and the reasons that cost the most points')),
    h('section.card', {},
      h('header.card-head.filters-head', {}, h('div.filters', {},
        h('label.filter', {}, h('span.filter-label', {}, 'Grade'), select), shown)),
      box));

  let gone = false;
  (async () => {
    try {
      const [ratings, names] = await Promise.all([
        allPages(`/ratings${grade ? `?grade=${grade}` : ''}`, { max: 10000 }), borrowerNames()]);
      if (gone) return;
      shown.textContent = `${ratings.length} borrower${ratings.length === 1 ? '' : 's'}${grade ? ` of grade ${grade}` : ''}`;
      if (!ratings.length) {
        replace(box, note(grade ? `No borrower is rated ${grade}.` : 'No borrower has been rated yet: the daily run rates the book (pledgewatch rating run).'));
        return;
      }
      replace(box, h('table.table#ratings-table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Borrower'), h('th', {}, 'Grade'), h('th.num', {}, 'Score'),
          h('th.num', {}, 'PD'), h('th', {}, 'Card'), h('th', {}, 'As of'), h('th', {}, 'Top reason codes'))),
        h('tbody', {}, ratings.map((r) => {
          const href = `#/ratings/${encodeURIComponent(r.borrower_id)}`;
          return h('tr.rating-row.clickable', {
            dataset: { borrower: r.borrower_id, grade: r.grade },
            onclick: (event) => { if (!event.target.closest('a')) location.hash = href; },
          },
          h('td', {}, h('a.borrower-link', { href }, names.get(r.borrower_id) || r.borrower_id),
            h('div.sub', {}, r.borrower_id)),
          h('td', {}, gradeBadge(r.grade)),
          h('td.num.score', {}, fmt.qty(r.score)),
          h('td.num.pd', {}, fmt.pct(r.pd, 2)),
          h('td.nowrap', {}, card(r.model, r.version)),
          h('td.nowrap', {}, fmt.date(r.as_of)),
          h('td.reasons-cell', {}, reasonItems(r.reasons, 3)));
        }))));
    } catch (error) {
      if (!gone && error.status !== 401) {
        replace(box, note(error.status === 403 ? 'Ratings are for bank officers.' : error.message, 'error'));
      }
    }
  })();
  return { destroy() { gone = true; } };
}

function kpi(label, value, detail, kind) {
  return h(`div.kpi${kind ? `.kpi-${kind}` : ''}`, {},
    h('span.kpi-label', {}, label), h('span.kpi-value', {}, value),
    detail ? h('span.kpi-detail', {}, detail) : null);
}

const GRADE_KPI = { a: 'ok', b: 'ok', c: 'warn', d: 'warn', e: 'danger', f: 'danger', g: 'danger' };

function movedTerms(facilities) {
  if (!facilities?.length) return h('span.muted', {}, 'no terms moved');
  const rate = (v) => (typeof v === 'number' ? fmt.pct(v, 0) : '—');
  return h('ul.reasons.moved-terms', {}, facilities.map((f) => h('li', { dataset: { facility: f.facility_id } },
    h('a', { href: `#/facility/${encodeURIComponent(f.facility_id)}` }, f.facility_id), ': advance rate ',
    `${rate(f.advance_rate?.from)} → ${rate(f.advance_rate?.to)}`, ', line ',
    `${fmt.money(f.line?.from)} → ${fmt.money(f.line?.to)}`)));
}

function scoreChart(canvas, history) {
  if (!window.Chart || history.length < 1) return null;
  const points = [...history].sort((a, b) => String(a.as_of).localeCompare(String(b.as_of)))
    .map((r) => ({ x: Date.parse(r.as_of), y: r.score, grade: r.grade }));
  return new window.Chart(canvas, {
    type: 'line',
    data: {
      datasets: [{
        label: 'Score', data: points, borderColor: '#1d4ed8', backgroundColor: '#1d4ed8',
        borderWidth: 2, pointRadius: 3, stepped: false,
      }],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (c) => `score ${fmt.qty(c.parsed.y)} · grade ${c.raw.grade}` } },
      },
      scales: {
        x: { type: 'time', time: { unit: 'day', tooltipFormat: 'dd MMM yyyy', displayFormats: { day: 'dd MMM' } },
          ticks: { maxTicksLimit: 8 }, grid: { color: '#eef1f5' } },
        y: { title: { display: true, text: 'score (600 @ 50:1, PDO 20)' }, grid: { color: '#eef1f5' } },
      },
    },
  });
}

export function ratingDetailView(container, borrowerId) {
  const id = encodeURIComponent(borrowerId);
  const title = h('h1', {}, borrowerId);
  const badge = h('span');
  const subtitle = h('span.muted');
  const summary = h('div', {}, h('p.loading', {}, 'Loading the rating…'));
  const reasonsBox = h('div.card-body.flush');
  const canvas = h('canvas#rating-chart', { 'aria-label': 'score over time' });
  const historyBox = h('div.card-body.flush');
  const changesBox = h('div.card-body.flush');
  replace(container,
    h('div.page-head', {}, h('a.back', { href: '#/ratings' }, '← Ratings'), title, badge, subtitle),
    summary,
    h('section.card#rating-reasons', {}, h('header.card-head', {}, h('h2', {}, 'Reason codes'),
      h('span.muted', {}, 'the features that cost the most points against their best bin')), reasonsBox),
    h('div.grid-2', {},
      h('section.card', {}, h('header.card-head', {}, h('h2', {}, 'Score over time')),
        h('div.card-body', {}, h('div.chart-box.chart-box-small', {}, canvas))),
      h('section.card#rating-history', {}, h('header.card-head', {}, h('h2', {}, 'Grade history'),
        h('span.muted', {}, 'one rating per day, newest first')), historyBox)),
    h('section.card#grade-changes', {}, h('header.card-head', {}, h('h2', {}, 'Grade changes'),
      h('span.muted', {}, 'logged with who ran the rating, the reasons and the terms it moved')), changesBox));

  let gone = false;
  let chart = null;
  (async () => {
    try {
      const [rating, borrower] = await Promise.all([
        api(`/borrowers/${id}/rating`), api(`/borrowers/${id}`).catch((e) => (e.status === 401 ? Promise.reject(e) : null))]);
      if (gone) return;
      if (borrower) {
        title.textContent = borrower.name;
        replace(subtitle, `${borrower.borrower_id} · ${fmt.label(borrower.role)}`,
          (borrower.facilities || []).length ? ' · ' : null,
          (borrower.facilities || []).map((f, i) => [i ? ', ' : null,
            h('a', { href: `#/facility/${encodeURIComponent(f)}` }, f)]));
      }
      const c = rating.current;
      if (!c) {
        replace(summary, note('Not rated yet: the daily run rates every borrower with features.'));
        for (const box of [reasonsBox, historyBox, changesBox]) replace(box, note('—'));
        return;
      }
      replace(badge, gradeBadge(c.grade, null, { id: 'rating-grade' }));
      replace(summary, h('div.kpis#rating-kpis', {},
        kpi('Grade', c.grade, `as of ${fmt.date(c.as_of)}`, GRADE_KPI[c.grade.toLowerCase()]),
        kpi('Score', fmt.qty(c.score), '600 points at odds 50:1, 20 points double the odds'),
        kpi('PD', fmt.pct(c.pd, 2), 'probability of default'),
        kpi('Card', card(c.model, c.version), `rated ${fmt.time(c.rated_at)}`)));
      replace(reasonsBox, c.reasons.length ? h('table.table.compact#reason-table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Feature'), h('th', {}, 'Bin'), h('th.num', {}, 'Points lost'))),
        h('tbody', {}, c.reasons.map((r) => h('tr.reason-row', { dataset: { feature: r.feature, bin: r.bin } },
          h('td', {}, h('strong', {}, fmt.label(r.feature)), h('div.sub.mono', {}, r.feature)),
          h('td.mono.bin', {}, r.bin),
          h('td.num', {}, fmt.qty(r.points_lost))))))
        : note('No feature cost points: every indicator sits in its best bin.', 'ok'));
      replace(historyBox, h('table.table.compact#history-table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'As of'), h('th', {}, 'Grade'), h('th.num', {}, 'Score'),
          h('th.num', {}, 'PD'), h('th', {}, 'Card'))),
        h('tbody', {}, rating.history.map((r) => h('tr.history-row', { dataset: { asOf: r.as_of, grade: r.grade } },
          h('td.nowrap', {}, fmt.date(r.as_of)), h('td', {}, gradeBadge(r.grade)),
          h('td.num', {}, fmt.qty(r.score)), h('td.num', {}, fmt.pct(r.pd, 2)),
          h('td.nowrap', {}, card(r.model, r.version)))))));
      chart = scoreChart(canvas, rating.history);
      replace(changesBox, rating.grade_changes.length ? h('table.table#changes-table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Change'), h('th', {}, 'As of'), h('th', {}, 'Run by'),
          h('th', {}, 'Card'), h('th', {}, 'Reasons'), h('th', {}, 'Terms moved'))),
        h('tbody', {}, rating.grade_changes.map((g) => h('tr.change-row', {
          dataset: { previous: g.previous_grade || '', grade: g.grade },
        },
        h('td.nowrap.grade-move', {}, g.previous_grade ? gradeBadge(g.previous_grade) : h('span.muted', {}, 'first rating'),
          ' → ', gradeBadge(g.grade)),
        h('td.nowrap', {}, fmt.date(g.as_of)),
        h('td.nowrap.changed-by', {}, g.changed_by, h('div.sub', {}, fmt.time(g.changed_at))),
        h('td.nowrap', {}, card(g.model, g.version)),
        h('td.reasons-cell', {}, reasonItems(g.reasons)),
        h('td.terms-cell', {}, movedTerms(g.facilities))))))
        : note('No grade change logged.'));
    } catch (error) {
      if (gone || error.status === 401) return;
      replace(summary, note(error.status === 404 ? `No borrower ${borrowerId}.` : error.message, 'error'));
    }
  })();
  return {
    destroy() {
      gone = true;
      chart?.destroy();
    },
  };
}
