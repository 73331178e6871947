// The broker's API, as the console uses it. Every call signs in with the operator's token
// (kept in sessionStorage: gone when the tab closes) and says it comes from the console
// (X-Tellonce-Actor), so actions land on the trail as "NAME via console". Errors come back as
// ApiError with the OperationOutcome's diagnostics, ready to show; a 401 signs out.

const ACTOR = 'console';
const TOKEN_KEY = 'tellonce-token';
const ROLES = ['metrics', 'viewer', 'operator', 'admin'];
let who = { name: '', role: 'viewer' };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY) || '',
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token.trim()),
  signOut: () => { sessionStorage.removeItem(TOKEN_KEY); who = { name: '', role: 'viewer' }; },
  set: (w) => { who = w; },
  who: () => who,
  // Whether the signed-in operator's role reaches `role` (viewer < operator < admin).
  can: (role) => ROLES.indexOf(who.role) >= ROLES.indexOf(role),
};

async function call(method, path, params, extraHeaders = {}, raw = false) {
  const query = params ? new URLSearchParams(params).toString() : '';
  const url = query ? `${path}?${query}` : path;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: { 'Accept': 'application/json', 'X-Tellonce-Actor': ACTOR, 'Authorization': `Bearer ${session.token()}`, ...extraHeaders },
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'The broker did not answer (is it running?)');
  }
  const text = await res.text();
  if (raw && res.ok) return text;
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) {
    const issues = body && Array.isArray(body.issue) ? body.issue.map((i) => i.diagnostics).filter(Boolean) : [];
    if (res.status === 401) window.dispatchEvent(new CustomEvent('tellonce-signed-out'));
    throw new ApiError(res.status, issues.length ? issues.join('; ') : `The broker answered ${res.status} ${res.statusText}`);
  }
  return body;
}

// The reason typed in the header for actions, as a header when there is one.
function actionReason() {
  const reason = (document.getElementById('action-reason')?.value || '').trim();
  return reason ? { 'X-Tellonce-Reason': reason } : {};
}

// Drops empty values so that "any" filters are simply absent.
export function cleanFilters(filters) {
  const out = {};
  for (const [k, v] of Object.entries(filters)) if (v !== undefined && v !== null && String(v).trim() !== '') out[k] = String(v).trim();
  return out;
}

export const api = {
  whoami: () => call('GET', '/api/whoami'),
  flow: () => call('GET', '/api/flow'),
  destinations: () => call('GET', '/api/destinations'),
  messages: (filters, cursor, limit = 25) => call('GET', '/api/messages', { ...cleanFilters(filters), limit, ...(cursor ? { cursor } : {}) }),
  message: (id) => call('GET', `/api/messages/${encodeURIComponent(id)}`),
  // The stored record; the reason goes on the message's trail with the operator's name.
  body: (id, reason) => call('GET', `/api/messages/${encodeURIComponent(id)}/body`, null, { 'X-Tellonce-Reason': reason }, true),
  // Actions carry the operator's reason (the header's field), recorded with their name.
  replayOne: (id) => call('POST', `/api/messages/${encodeURIComponent(id)}/replay`, null, actionReason()),
  replayByFilter: (filters, dryRun) => call('POST', '/api/replay', { ...cleanFilters(filters), dryRun: dryRun ? 'true' : 'false' }, actionReason()),
  pause: (name) => call('POST', `/api/destinations/${encodeURIComponent(name)}/pause`, null, actionReason()),
  resume: (name) => call('POST', `/api/destinations/${encodeURIComponent(name)}/resume`, null, actionReason()),
};
