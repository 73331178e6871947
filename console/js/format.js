// Small formatting helpers shared by the views. Nothing here touches the page.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

const numberFormat = new Intl.NumberFormat('en-GB');
export const num = (n) => (typeof n === 'number' && Number.isFinite(n) ? numberFormat.format(n) : '–');

// "2 h 5 min", "45 s": how long something has waited.
export function age(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} days ${h % 24} h`;
}

export function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString('en-GB', { day: '2-digit', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
}

export const sum = (xs) => (Array.isArray(xs) ? xs.reduce((a, b) => a + (Number(b) || 0), 0) : 0);
export const last = (xs) => (Array.isArray(xs) && xs.length ? Number(xs[xs.length - 1]) || 0 : 0);

// The words for a destination's health; the API gives statusText, this is the fallback.
export const HEALTH_WORDS = { ok: 'OK', retrying: 'Retrying', paused: 'Paused', failing: 'Failing' };

// "2025-01-01T10:00" from a datetime-local input, as an ISO time the API takes.
export function localToIso(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
