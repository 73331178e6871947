// The broker's API, as the console uses it. Every call says who acts (X-Tellonce-Actor), so
// actions land on the message trail as done by "console". Errors come back as ApiError with the
// OperationOutcome's diagnostics, ready to show.

const ACTOR = 'console';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, params) {
  const query = params ? new URLSearchParams(params).toString() : '';
  const url = query ? `${path}?${query}` : path;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: { 'Accept': 'application/json', 'X-Tellonce-Actor': ACTOR },
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'The broker did not answer (is it running?)');
  }
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) {
    const issues = body && Array.isArray(body.issue) ? body.issue.map((i) => i.diagnostics).filter(Boolean) : [];
    throw new ApiError(res.status, issues.length ? issues.join('; ') : `The broker answered ${res.status} ${res.statusText}`);
  }
  return body;
}

// Drops empty values so that "any" filters are simply absent.
export function cleanFilters(filters) {
  const out = {};
  for (const [k, v] of Object.entries(filters)) if (v !== undefined && v !== null && String(v).trim() !== '') out[k] = String(v).trim();
  return out;
}

export const api = {
  flow: () => call('GET', '/api/flow'),
  destinations: () => call('GET', '/api/destinations'),
  messages: (filters, cursor, limit = 25) => call('GET', '/api/messages', { ...cleanFilters(filters), limit, ...(cursor ? { cursor } : {}) }),
  message: (id) => call('GET', `/api/messages/${encodeURIComponent(id)}`),
  replayOne: (id) => call('POST', `/api/messages/${encodeURIComponent(id)}/replay`),
  replayByFilter: (filters, dryRun) => call('POST', '/api/replay', { ...cleanFilters(filters), dryRun: dryRun ? 'true' : 'false' }),
  pause: (name) => call('POST', `/api/destinations/${encodeURIComponent(name)}/pause`),
  resume: (name) => call('POST', `/api/destinations/${encodeURIComponent(name)}/resume`),
};
