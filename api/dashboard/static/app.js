// PledgeWatch dashboard: hash routes (#/login, #/, #/facility/<id>, #/alerts?<filters>, #/map,
// #/chain, #/drawdowns, #/ledger, #/reconciliation?<import, facility>, #/ratings?<grade>,
// #/ratings/<borrower>), one live event stream.
import { alertsView } from './alertspage.js';
import { api, liveEvents, login, session, whenUnauthorized } from './api.js';
import { chainView } from './chainpage.js';
import { h, replace } from './dom.js';
import { drawdownsView } from './drawdownspage.js';
import { facilityView } from './facility.js';
import { ledgerView } from './ledgerpage.js';
import { mapView } from './mappage.js';
import { portfolioView } from './portfolio.js';
import { ratingDetailView, ratingsView } from './ratingspage.js';
import { reconciliationView } from './reconpage.js';

const main = document.getElementById('main');
const liveBadge = document.getElementById('live');
let view = null; // the page on screen: { onEvent(name, data), destroy() }
let stream = null;

const LIVE_LABEL = { live: 'Live', connecting: 'Connecting…', offline: 'Offline' };

function setLive(state) {
  liveBadge.dataset.state = state;
  liveBadge.querySelector('.live-label').textContent = LIVE_LABEL[state];
}

function startLive() {
  if (stream) return;
  stream = liveEvents({
    onState: setLive,
    onEvent: (name, data) => view?.onEvent?.(name, data),
  });
}

function stopLive() {
  stream?.stop();
  stream = null;
  setLive('offline');
}

function showSession(signedIn) {
  document.getElementById('session').hidden = !signedIn;
  document.getElementById('topnav').hidden = !signedIn;
  document.getElementById('user').textContent = signedIn ? session.user : '';
}

function loginView(container, reason) {
  const error = h('p.form-error', { role: 'alert' }, reason || '');
  const username = h('input#username', {
    name: 'username', autocomplete: 'username', required: true,
  });
  const password = h('input#password', {
    name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const submit = h('button.btn.btn-primary', { type: 'submit' }, 'Sign in');
  const form = h('form.login-card', {
    async onsubmit(event) {
      event.preventDefault();
      submit.disabled = true;
      error.textContent = '';
      try {
        await login(username.value.trim(), password.value);
        const next = sessionStorage.getItem('pledgewatch.next') || '#/';
        sessionStorage.removeItem('pledgewatch.next');
        if (location.hash === next) route();
        else location.hash = next;
      } catch (e) {
        error.textContent = e.message;
        submit.disabled = false;
      }
    },
  },
  h('h1', {}, 'Sign in'),
  h('p.muted', {}, 'Loan officers: live limits, LTV and pledge alerts across the portfolio.'),
  h('label', { for: 'username' }, 'Username'), username,
  h('label', { for: 'password' }, 'Password'), password,
  error, submit);
  replace(container, h('section.login', {}, form));
  username.focus();
  return {};
}

function route() {
  view?.destroy?.();
  view = null;
  const hash = location.hash || '#/';
  if (!session.token) {
    stopLive();
    showSession(false);
    if (hash !== '#/login') sessionStorage.setItem('pledgewatch.next', hash);
    view = loginView(main);
    return;
  }
  if (hash === '#/login') {
    location.hash = '#/';
    return;
  }
  showSession(true);
  startLive();
  const [nav, show] = page(hash);
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('active', link.dataset.nav === nav);
  }
  view = show();
}

/** The page for a hash: [the nav entry to highlight (or null), a function that shows it]. */
function page(hash) {
  const facility = hash.match(/^#\/facility\/([^/?]+)/);
  if (facility) return [null, () => facilityView(main, decodeURIComponent(facility[1]))];
  const alerts = hash.match(/^#\/alerts\/?(?:\?(.*))?$/);
  if (alerts) return ['alerts', () => alertsView(main, new URLSearchParams(alerts[1] || ''))];
  if (/^#\/map\/?$/.test(hash)) return ['map', () => mapView(main)];
  if (/^#\/chain\/?$/.test(hash)) return ['chain', () => chainView(main)];
  if (/^#\/drawdowns\/?$/.test(hash)) return ['drawdowns', () => drawdownsView(main)];
  if (/^#\/ledger\/?$/.test(hash)) return ['ledger', () => ledgerView(main)];
  const recon = hash.match(/^#\/reconciliation\/?(?:\?(.*))?$/);
  if (recon) return ['reconciliation', () => reconciliationView(main, new URLSearchParams(recon[1] || ''))];
  const rating = hash.match(/^#\/ratings\/([^/?]+)/);
  if (rating) return ['ratings', () => ratingDetailView(main, decodeURIComponent(rating[1]))];
  const ratings = hash.match(/^#\/ratings\/?(?:\?(.*))?$/);
  if (ratings) return ['ratings', () => ratingsView(main, new URLSearchParams(ratings[1] || ''))];
  return ['portfolio', () => portfolioView(main)];
}

whenUnauthorized(() => {
  if (!document.querySelector('.login')) {
    stopLive();
    sessionStorage.setItem('pledgewatch.next', location.hash || '#/');
    view?.destroy?.();
    showSession(false);
    view = loginView(main, 'Your session has ended; please sign in again.');
  }
});

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  sessionStorage.removeItem('pledgewatch.next');
  location.hash = '#/login';
});

window.addEventListener('hashchange', route);
route();

// A stale tab: check the token once so an expired session lands on the log-in form at once.
if (session.token) api('/auth/me').catch(() => {});
