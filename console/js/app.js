// The console's entry point: a hash router (#/dashboard, #/messages, #/messages/{id}) showing
// one view at a time, moving focus to the view's heading, and one polite live region.

import { initDashboard, showDashboard, hideDashboard } from './dashboard.js';
import { initMessages, showMessages, showMessage } from './messages.js';

const views = ['dashboard', 'messages', 'message'];
const announcer = document.getElementById('announce');
let firstRoute = true;

function announce(text) {
  // Cleared first so the same words are read again when they repeat.
  announcer.textContent = '';
  setTimeout(() => { announcer.textContent = text; }, 50);
}

function show(name) {
  for (const v of views) document.getElementById(`view-${v}`).hidden = v !== name;
  const section = name === 'message' ? 'messages' : name;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (name === 'dashboard') showDashboard();
  else hideDashboard();
}

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [section, id] = hash.split('/');
  const moveFocus = !firstRoute;  // on first load the page starts at the top, as usual
  firstRoute = false;
  if (section === 'messages' && id) {
    show('message');
    document.title = `Message ${id} · Tellonce console`;
    showMessage(id, { focus: moveFocus });
  } else if (section === 'messages') {
    show('messages');
    document.title = 'Messages · Tellonce console';
    showMessages();
    if (moveFocus) document.getElementById('messages-title').focus();
  } else {
    show('dashboard');
    document.title = 'Dashboard · Tellonce console';
    if (moveFocus) document.getElementById('dashboard-title').focus();
  }
}

initDashboard(announce);
initMessages(announce);
window.addEventListener('hashchange', route);
route();
