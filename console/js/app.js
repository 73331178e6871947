// The console's entry point: a hash router (#/dashboard, #/messages, #/messages/{id}) showing
// one view at a time, moving focus to the view's heading, and one polite live region.

import { initDashboard, showDashboard, hideDashboard } from './dashboard.js';
import { initMessages, showMessages, showMessage } from './messages.js';
import { api, session } from './api.js';

const views = ['signin', 'dashboard', 'messages', 'message'];
let signedIn = false;
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

// Signed in when the token names an operator (GET /api/whoami); the role decides which
// buttons work. A 401 from any call (a changed token) comes back here.
async function signIn() {
  signedIn = false;
  if (session.token()) {
    try {
      session.set(await api.whoami());
      signedIn = true;
    } catch (e) {
      session.signOut();
      $signinError(e.status === 401 ? 'That token is not an operator\'s. Check it and try again.' : e.message);
    }
  }
  const who = session.who();
  document.getElementById('signed-in').hidden = !signedIn;
  document.getElementById('signed-in-as').textContent = signedIn ? `Signed in as ${who.name} (${who.role})` : '';
  document.getElementById('action-reason-row').hidden = !(signedIn && session.can('operator'));
  window.dispatchEvent(new CustomEvent('tellonce-role'));
  route();
}

function $signinError(text) {
  const p = document.getElementById('signin-error');
  p.textContent = text;
  p.hidden = !text;
}

function route() {
  if (!signedIn) {
    show('signin');
    document.title = 'Sign in · Tellonce console';
    document.getElementById('signin-token').focus();
    return;
  }
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
document.getElementById('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  session.signIn(document.getElementById('signin-token').value);
  document.getElementById('signin-token').value = '';
  signIn();
});
document.getElementById('sign-out').addEventListener('click', () => { session.signOut(); $signinError(''); signIn(); });
window.addEventListener('tellonce-signed-out', () => { if (signedIn) { session.signOut(); signIn(); } });
signIn();
