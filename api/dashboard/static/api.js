// The officer API: log-in (token in sessionStorage), JSON calls with problem details, and the
// server-sent-event stream read with fetch() so that the Authorization header goes along.

const API = '/api/v1';
const TOKEN_KEY = 'pledgewatch.token';
const USER_KEY = 'pledgewatch.user';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get user() { return sessionStorage.getItem(USER_KEY); },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, user);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

// Called when the server refuses the token (expired, revoked): the app shows the log-in form.
let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

async function problem(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === 'string') return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join('; ');
    return body.title || response.statusText;
  } catch {
    return response.statusText;
  }
}

export async function login(username, password) {
  const form = new URLSearchParams({ username, password });
  const response = await fetch(`${API}/auth/token`, { method: 'POST', body: form });
  if (!response.ok) throw new ApiError(response.status, await problem(response));
  const { access_token: token } = await response.json();
  session.save(token, username);
  const me = await api('/auth/me');
  if (me.role !== 'officer' && me.role !== 'admin') {  // an enterprise or a warehouse operator
    session.clear();
    throw new ApiError(403, 'this dashboard is for bank officers');
  }
  return me;
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    session.clear();
    onUnauthorized();
  }
  if (!response.ok) throw new ApiError(response.status, await problem(response));
  return response.json();
}

// Endpoints that may not exist on every server yet (lots, releases, devices): the dashboard asks
// the OpenAPI document once and leaves out what is missing instead of calling it.
let openapi = null;
async function openApiDocument() {
  if (openapi === null) {
    try {
      const response = await fetch('/openapi.json');
      openapi = response.ok ? await response.json() : undefined;
    } catch {
      openapi = undefined;
    }
  }
  return openapi;
}

let paths = null;
async function knownPaths() {
  if (paths === null) {
    const doc = await openApiDocument();
    paths = doc ? new Set(Object.keys(doc.paths || {})) : undefined;
  }
  return paths;
}

function enumValues(schema, doc, depth = 0) {
  if (!schema || depth > 4) return [];
  if (Array.isArray(schema.enum)) return schema.enum;
  if (typeof schema.$ref === 'string' && schema.$ref.startsWith('#/components/schemas/')) {
    return enumValues(doc.components?.schemas?.[schema.$ref.split('/').pop()], doc, depth + 1);
  }
  return [...(schema.anyOf || []), ...(schema.oneOf || [])].flatMap((s) => enumValues(s, doc, depth + 1));
}

/** The values the query parameter `name` of `GET path` accepts, from the OpenAPI document. */
export async function queryValues(path, name) {
  const doc = await openApiDocument();
  const parameters = doc?.paths?.[API + path]?.get?.parameters || [];
  const parameter = parameters.find((p) => p.in === 'query' && p.name === name);
  return enumValues(parameter?.schema, doc);
}

/** Every item of a paged list (`path` with its query), asking `pageSize` at a time, up to `max`. */
export async function allPages(path, { pageSize = 500, max = 10000 } = {}) {
  const items = [];
  const join = path.includes('?') ? '&' : '?';
  let offset = 0;
  while (offset !== null && items.length < max) {
    const page = await api(`${path}${join}limit=${pageSize}&offset=${offset}`);
    items.push(...page.items);
    offset = page.next_offset;
  }
  return items;
}

/** `api(path)` if the server has the endpoint, else `null`. */
export async function optional(path) {
  const known = await knownPaths();
  const bare = API + path.split('?')[0];
  if (known && !known.has(bare)) return null;
  try {
    return await api(path);
  } catch (error) {
    if (error.status === 404 || error.status === 405) return null;
    throw error;
  }
}

export async function has(path) {
  const known = await knownPaths();
  return !known || known.has(API + path);
}

/**
 * Reads GET /api/v1/events until stop() is called, reconnecting with back-off.
 * onEvent(name, data) gets every `limit` and `alert` event; onState('connecting'|'live'|'offline').
 */
export function liveEvents({ onEvent, onState }) {
  let controller = null;
  let stopped = false;
  let retry = 1000;

  async function readStream() {
    controller = new AbortController();
    onState('connecting');
    const response = await fetch(`${API}/events`, {
      headers: { Authorization: `Bearer ${session.token}`, Accept: 'text/event-stream' },
      signal: controller.signal,
      cache: 'no-store',
    });
    if (response.status === 401) {
      session.clear();
      onUnauthorized();
      stopped = true;
      return;
    }
    if (!response.ok || !response.body) throw new ApiError(response.status, 'no event stream');
    onState('live');
    retry = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue; // comment: connected, heartbeat
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') name = text;
      else if (field === 'data') data.push(text);
    }
    if (!data.length) return;
    try {
      onEvent(name, JSON.parse(data.join('\n')));
    } catch (error) {
      console.warn('live update ignored', error);
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await readStream();
      } catch (error) {
        if (stopped) break;
      }
      if (stopped) break;
      onState('offline');
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, 15000);
    }
    onState('offline');
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}

/**
 * Sends a file's content as the body (`contentType`: text/csv, application/xml) and resolves to
 * the JSON answer; a refusal throws an ApiError carrying the problem's `errors` (a 422 names each
 * bad line: loc ['body', 'line', n, field]).
 */
export async function upload(path, body, contentType, { filename } = {}) {
  const headers = { Accept: 'application/json', 'Content-Type': contentType };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (filename) headers['X-Filename'] = filename.replace(/[^\x20-\x7e]/g, '_').slice(0, 200);
  const response = await fetch(API + path, { method: 'POST', headers, body });
  if (response.status === 401) {
    session.clear();
    onUnauthorized();
  }
  if (response.ok) return response.json();
  let problemBody = null;
  try {
    problemBody = await response.json();
  } catch {
    problemBody = null;
  }
  const error = new ApiError(response.status,
    typeof problemBody?.detail === 'string' ? problemBody.detail : response.statusText);
  error.errors = Array.isArray(problemBody?.errors) ? problemBody.errors : [];
  throw error;
}
