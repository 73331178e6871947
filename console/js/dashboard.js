// Dashboard: destinations' health (GET /api/destinations), records per minute in and out
// (GET /api/flow) and the top rejection reasons, refreshed every few seconds while shown.

import { api, session } from './api.js';
import { drawChart } from './chart.js';
import { age, clock, el, HEALTH_WORDS, last, num, sum } from './format.js';

const POLL_MS = 3000;
let timer = null;
let running = false;
let announce = () => {};
let lastHealth = new Map();  // destination -> status, to say a change out loud once

const $ = (id) => document.getElementById(id);

export function initDashboard(announcer) {
  announce = announcer;
  $('destinations-table').addEventListener('click', onDestinationAction);
}

export function showDashboard() {
  if (running) return;
  running = true;
  tick();
}

export function hideDashboard() {
  running = false;
  clearTimeout(timer);
  timer = null;
}

async function tick() {
  clearTimeout(timer);
  await refresh();
  if (running) timer = setTimeout(tick, POLL_MS);
}

async function refresh() {
  const [flow, destinations] = await Promise.allSettled([api.flow(), api.destinations()]);
  const problems = [];
  if (destinations.status === 'fulfilled') renderDestinations(destinations.value);
  else problems.push(`Destinations: ${destinations.reason.message}`);
  if (flow.status === 'fulfilled') renderFlow(flow.value);
  else problems.push(`Flow: ${flow.reason.message}`);
  const error = $('dashboard-error');
  error.hidden = problems.length === 0;
  error.textContent = problems.join(' · ');
  $('dashboard-updated').textContent = `Updated ${new Date().toLocaleTimeString('en-GB')} · refreshes every ${POLL_MS / 1000} s`;
}

function healthBadge(d) {
  const status = HEALTH_WORDS[d.status] ? d.status : 'failing';
  const word = HEALTH_WORDS[status];
  const cell = el('td', { 'data-label': 'Health' },
    el('span', { class: `health health-${status}`, 'data-status': status }, word));
  if (d.statusText && d.statusText.toLowerCase() !== word.toLowerCase())
    cell.append(el('span', { class: 'health-detail' }, d.statusText));
  return cell;
}

function renderDestinations(list) {
  const rows = Array.isArray(list) ? list : (list && list.destinations) || [];
  const tbody = $('destinations-table').querySelector('tbody');
  // Keep keyboard focus on the same button across a refresh.
  const focused = document.activeElement && document.activeElement.closest('#destinations-table')
    ? document.activeElement.getAttribute('data-destination') : null;
  const changes = [];
  tbody.replaceChildren(...rows.map((d) => {
    const paused = d.status === 'paused';
    const before = lastHealth.get(d.name);
    if (before && before !== d.status) changes.push(`${d.name} is now ${HEALTH_WORDS[d.status] || d.status}`);
    lastHealth.set(d.name, d.status);
    return el('tr', { class: `is-${d.status}`, 'data-destination': d.name },
      el('th', { scope: 'row', 'data-label': 'Destination' }, d.name, d.type ? el('span', { class: 'health-detail' }, d.type) : null),
      healthBadge(d),
      el('td', { class: 'num', 'data-label': 'Waiting' }, num(d.depth)),
      el('td', { class: 'num', 'data-label': 'Oldest waiting' }, d.depth ? age(d.oldestAgeSeconds) : '–'),
      el('td', { class: 'num', 'data-label': 'Delivered' }, num(d.delivered)),
      el('td', { class: 'num', 'data-label': 'Dead letters' }, num(d.dead)),
      el('td', { class: 'error-text', 'data-label': 'Last error' }, d.lastError || '–'),
      el('td', { 'data-label': 'Action' },
        el('button', {
          type: 'button', class: 'small', 'data-destination': d.name, 'data-action': paused ? 'resume' : 'pause',
          'aria-label': `${paused ? 'Resume' : 'Pause'} delivery to ${d.name}`,
          disabled: !session.can('operator'), title: session.can('operator') ? null : 'Pausing and resuming need the operator role',
        }, paused ? 'Resume' : 'Pause')));
  }));
  if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No destinations are configured.')));
  // One sentence first: what needs attention, so a failing destination is seen at once.
  const attention = rows.filter((d) => d.status !== 'ok').map((d) =>
    `${d.name} ${(HEALTH_WORDS[d.status] || d.status).toLowerCase()} (${num(d.depth)} waiting${d.depth ? `, oldest ${age(d.oldestAgeSeconds)}` : ''})`);
  const summary = $('health-summary');
  summary.classList.toggle('attention', rows.some((d) => d.status === 'failing' || d.status === 'retrying'));
  summary.textContent = !rows.length ? '' : attention.length
    ? `Needs attention: ${attention.join('; ')}.`
    : (rows.length === 1 ? 'The destination is delivering normally.' : `All ${rows.length} destinations are delivering normally.`);
  if (focused) tbody.querySelector(`button[data-destination="${CSS.escape(focused)}"]`)?.focus();
  if (changes.length) announce(changes.join('. '));
}

function renderFlow(flow) {
  const minutes = flow.minuteStarts || [];
  const inbound = Object.entries(flow.in || {});
  const outbound = Object.entries(flow.out || {});
  const totalIn = sum(inbound.flatMap(([, c]) => [sum(c.accepted), sum(c.rejected)]));
  const rejected = sum(inbound.map(([, c]) => sum(c.rejected)));
  const delivered = sum(outbound.map(([, d]) => sum(d.delivered)));
  const failed = sum(outbound.map(([, d]) => sum(d.failed)));

  drawChart($('chart-in').querySelector('.chart-body'), {
    minuteStarts: minutes, clock,
    series: inbound.map(([name, c]) => ({ label: name, values: (c.accepted || []).map((v, i) => Number(v) + Number((c.rejected || [])[i] || 0)) })),
    summary: `Records received per minute by channel: ${num(totalIn)} in the last 15 minutes, ${num(rejected)} of them rejected.`,
  });
  drawChart($('chart-out').querySelector('.chart-body'), {
    minuteStarts: minutes, clock,
    series: outbound.map(([name, d]) => ({ label: name, values: d.delivered || [] })),
    summary: `Records delivered per minute by destination: ${num(delivered)} in the last 15 minutes, ${num(failed)} failed.`,
  });

  const rows = [
    ...inbound.map(([name, c]) => ['In', name, last(c.accepted) + last(c.rejected), sum(c.accepted) + sum(c.rejected), sum(c.rejected)]),
    ...outbound.map(([name, d]) => ['Out', name, last(d.delivered), sum(d.delivered), sum(d.failed)]),
  ];
  const tbody = $('flow-table').querySelector('tbody');
  tbody.replaceChildren(...rows.map(([dir, name, lastMinute, total, bad]) =>
    el('tr', {},
      el('td', {}, dir),
      el('th', { scope: 'row' }, name),
      el('td', { class: 'num' }, num(lastMinute)),
      el('td', { class: 'num' }, num(total)),
      el('td', { class: 'num' }, num(bad)))));
  if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No records in the last 15 minutes.')));
  $('flow-total-in').textContent = num(totalIn);
  $('flow-total-in').dataset.value = String(totalIn);
  $('flow-total-rejected').textContent = num(rejected);
  $('flow-total-out').textContent = num(delivered);
  $('flow-total-out').dataset.value = String(delivered);
  $('flow-total-failed').textContent = num(failed);

  const reasons = Array.isArray(flow.topRejections) ? flow.topRejections : [];
  $('rejections-list').replaceChildren(...reasons.map((r) =>
    el('li', {}, el('span', { class: 'count' }, num(r.count)), ' × ', r.reason)));
  $('rejections-none').hidden = reasons.length > 0;
}

async function onDestinationAction(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const name = button.getAttribute('data-destination');
  const action = button.getAttribute('data-action');
  button.disabled = true;
  try {
    if (action === 'pause') await api.pause(name);
    else await api.resume(name);
    announce(action === 'pause' ? `Delivery to ${name} paused; records wait in order.` : `Delivery to ${name} resumed.`);
  } catch (e) {
    announce(`Could not ${action} ${name}: ${e.message}`);
    const error = $('dashboard-error');
    error.hidden = false;
    error.textContent = `Could not ${action} ${name}: ${e.message}`;
  }
  await refresh();
  // The row was redrawn: keep the keyboard on this destination's (now opposite) button.
  $('destinations-table').querySelector(`button[data-destination="${CSS.escape(name)}"]`)?.focus();
}
