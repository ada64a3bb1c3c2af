// Ledger: the verifiable log (RFC 9162). The current signed tree head (size, root, time, key,
// signature) with a download to keep it, the newest entries 25 at a time, and per entry "Verify
// this event": the browser fetches the entry with its inclusion proof against the head shown,
// recomputes the leaf hash from the entry's canonical text with WebCrypto, walks the audit path
// (RFC 9162 §2.1.3.2) and compares with the head's root; where the browser's WebCrypto has
// Ed25519 it also checks the head's signature. Nothing here trusts the server's own verdict.
import { api } from './api.js';
import { fmt, h, note, pill, replace } from './dom.js';

export const PAGE_SIZE = 25;
const LOG_ID = 'pledgewatch';
// the tables the capture triggers record (schema/migrations/0014_ledger.sql, 0016_reconciliation.sql)
const TABLES = ['alert_events', 'drawdowns', 'inspections', 'limit_snapshots', 'prices', 'programmes',
  'receivables', 'reconciliation_breaks', 'release_orders', 'repayments', 'statement_imports',
  'stock_ledger', 'voucher_payments', 'vouchers'];

// --- bytes and hashes ---------------------------------------------------------------------------

function hexToBytes(hex) {
  if (typeof hex !== 'string' || hex.length % 2 || /[^0-9a-f]/i.test(hex)) {
    throw new Error(`not hex: ${String(hex).slice(0, 20)}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function base64ToBytes(text) {
  const raw = atob(text);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function sha256(...parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const buffer = new Uint8Array(size);
  let at = 0;
  for (const p of parts) { buffer.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buffer));
}

const LEAF = Uint8Array.of(0x00);
const NODE = Uint8Array.of(0x01);

/** RFC 9162 §2.1.1: the leaf hash of an entry's canonical text (SHA-256(0x00 || UTF-8)). */
export function leafHash(text) {
  return sha256(LEAF, new TextEncoder().encode(text));
}

function nodeHash(left, right) {
  return sha256(NODE, left, right);
}

function equal(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * RFC 9162 §2.1.3.2: the root the audit path leads to from the leaf hash at `index` of a tree of
 * `size` leaves; throws with the reason when the path cannot be for that position.
 */
export async function rootFromInclusion(leaf, index, size, path) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn < 0n || fn > sn) throw new Error(`leaf ${index} is not in a tree of size ${size}`);
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) throw new Error('the audit path is too long');
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error('the audit path is too short');
  return r;
}

/**
 * RFC 9162 §2.1.4.2: throws with the reason unless the tree of `second` leaves with `secondRoot`
 * extends the tree of `first` leaves with `firstRoot` (roots and proof as bytes).
 */
export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (first < 0 || first > second) throw new Error(`size ${first} cannot be a prefix of size ${second}`);
  if (first === 0) {
    if (proof.length) throw new Error('a proof from the empty tree is empty');
    return;
  }
  if (first === second) {
    if (proof.length) throw new Error('a proof between equal sizes is empty');
    if (!equal(firstRoot, secondRoot)) throw new Error('the same size has two different roots');
    return;
  }
  if (!proof.length) throw new Error('the consistency proof is empty');
  const c = [...proof];
  if ((first & (first - 1)) === 0) c.unshift(firstRoot);
  let fn = BigInt(first) - 1n;
  let sn = BigInt(second) - 1n;
  while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = c[0];
  let sr = c[0];
  for (const p of c.slice(1)) {
    if (sn === 0n) throw new Error('the consistency proof is too long');
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(p, fr);
      sr = await nodeHash(p, sr);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      sr = await nodeHash(sr, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error('the consistency proof is too short');
  if (!equal(fr, firstRoot)) throw new Error('the consistency proof does not lead to the kept root');
  if (!equal(sr, secondRoot)) throw new Error('the consistency proof does not lead to the current root');
}

/** The bytes a head's signature covers: canonical JSON, keys sorted, no whitespace. */
export function headMessage(head) {
  return new TextEncoder().encode(
    `{"log":${JSON.stringify(LOG_ID)},"root_hash":${JSON.stringify(head.root_hash)},`
    + `"timestamp":${Number(head.timestamp)},"tree_size":${Number(head.tree_size)}}`);
}

/**
 * Checks the head's Ed25519 signature with WebCrypto: 'valid', 'invalid', or 'unsupported' when
 * this browser's WebCrypto has no Ed25519, or the head is signed with another algorithm (SM2):
 * then it was not checked here.
 */
export async function checkSignature(head) {
  if ((head.algorithm || 'ed25519') !== 'ed25519') return 'unsupported'; // SM2 (over SM3): not in WebCrypto
  let key;
  try {
    key = await crypto.subtle.importKey('raw', base64ToBytes(head.public_key), { name: 'Ed25519' },
      false, ['verify']);
  } catch (error) {
    if (error?.name === 'NotSupportedError' || error?.name === 'TypeError') return 'unsupported';
    return 'invalid'; // a key that does not import is no Ed25519 public key
  }
  try {
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, base64ToBytes(head.signature),
      headMessage(head));
    return ok ? 'valid' : 'invalid';
  } catch (error) {
    return error?.name === 'NotSupportedError' ? 'unsupported' : 'invalid';
  }
}

/**
 * Verifies one entry against `head` (the head the page shows, or the latest one): the entry with
 * its audit path comes from the API; everything else is computed here. Returns
 * { ok, reason, checks: [[label, ok|null, detail]], head, leaf, signature }.
 */
export async function verifyEntry(leafIndex, head) {
  const query = head && leafIndex < head.tree_size ? `?tree_size=${head.tree_size}` : '';
  const proof = await api(`/ledger/entries/${leafIndex}${query}`);
  const checks = [];
  const result = (ok, reason) => ({ ok, reason, checks, proof });
  const against = head && proof.tree_size === head.tree_size ? head : proof.head;
  if (!proof.audit_path || !against) {
    return result(false, 'not yet under a signed head: the sequencer signs one every 1,000 entries or 10 s');
  }
  if (proof.leaf_index !== leafIndex) return result(false, `the API answered entry ${proof.leaf_index}, not ${leafIndex}`);
  if (proof.tree_size !== against.tree_size) {
    return result(false, `the proof is for size ${proof.tree_size}, the head for ${against.tree_size}`);
  }
  if (proof.head && proof.head.root_hash !== against.root_hash) {
    checks.push(['Head', false, `the API proved against root ${proof.head.root_hash}, the head shown has ${against.root_hash}`]);
    return result(false, 'the API gave another root for the head shown: the log was rewritten');
  }

  // the entry's text says what the index says
  let body;
  try {
    body = JSON.parse(proof.entry);
  } catch {
    return result(false, 'the entry text is not JSON');
  }
  const same = body && body.table === proof.table && body.op === proof.op && body.key === proof.key;
  checks.push(['Entry text', same, same ? `${body.table} ${body.op} ${body.key}`
    : `the text says ${body?.table} ${body?.op} ${body?.key}, the log's index ${proof.table} ${proof.op} ${proof.key}`]);
  if (!same) return result(false, 'the entry text does not name the row the log lists');

  const leaf = await leafHash(proof.entry);
  checks.push(['Leaf hash', null, `SHA-256(0x00 ‖ entry) = ${bytesToHex(leaf)}`]);
  let root;
  try {
    root = await rootFromInclusion(leaf, proof.leaf_index, against.tree_size,
      proof.audit_path.map(hexToBytes));
  } catch (error) {
    checks.push(['Audit path', false, error.message]);
    return result(false, error.message);
  }
  const rootOk = equal(root, hexToBytes(against.root_hash));
  checks.push(['Root', rootOk, rootOk
    ? `${proof.audit_path.length} hashes lead to the signed root ${against.root_hash} of ${against.tree_size} entries`
    : `the audit path leads to ${bytesToHex(root)}, the signed head's root is ${against.root_hash}`]);
  const signature = await checkSignature(against);
  checks.push(['Signature', signature === 'unsupported' ? null : signature === 'valid', SIGNATURE_TEXT[signature](against)]);
  if (!rootOk) {
    return result(false, 'the entry no longer matches the signed head: its text was changed after it was appended');
  }
  if (signature === 'invalid') return result(false, 'the signed head\'s signature does not verify');
  return { ...result(true, signature === 'valid'
    ? 'included in the signed head, signature verified'
    : 'included in the signed head (signature not checked in the browser)'), signature };
}

const SIGNATURE_TEXT = {
  valid: (h) => `Ed25519 signature of key ${h.key_id} verified in the browser`,
  invalid: (h) => `the Ed25519 signature does not verify with key ${h.key_id}`,
  unsupported: (h) => ((h.algorithm || 'ed25519') === 'ed25519'
    ? 'not checked in the browser (this browser\'s WebCrypto has no Ed25519)'
    : `not checked in the browser (WebCrypto has no ${String(h.algorithm).toUpperCase()}): check it with pledgewatch ledger verify`),
};

/** A head file someone kept (the download below, or `pledgewatch ledger head`), checked for shape. */
function parseKeptHead(text) {
  const kept = JSON.parse(text);
  const fields = ['tree_size', 'root_hash', 'timestamp', 'key_id', 'public_key', 'signature'];
  const missing = fields.filter((f) => kept?.[f] === undefined || kept?.[f] === null);
  if (missing.length) throw new Error(`not a signed tree head: no ${missing.join(', ')}`);
  if (!Number.isSafeInteger(kept.tree_size) || kept.tree_size < 0) throw new Error('tree_size is not a size');
  hexToBytes(kept.root_hash);
  return kept;
}

/**
 * Today's log extends a head someone kept: the kept head's signature, then the consistency proof
 * from its size to `current` (the head shown), checked here. Returns { ok, reason, checks, signature }.
 */
export async function checkKeptHead(kept, current) {
  const checks = [];
  const result = (ok, reason, extra = {}) => ({ ok, reason, checks, ...extra });
  const signature = await checkSignature(kept);
  checks.push(['Kept signature', signature === 'unsupported' ? null : signature === 'valid', SIGNATURE_TEXT[signature](kept)]);
  if (signature === 'invalid') return result(false, 'the kept head\'s signature does not verify: it is not a head this log signed', { signature });
  if (current.public_key !== kept.public_key) {
    checks.push(['Key', null, `the kept head was signed with key ${kept.key_id}, the current one with ${current.key_id}`]);
  }
  if (kept.tree_size > current.tree_size) {
    return result(false, `the kept head covers ${kept.tree_size} entries, the log's latest signed head ${current.tree_size}: entries were removed`, { signature });
  }
  const proof = await api(`/ledger/consistency?first=${kept.tree_size}&second=${current.tree_size}`);
  if (proof.second_root !== current.root_hash) {
    return result(false, 'the API gave another root for the current head', { signature });
  }
  try {
    await verifyConsistency(kept.tree_size, current.tree_size, hexToBytes(kept.root_hash),
      hexToBytes(current.root_hash), proof.proof.map(hexToBytes));
  } catch (error) {
    checks.push(['Consistency', false, error.message]);
    return result(false, `today's log does not extend the kept head: ${error.message} (the history was rewritten)`, { signature });
  }
  checks.push(['Consistency', true, `${proof.proof.length} hashes prove that the ${current.tree_size} entries `
    + `signed now begin with the ${kept.tree_size} entries of the kept head (root ${kept.root_hash})`]);
  return result(true, `the log extends the kept head of ${kept.tree_size} entries`, { signature });
}

// --- the page -----------------------------------------------------------------------------------

function headCard(head, download, keptForm) {
  if (!head) return note('No tree head has been signed yet: the sequencer signs one every 1,000 entries or 10 s.');
  const row = (label, value, cls) => h('tr', {}, h('th', {}, label), h(`td${cls || ''}`, {}, value));
  return h('div.card-body', {},
    h('table.evidence.head-table#ledger-head', { dataset: { treeSize: head.tree_size, root: head.root_hash } },
      h('tbody', {},
        row('Tree size', h('span#head-size', {}, String(head.tree_size))),
        row('Root hash', h('span.mono.hash#head-root', {}, head.root_hash)),
        row('Signed', `${fmt.time(head.timestamp)} (${fmt.ago(head.timestamp)})`),
        row('Key id', h('span.mono', {}, head.key_id), ''),
        row('Algorithm', head.algorithm),
        row('Public key', h('span.mono.hash', {}, head.public_key)),
        row('Signature', h('span.mono.hash#head-signature', {}, head.signature)))),
    h('div.actions', {}, download,
      h('span.muted', {}, 'Keep it: a later log must extend it (ledger verify --head FILE).')),
    keptForm);
}

function verdictView(outcome) {
  const box = h(`div.verdict.verdict-${outcome.ok ? 'ok' : 'bad'}`, {
    dataset: { verdict: outcome.ok ? 'verified' : 'failed', signature: outcome.signature || '' },
    role: 'status',
  },
  h('strong.verdict-head', {}, outcome.ok ? '✓ verified' : '✗ not verified', ': ', outcome.reason));
  if (outcome.checks.length) {
    box.append(h('ul.verdict-checks', {}, outcome.checks.map(([label, ok, detail]) => h('li', {
      dataset: { check: label.toLowerCase().replace(/\s+/g, '-') },
    }, h(`span.check.${ok === null ? 'check-unknown' : ok ? 'check-yes' : 'check-no'}`, {}, label),
    ' ', h('span.detail', {}, detail)))));
  }
  if (outcome.proof?.entry) {
    box.append(h('details.evidence-box', {}, h('summary', {}, 'Entry text (what the leaf hash covers)'),
      h('pre.explain.entry-text', {}, outcome.proof.entry)));
  }
  return box;
}

export function ledgerView(container) {
  const headBox = h('div', {}, h('p.loading.card-body', {}, 'Loading the signed head…'));
  const entriesBox = h('div.card-body.flush', {}, h('p.loading', {}, 'Loading entries…'));
  const pageInfo = h('span.muted#ledger-page-info');
  const newer = h('button.btn.btn-ghost#ledger-newer', { type: 'button', disabled: true }, '← Newer');
  const older = h('button.btn.btn-ghost#ledger-older', { type: 'button', disabled: true }, 'Older →');
  const download = h('a.btn.btn-secondary#head-download', { download: 'pledgewatch-head.json', href: '#', hidden: true },
    'Download head');
  const refresh = h('button.btn.btn-ghost#ledger-refresh', { type: 'button' }, 'Refresh');
  const tableFilter = h('select#ledger-table-filter', { name: 'table' }, h('option', { value: '' }, 'Any table'),
    TABLES.map((t) => h('option', { value: t }, t)));
  const keyFilter = h('input#ledger-key', { type: 'search', name: 'key', maxlength: 200, placeholder: 'e.g. a drawdown id' });
  const filters = h('form.filters#ledger-filters', {},
    h('label.filter', { for: 'ledger-table-filter' }, h('span.filter-label', {}, 'Table'), tableFilter),
    h('label.filter', { for: 'ledger-key' }, h('span.filter-label', {}, 'Row key'), keyFilter),
    h('button.btn.btn-ghost', { type: 'submit' }, 'Filter'));
  const keptFile = h('input#kept-head-file', { type: 'file', accept: '.json,application/json', name: 'kept-head' });
  const keptResult = h('div#kept-head-result');
  const keptForm = h('div.kept-head', {},
    h('label.filter', { for: 'kept-head-file' }, h('span.filter-label', {}, 'Check a head you kept'), keptFile),
    keptResult);
  replace(container,
    h('div.page-head', {}, h('h1', {}, 'Ledger'),
      h('span.muted', {}, 'append-only Merkle log (RFC 9162) of every event that moves money or collateral'),
      refresh),
    h('section.card#head-card', {}, h('header.card-head', {}, h('h2', {}, 'Current signed tree head'),
      h('span.muted', {}, 'signed over {"log","root_hash","timestamp","tree_size"}')), headBox),
    h('section.card#entries-card', {}, h('header.card-head', {}, h('h2', {}, 'Entries'),
      h('span.muted', {}, 'newest first · "Verify this event" checks it here, in the browser')),
    h('div.card-body.filters-head', {}, filters),
    entriesBox,
    h('footer.card-foot', {}, pageInfo, h('div.actions.pager', {}, newer, older))));

  let gone = false;
  let offset = 0;
  let head = null;
  let blobUrl = null;
  const verdicts = new Map(); // leaf index -> outcome shown under its row

  function setDownload(current) {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = null;
    download.hidden = !current;
    if (!current) return;
    blobUrl = URL.createObjectURL(new Blob([`${JSON.stringify(current, null, 2)}\n`], { type: 'application/json' }));
    download.href = blobUrl;
    download.setAttribute('download', `pledgewatch-head-${current.tree_size}.json`);
  }

  async function loadHead() {
    try {
      head = await api('/ledger/head');
    } catch (error) {
      if (error.status === 401) return;
      head = null;
      if (error.status !== 404) { replace(headBox, note(error.message, 'error')); return; }
    }
    if (gone) return;
    setDownload(head);
    replace(headBox, headCard(head, download, keptForm));
  }

  function verifyButton(entry, detailRow) {
    const button = h('button.btn.btn-secondary.verify-btn', { type: 'button', dataset: { action: 'verify' } },
      'Verify this event');
    button.addEventListener('click', async () => {
      button.disabled = true;
      detailRow.hidden = false;
      replace(detailRow.firstChild, h('p.loading', {}, 'Verifying…'));
      let outcome;
      try {
        outcome = await verifyEntry(entry.leaf_index, head);
      } catch (error) {
        if (error.status === 401) return;
        outcome = { ok: false, reason: error.message, checks: [] };
      }
      if (gone) return;
      verdicts.set(entry.leaf_index, outcome);
      replace(detailRow.firstChild, verdictView(outcome));
      button.disabled = false;
    });
    return button;
  }

  function entryRows(entry) {
    const detail = h('tr.verify-row', { hidden: !verdicts.has(entry.leaf_index), dataset: { leaf: entry.leaf_index } },
      h('td', { colspan: 7 }));
    if (verdicts.has(entry.leaf_index)) replace(detail.firstChild, verdictView(verdicts.get(entry.leaf_index)));
    const signed = head && entry.leaf_index < head.tree_size;
    const row = h('tr.entry-row', { dataset: { leaf: entry.leaf_index, table: entry.table, op: entry.op, key: entry.key } },
      h('td.num.mono', {}, String(entry.leaf_index)),
      h('td', {}, entry.table),
      h('td', {}, pill(entry.op, entry.op === 'delete' ? 'danger' : entry.op === 'insert' ? 'info' : 'neutral')),
      h('td.mono.entry-key', {}, entry.key),
      h('td', {}, entry.parties.length ? entry.parties.join(', ') : h('span.muted', {}, '—')),
      h('td.nowrap', { title: fmt.time(entry.appended_at) }, fmt.time(entry.appended_at),
        signed ? null : h('div.sub', {}, 'not yet under a signed head')),
      h('td.actions', {}, verifyButton(entry, detail)));
    return [row, detail];
  }

  async function loadEntries() {
    try {
      const query = new URLSearchParams({ limit: PAGE_SIZE, offset });
      if (tableFilter.value) query.set('table', tableFilter.value);
      if (keyFilter.value.trim()) query.set('key', keyFilter.value.trim());
      const page = await api(`/ledger/entries?${query}`);
      if (gone) return;
      if (!page.items.length) {
        const filtered = tableFilter.value || keyFilter.value.trim();
        replace(entriesBox, note(offset ? 'No older entries.' : filtered ? 'No entry matches.' : 'The log is empty.'));
      } else {
        replace(entriesBox, h('table.table.compact#ledger-table', {},
          h('thead', {}, h('tr', {}, h('th.num', {}, 'Leaf'), h('th', {}, 'Table'), h('th', {}, 'Op'),
            h('th', {}, 'Key'), h('th', {}, 'Parties'), h('th', {}, 'Appended'), h('th', {}, ''))),
          h('tbody', {}, page.items.flatMap(entryRows))));
      }
      const first = page.items[0]?.leaf_index;
      const last = page.items[page.items.length - 1]?.leaf_index;
      pageInfo.textContent = page.items.length ? `entries ${first} … ${last}` : '';
      newer.disabled = offset === 0;
      older.disabled = page.next_offset === null;
    } catch (error) {
      if (!gone && error.status !== 401) replace(entriesBox, note(error.message, 'error'));
    }
  }

  async function load() {
    await loadHead();
    await loadEntries();
  }

  keptFile.addEventListener('change', async () => {
    const chosen = keptFile.files?.[0];
    if (!chosen || !head) return;
    replace(keptResult, h('p.loading', {}, `Checking ${chosen.name}…`));
    let outcome;
    try {
      outcome = await checkKeptHead(parseKeptHead(await chosen.text()), head);
    } catch (error) {
      if (error.status === 401) return;
      outcome = { ok: false, reason: error.message, checks: [] };
    }
    if (gone) return;
    replace(keptResult, verdictView(outcome));
    keptFile.value = '';
  });
  newer.addEventListener('click', () => { offset = Math.max(0, offset - PAGE_SIZE); loadEntries(); });
  older.addEventListener('click', () => { offset += PAGE_SIZE; loadEntries(); });
  filters.addEventListener('submit', (event) => { event.preventDefault(); offset = 0; loadEntries(); });
  tableFilter.addEventListener('change', () => { offset = 0; loadEntries(); });
  refresh.addEventListener('click', () => { verdicts.clear(); load(); });
  load();
  return {
    destroy() {
      gone = true;
      if (blobUrl) URL.revokeObjectURL(blobUrl);
    },
  };
}
