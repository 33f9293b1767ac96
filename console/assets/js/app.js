// The console's shell: sign-in, hash routing, and the page lifecycle. Each
// page module exports render(ctx); ctx.signal aborts when the user leaves
// the page, which stops its polls and streams.

import { api, hasToken, setToken, onUnauthorized, APIError } from './api.js';
import { h, clear, errorBox } from './dom.js';
import * as overview from './overview.js';
import * as objects from './objects.js';
import * as agents from './agents.js';
import * as coord from './coord.js';

const pages = { '': overview, overview, objects, agents, coord };

const main = document.getElementById('main');
const signin = document.getElementById('signin');
const signinForm = document.getElementById('signin-form');
const signinError = document.getElementById('signin-error');
const tokenInput = document.getElementById('token');
const signout = document.getElementById('signout');

let current = null; // the AbortController of the page shown
let authed = false;

function parseHash() {
  let raw = location.hash.replace(/^#\/?/, '');
  let query = '';
  const qi = raw.indexOf('?');
  if (qi >= 0) { query = raw.slice(qi + 1); raw = raw.slice(0, qi); }
  let parts = [];
  try {
    parts = raw === '' ? [] : raw.split('/').map((s) => decodeURIComponent(s));
  } catch {
    parts = ['?'];
  }
  return { parts, query: new URLSearchParams(query) };
}

/** every runs fn now and then every ms until signal aborts, skipping while the tab is hidden. */
function every(signal, ms, fn) {
  let timer = null;
  let running = false;
  const tick = async () => {
    if (signal.aborted) return;
    if (!document.hidden && !running) {
      running = true;
      try { await fn(); } catch (e) { if (!signal.aborted) console.debug('poll', e); } finally { running = false; }
    }
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  signal.addEventListener('abort', () => clearTimeout(timer));
  tick();
}

async function render() {
  if (!authed) return;
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  const { parts, query } = parseHash();
  const page = pages[parts[0] ?? ''];
  for (const a of document.querySelectorAll('[data-nav]')) {
    const on = a.dataset.nav === (parts[0] || 'overview');
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const fromNav = document.activeElement && document.activeElement.closest && document.activeElement.closest('nav');
  clear(main);
  if (!page) {
    main.append(h('h1', null, 'Not found'), h('p', null, 'There is no console page here. ', h('a', { href: '#/' }, 'Go to the overview.')));
    return;
  }
  const ctx = {
    main, parts: parts.slice(1), query, signal,
    every: (ms, fn) => every(signal, ms, fn),
    go: (hash) => { location.hash = hash; },
  };
  try {
    await page.render(ctx);
  } catch (e) {
    if (signal.aborted || (e && e.name === 'AbortError')) return;
    if (e instanceof APIError && e.status === 401) return; // the sign-in form is up
    main.append(errorBox(e));
  }
  if (fromNav && !signal.aborted) {
    const h1 = main.querySelector('h1');
    if (h1) { h1.tabIndex = -1; h1.focus(); } else main.focus();
  }
}

function showSignIn(message) {
  authed = false;
  if (current) current.abort();
  clear(main);
  main.hidden = true;
  signin.hidden = false;
  signout.hidden = true;
  signinError.hidden = !message;
  signinError.textContent = message || '';
  tokenInput.value = '';
  tokenInput.focus();
}

function signedIn() {
  authed = true;
  signin.hidden = true;
  main.hidden = false;
  signout.hidden = !hasToken();
  render();
}

async function check() {
  try {
    await api('/v1/admin/stats');
    return null;
  } catch (e) {
    if (e instanceof APIError && e.status === 401) return hasToken() ? 'The token was not accepted.' : '';
    if (e instanceof APIError && e.status === 403) return 'This token has no admin scope: the console needs an admin token.';
    throw e;
  }
}

signinForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const t = tokenInput.value.trim();
  if (!t) return;
  setToken(t, false);
  const button = signinForm.querySelector('button');
  button.disabled = true;
  try {
    const problem = await check();
    if (problem !== null) {
      setToken('');
      showSignIn(problem || 'The token was not accepted.');
      return;
    }
    setToken(t, true);
    signedIn();
  } catch (e) {
    setToken('');
    showSignIn(e.message);
  } finally {
    button.disabled = false;
  }
});

signout.addEventListener('click', () => {
  setToken('');
  showSignIn('');
});

document.getElementById('skip').addEventListener('click', () => {
  const h1 = main.querySelector('h1');
  if (h1) { h1.tabIndex = -1; h1.focus(); } else main.focus();
});

onUnauthorized(() => {
  if (authed) {
    setToken('');
    showSignIn('Signed out: the server did not accept the token (it may have changed).');
  }
});

window.addEventListener('hashchange', render);

(async () => {
  try {
    const problem = await check();
    if (problem === null) signedIn();
    else showSignIn(problem);
  } catch (e) {
    clear(main);
    main.append(h('h1', null, 'cairn console'), errorBox(e));
  }
})();
