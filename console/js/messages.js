// Messages: search (GET /api/messages, newest first, cursor paging), one message's detail with
// its timeline and delivery attempts (GET /api/messages/{id}), and the replay actions.

import { api, session } from './api.js';
import { el, localToIso, when } from './format.js';

let announce = () => {};
let filters = {};       // the search the results show
let cursors = [];       // cursor of each page shown so far ('' for the first)
let nextCursor = null;
let currentId = null;

const $ = (id) => document.getElementById(id);

function readForm() {
  const form = new FormData($('search-form'));
  const out = {};
  for (const [k, v] of form.entries()) {
    if (k === 'since' || k === 'until') out[k] = localToIso(v);
    else if (k === 'nhsNumber') out[k] = String(v).replace(/\s+/g, '');
    else out[k] = v;
  }
  return out;
}

function showError(id, message) {
  const box = $(id);
  box.hidden = !message;
  box.textContent = message || '';
}

export function initMessages(announcer) {
  announce = announcer;
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    filters = readForm();
    cursors = [''];
    loadPage('', true);
  });
  $('search-form').addEventListener('reset', () => {
    setTimeout(() => { filters = {}; cursors = ['']; loadPage('', false); }, 0);
  });
  $('page-first').addEventListener('click', () => { cursors = ['']; loadPage('', true); });
  $('page-next').addEventListener('click', () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    loadPage(nextCursor, true);
  });
  $('replay-filter').addEventListener('click', startReplayByFilter);
  window.addEventListener('tellonce-role', () => {
    $('replay-filter').disabled = !session.can('operator');
    $('replay-filter').title = session.can('operator') ? '' : 'Replaying needs the operator role';
  });
  $('replay-confirm-no').addEventListener('click', closeReplayConfirm);
  $('replay-confirm-yes').addEventListener('click', confirmReplayByFilter);
  $('replay-confirm').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeReplayConfirm(); });
}

export function showMessages() {
  if (!cursors.length) { cursors = ['']; loadPage('', false); }
}

async function loadPage(cursor, moveFocus) {
  showError('messages-error', '');
  $('results-summary').textContent = 'Searching…';
  let page;
  try {
    page = await api.messages(filters, cursor);
  } catch (e) {
    showError('messages-error', `Search failed: ${e.message}`);
    $('results-summary').textContent = '';
    return;
  }
  const list = page.messages || [];
  nextCursor = page.next || null;
  const tbody = $('results-table').querySelector('tbody');
  tbody.replaceChildren(...list.map((m) =>
    el('tr', { 'data-id': m.id },
      el('td', {}, el('time', { datetime: m.receivedAt || '' }, when(m.receivedAt))),
      el('td', {}, el('a', { href: `#/messages/${encodeURIComponent(m.id)}`, class: 'mono' }, m.id)),
      el('td', {}, m.source || '–'),
      el('td', {}, m.resourceType || '–'),
      el('td', {}, el('span', { class: `state state-${m.state}` }, stateWords(m.state))))));
  const pageNo = cursors.length;
  const summary = list.length
    ? `Page ${pageNo}: ${list.length} message${list.length === 1 ? '' : 's'}, newest first${nextCursor ? '; older ones on the next page' : ''}.`
    : (pageNo > 1 ? 'No older messages.' : 'No messages match this search.');
  $('results-summary').textContent = summary;
  $('page-next').disabled = !nextCursor;
  $('page-first').disabled = pageNo <= 1;
  if (moveFocus) {
    announce(summary);
    $('results-title').focus();
  }
}

const STATE_WORDS = {
  accepted: 'Accepted', delivering: 'Delivering', delivered: 'Delivered', failed: 'Failed (dead letter)',
  unroutable: 'Unroutable', pending: 'Waiting', dead: 'Dead letter', held: 'Held in mailbox', expired: 'Expired',
};
const stateWords = (s) => STATE_WORDS[s] || s || '–';

// ---- replay by filter: a dry run says how many first, then the operator confirms ----

let pendingReplay = null;

async function startReplayByFilter() {
  const f = { ...readForm(), state: 'failed' };  // dead letters only, whatever state the search shows
  showError('messages-error', '');
  let dry;
  try {
    dry = await api.replayByFilter(f, true);
  } catch (e) {
    showError('messages-error', `Could not count the matching dead letters: ${e.message}`);
    return;
  }
  pendingReplay = f;
  const n = Number(dry.matched) || 0;
  const described = Object.entries(f).filter(([k, v]) => v && k !== 'state').map(([k, v]) => `${k} ${v}`).join(', ') || 'every dead letter';
  $('replay-confirm-text').textContent = n
    ? `${n} dead-lettered deliver${n === 1 ? 'y matches' : 'ies match'} (${described}). Replay ${n === 1 ? 'it' : 'them all'} now?`
    : `No dead-lettered deliveries match (${described}). Nothing to replay.`;
  $('replay-confirm-yes').hidden = n === 0;
  $('replay-confirm-yes').textContent = `Replay ${n}`;
  $('replay-confirm').hidden = false;
  $('replay-confirm-title').focus();
  announce($('replay-confirm-text').textContent);
}

function closeReplayConfirm() {
  $('replay-confirm').hidden = true;
  pendingReplay = null;
  $('replay-filter').focus();
}

async function confirmReplayByFilter() {
  if (!pendingReplay) return;
  const f = pendingReplay;
  $('replay-confirm-yes').disabled = true;
  try {
    const done = await api.replayByFilter(f, false);
    $('replay-confirm').hidden = true;
    pendingReplay = null;
    announce(`Replayed ${done.replayed ?? 0} deliveries.`);
    showResultNotice(`Replayed ${done.replayed ?? 0} of ${done.matched ?? 0} matching deliveries; they are being delivered again.`);
    $('replay-filter').focus();
    loadPage(cursors[cursors.length - 1] || '', false);
  } catch (e) {
    showError('messages-error', `Replay failed: ${e.message}`);
  } finally {
    $('replay-confirm-yes').disabled = false;
  }
}

function showResultNotice(text) {
  let box = $('messages-notice');
  if (!box) {
    box = el('p', { id: 'messages-notice', class: 'notice success' });
    $('messages-error').after(box);
  }
  box.textContent = text;
}

// ---- one message ----

export async function showMessage(id, { focus = true } = {}) {
  currentId = id;
  showError('message-error', '');
  $('message-title').textContent = `Message ${id}`;
  if (focus) $('message-title').focus();
  let m;
  try {
    m = await api.message(id);
  } catch (e) {
    $('message-body').replaceChildren();
    showError('message-error', e.status === 404 ? `No message with id ${id}.` : `Could not load the message: ${e.message}`);
    return;
  }
  if (currentId !== id) return;  // the operator moved on meanwhile
  renderMessage(m);
}

function facts(pairs) {
  return el('dl', { class: 'facts' }, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function attemptsOf(m) {
  if (Array.isArray(m.attempts)) return m.attempts;
  // Before the API lists attempts, the trail's delivery events say the same.
  return (m.events || []).filter((e) => ['attempt', 'delivered', 'dead'].includes(e.kind))
    .map((e) => ({ at: e.at, destination: e.destination, attempt: e.attempt, outcome: e.outcome, partnerCode: e.partnerCode, excerpt: e.reason }));
}

function renderMessage(m) {
  const deliveries = m.deliveries || [];
  const dead = deliveries.filter((d) => d.status === 'dead' || d.status === 'expired');
  const parts = [];

  const summary = el('section', { class: 'panel', 'aria-labelledby': 'msg-summary' },
    el('h2', { id: 'msg-summary' }, 'Summary'),
    facts([
      ['State', el('span', { class: `state state-${m.state}`, id: 'message-state' }, stateWords(m.state))],
      ['Received', when(m.receivedAt)],
      ['Source partner', m.source],
      ['Channel', m.channel],
      ['Resource type', m.resourceType],
      ['Event', m.event],
      ['Size', m.bodyBytes ? `${m.bodyBytes} bytes` : ''],
    ]));
  parts.push(summary);

  const actions = el('div', { class: 'actions' });
  const mayAct = session.can('operator');
  const needsOperator = 'Your role (viewer) may look but not act: replaying and viewing records need the operator role.';
  if (dead.length) {
    actions.append(el('button', { type: 'button', class: 'primary', id: 'replay-one', disabled: !mayAct,
      title: mayAct ? null : needsOperator, 'aria-describedby': mayAct ? null : 'role-note', onclick: () => replayOne(m.id) },
    `Replay to ${dead.map((d) => d.destination).join(', ')}`));
  }
  actions.append(el('button', { type: 'button', id: 'view-body', disabled: !mayAct, title: mayAct ? null : needsOperator,
    'aria-describedby': mayAct ? null : 'role-note', onclick: () => askReason(m.id) }, 'View record…'));
  actions.append(el('button', { type: 'button', id: 'message-refresh', onclick: () => showMessage(m.id, { focus: false }) }, 'Refresh'));
  summary.append(actions);
  if (!mayAct) summary.append(el('p', { class: 'muted', id: 'role-note' }, needsOperator));
  // Viewing a record is recorded with who and why: the reason is asked for first.
  summary.append(el('form', { id: 'reason-form', class: 'confirm', hidden: true, onsubmit: (e) => { e.preventDefault(); viewBody(m.id); } },
    el('label', { for: 'reason-input' }, 'Why do you need to see this record? (recorded with your name on its trail; no patient details)'),
    el('input', { id: 'reason-input', type: 'text', required: true, maxlength: 200, autocomplete: 'off' }),
    el('button', { type: 'submit', class: 'primary', id: 'reason-ok' }, 'View record'),
    el('p', { id: 'body-error', class: 'notice error', role: 'alert', hidden: true })));
  summary.append(el('pre', { id: 'record-body', class: 'record-body', hidden: true }));

  parts.push(el('section', { class: 'panel', 'aria-labelledby': 'msg-deliveries' },
    el('h2', { id: 'msg-deliveries' }, 'Deliveries'),
    el('div', { class: 'table-wrap' },
      el('table', { id: 'deliveries-table' },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Destination'), el('th', { scope: 'col' }, 'Status'),
          el('th', { scope: 'col', class: 'num' }, 'Attempts'), el('th', { scope: 'col' }, 'Next attempt'),
          el('th', { scope: 'col' }, 'Last error'))),
        el('tbody', {}, deliveries.length ? deliveries.map((d) => el('tr', { 'data-destination': d.destination },
          el('th', { scope: 'row' }, d.destination),
          el('td', {}, el('span', { class: `state state-${d.status}` }, stateWords(d.status))),
          el('td', { class: 'num' }, String(d.attempts ?? 0)),
          el('td', {}, when(d.nextAttemptAt)),
          el('td', { class: 'error-text' }, d.lastError || '–')))
          : el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No destinations (not routed).')))))));

  const attempts = attemptsOf(m);
  parts.push(el('section', { class: 'panel', 'aria-labelledby': 'msg-attempts' },
    el('h2', { id: 'msg-attempts' }, 'Delivery attempts'),
    attempts.length
      ? el('div', { class: 'table-wrap' }, el('table', { id: 'attempts-table' },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Time'), el('th', { scope: 'col' }, 'Destination'), el('th', { scope: 'col', class: 'num' }, 'Attempt'),
          el('th', { scope: 'col' }, 'Outcome'), el('th', { scope: 'col' }, 'Partner answered'), el('th', { scope: 'col' }, 'Excerpt of the answer'))),
        el('tbody', {}, attempts.map((a) => el('tr', {},
          el('td', {}, el('time', { datetime: a.at || a.time || '' }, when(a.at || a.time))),
          el('td', {}, a.destination || '–'),
          el('td', { class: 'num' }, a.attempt ?? '–'),
          el('td', {}, OUTCOME_WORDS[a.outcome] || a.outcome || '–'),
          el('td', {}, a.partnerCode || '–'),
          el('td', {}, (a.excerpt || a.answerExcerpt || a.reason) ? el('pre', { class: 'excerpt' }, a.excerpt || a.answerExcerpt || a.reason) : '–'))))))
      : el('p', { class: 'muted' }, 'No delivery attempts yet.')));

  parts.push(el('section', { class: 'panel', 'aria-labelledby': 'msg-timeline' },
    el('h2', { id: 'msg-timeline' }, 'Timeline'),
    el('ol', { class: 'timeline', id: 'timeline' }, (m.events || []).map((e) =>
      el('li', { class: `kind-${e.kind}` },
        el('time', { datetime: e.at || '' }, when(e.at)),
        el('span', { class: 'kind' }, kindWords(e.kind)),
        e.actor ? el('span', { class: 'muted' }, ` by ${e.actor}`) : null,
        e.detail ? el('div', {}, e.detail) : null)))));

  $('message-body').replaceChildren(...parts);
}

const OUTCOME_WORDS = { ok: 'Accepted by the partner', retryable: 'Failed, will retry', permanent: 'Refused (not retried)', unknown: 'Unknown' };

const KIND_WORDS = {
  received: 'Received', validated: 'Validated', routed: 'Routed', unroutable: 'Unroutable', duplicate: 'Duplicate',
  attempt: 'Delivery attempt', delivered: 'Delivered', dead: 'Dead letter', held: 'Held', expired: 'Expired',
  replayed: 'Replayed', paused: 'Paused', resumed: 'Resumed',
};
const kindWords = (k) => KIND_WORDS[k] || k;

function askReason() {
  $('reason-form').hidden = false;
  $('reason-input').focus();
}

async function viewBody(id) {
  const reason = $('reason-input').value.trim();
  if (!reason) return;
  try {
    const text = await api.body(id, reason);
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as it is */ }
    $('record-body').textContent = shown;
    $('record-body').hidden = false;
    $('reason-form').hidden = true;
  } catch (e) {
    $('body-error').textContent = e.message;
    $('body-error').hidden = false;
  }
}

async function replayOne(id) {
  const button = $('replay-one');
  if (button) button.disabled = true;
  try {
    const r = await api.replayOne(id);
    announce(`Replayed to ${r.replayed ?? 0} destination${r.replayed === 1 ? '' : 's'}; delivering again.`);
  } catch (e) {
    showError('message-error', `Replay failed: ${e.message}`);
    if (button) button.disabled = false;
    return;
  }
  await showMessage(id, { focus: false });
  $('message-refresh')?.focus();
  // Follow it for a little while: the redelivery usually lands within seconds.
  for (let i = 0; i < 10 && currentId === id; i++) {
    await new Promise((r) => setTimeout(r, 1500));
    if (currentId !== id || document.getElementById('view-message').hidden) return;
    await showMessage(id, { focus: false });
    const state = $('message-state')?.textContent;
    if (state === stateWords('delivered')) { announce(`Message ${id} delivered.`); return; }
  }
}
