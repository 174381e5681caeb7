// tasksd console. Plain JavaScript, no framework, nothing from another
// origin. Every element is built with DOM calls and textContent: task data
// is never parsed as HTML. The operator token lives in sessionStorage (this
// tab only) and travels in the Authorization header, never in a URL.
'use strict';
(() => {
  const KEY = 'tasksd.console.token';
  const PAGE = 25;
  const $ = (id) => document.getElementById(id);
  const state = { filter: {}, offset: 0, count: 0, detail: null, busy: false };

  // el builds an element: el('td', {class: 'x'}, 'text', child…).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) {
      if (k === undefined || k === null) continue;
      e.append(typeof k === 'string' || typeof k === 'number' ? String(k) : k);
    }
    return e;
  }
  const svgNS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const badge = (s) => el('span', { class: 'badge ' + s }, s);

  // ---- token and API ----
  const token = () => sessionStorage.getItem(KEY) || '';

  class AuthError extends Error {}

  async function api(path, body, tok) {
    const headers = { 'Authorization': 'Bearer ' + (tok || token()), 'Accept': 'application/json' };
    const init = { method: 'GET', headers, cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      init.method = 'POST';
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    const msg = data && data.error && data.error.message ? data.error.message : 'HTTP ' + resp.status;
    if (resp.status === 401 || (resp.status === 400 && data && data.error && data.error.code === 'no_token')) throw new AuthError(msg);
    if (!resp.ok) throw new Error(msg);
    return data;
  }

  // ---- formatting ----
  function fmtTime(sec) {
    if (sec === undefined || sec === null) return '—';
    const d = new Date(sec * 1000);
    const p = (n, w) => String(n).padStart(w || 2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' +
      p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
  }
  function fmtDur(sec) {
    if (sec === undefined || sec === null) return '—';
    if (sec < 1) return Math.round(sec * 1000) + ' ms';
    if (sec < 60) return sec.toFixed(sec < 10 ? 2 : 1) + ' s';
    const m = Math.floor(sec / 60), s = Math.floor(sec % 60);
    if (m < 60) return m + 'm ' + s + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function fmtAge(now, sec) {
    const d = Math.max(0, now - sec);
    return d < 1 ? 'just now' : (d < 60 ? Math.floor(d) + ' s ago' : fmtDur(d) + ' ago');
  }
  const num = (n) => Number(n || 0).toLocaleString('en-US');
  function localInputToSeconds(v) {
    if (!v) return '';
    const t = new Date(v).getTime();
    return Number.isFinite(t) ? String(t / 1000) : '';
  }

  // ---- views ----
  function show(view) {
    $('login-view').hidden = view !== 'login';
    $('app-view').hidden = view === 'login';
    $('signout').hidden = view === 'login';
    $('refresh').hidden = view === 'login';
    if (view === 'login') { $('updated').textContent = ''; $('token').focus(); }
  }

  function notice(text, bad) {
    const n = $('notice');
    n.textContent = text;
    n.className = 'notice' + (bad ? ' bad' : '');
    n.hidden = false;
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    $('login-error').textContent = message || '';
    show('login');
  }

  async function guarded(f) {
    try {
      await f();
    } catch (e) {
      if (e instanceof AuthError) { signOut('Signed out: ' + e.message + '.'); return; }
      notice('Error: ' + e.message, true);
    }
  }

  // ---- summary and chart ----
  function renderCounts(dl, counts, order) {
    dl.replaceChildren(...order.map((k) => el('div', null,
      el('dt', null, el('span', { class: 'dot ' + k }), k),
      el('dd', { 'data-count': k }, num(counts[k])))));
  }

  async function loadSummary() {
    const s = await api('api/summary');
    renderCounts($('task-counts'), s.tasks, ['pending', 'running', 'succeeded', 'failed']);
    renderCounts($('callback-counts'), s.callbacks, ['waiting', 'pending', 'delivered', 'failed']);
    const withCallback = ['waiting', 'pending', 'delivered', 'failed'].reduce((n, k) => n + (s.callbacks[k] || 0), 0);
    $('task-total').textContent = num(s.total) + ' task' + (s.total === 1 ? '' : 's') + ' stored';
    $('callback-total').textContent = num(withCallback) + ' with a callback URL';
    $('updated').textContent = 'Updated ' + new Date().toLocaleTimeString();
  }

  async function loadChart() {
    const c = await api('api/chart');
    const n = c.succeeded.length;
    const W = 600, H = 150, L = 34, B = 18, T = 6;
    let max = 0;
    for (let i = 0; i < n; i++) max = Math.max(max, c.succeeded[i] + c.failed[i]);
    const top = max <= 4 ? 4 : Math.ceil(max / 4) * 4;
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const bw = (W - L) / n;
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Tasks finished per minute over the last hour' });
    for (const v of [0, top / 2, top]) {
      root.append(svg('line', { class: 'grid', x1: L, x2: W, y1: y(v), y2: y(v) }));
      root.append(svg('text', { class: 'axis', x: L - 6, y: y(v) + 3, 'text-anchor': 'end' }, String(v)));
    }
    for (let i = 0; i < n; i++) {
      const s = c.succeeded[i], f = c.failed[i];
      const x = L + i * bw + 1, w = Math.max(bw - 2, 1);
      const g = svg('g');
      const when = new Date((c.start + i * c.step) * 1000);
      g.append(svg('title', null, when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + ': ' + s + ' succeeded, ' + f + ' failed'));
      if (s > 0) g.append(svg('rect', { class: 's', x, width: w, y: y(s), height: y(0) - y(s) }));
      if (f > 0) g.append(svg('rect', { class: 'f', x, width: w, y: y(s + f), height: y(s) - y(s + f) }));
      g.append(svg('rect', { x, width: w, y: T, height: H - T - B, fill: 'transparent' }));
      root.append(g);
    }
    [[0, '−60 min'], [15, '−45'], [30, '−30'], [45, '−15'], [n - 1, 'now']].forEach(([i, label]) => {
      root.append(svg('text', { class: 'axis', x: L + i * bw + bw / 2, y: H - 4, 'text-anchor': i === 0 ? 'start' : (i === n - 1 ? 'end' : 'middle') }, label));
    });
    const legend = el('div', { class: 'legend' },
      el('span', null, el('span', { class: 'dot succeeded' }), 'succeeded'),
      el('span', null, el('span', { class: 'dot failed' }), 'failed'));
    $('chart').replaceChildren(root, legend);
  }

  // ---- the list ----
  function readFilters() {
    const f = {};
    const form = $('filters');
    for (const name of ['status', 'callback_status', 'type', 'application_id', 'user_id', 'trace_id']) {
      const v = form.elements[name].value.trim();
      if (v) f[name] = v;
    }
    for (const name of ['from', 'to']) {
      const v = localInputToSeconds(form.elements[name].value);
      if (v) f[name] = v;
    }
    return f;
  }

  async function loadList() {
    const q = new URLSearchParams(state.filter);
    q.set('offset', String(state.offset));
    q.set('limit', String(PAGE));
    const page = await api('api/tasks?' + q.toString());
    state.count = page.count;
    const rows = page.items.map((t) => {
      const link = el('a', { href: '#task=' + encodeURIComponent(t.id) }, t.id);
      const tr = el('tr', { 'data-id': t.id },
        el('td', { class: 'id' }, link),
        el('td', null, badge(t.status)),
        el('td', null, t.type),
        el('td', { class: 'trace', title: t.trace_id || '' }, t.trace_id || ''),
        el('td', { class: 'num' }, fmtAge(page.now, t.created_at)),
        el('td', { class: 'num' }, t.duration === undefined ? '—' : fmtDur(t.duration)),
        el('td', null, t.callback ? badge(t.callback.status) : el('span', { class: 'muted' }, 'none')));
      tr.addEventListener('click', (ev) => { if (ev.target !== link) location.hash = 'task=' + encodeURIComponent(t.id); });
      return tr;
    });
    $('tasks').tBodies[0].replaceChildren(...rows);
    $('empty').hidden = rows.length > 0;
    const first = page.count === 0 ? 0 : state.offset + 1;
    $('range').textContent = num(first) + '–' + num(state.offset + rows.length) + ' of ' + num(page.count);
    $('prev').disabled = state.offset === 0;
    $('next').disabled = state.offset + rows.length >= page.count;
  }

  // ---- the detail ----
  function kv(dl, pairs) {
    dl.replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v === undefined || v === null || v === '' ? '—' : v)]));
  }
  function pretty(v) {
    return v === undefined ? '—' : JSON.stringify(v, null, 2);
  }
  // thumbnails: strings of the response that are http(s) URLs on this origin.
  function thumbnails(v) {
    const out = [];
    const walk = (x) => {
      if (out.length >= 8 || x === null) return;
      if (typeof x === 'string') {
        if (!/^https?:\/\//i.test(x)) return;
        let u;
        try { u = new URL(x); } catch (e) { return; }
        if (u.origin === location.origin && !out.includes(u.href)) out.push(u.href);
      } else if (Array.isArray(x)) x.forEach(walk);
      else if (typeof x === 'object') Object.values(x).forEach(walk);
    };
    walk(v);
    return out;
  }

  async function loadDetail(id) {
    const t = await api('api/task?id=' + encodeURIComponent(id));
    state.detail = id;
    if (!t.id) {
      $('d-id').textContent = id;
      $('d-status').textContent = 'not found';
      $('d-status').className = 'badge';
      kv($('d-task'), []);
      kv($('d-callback'), []);
      $('redeliver').hidden = true;
      $('d-request').textContent = '';
      $('d-response').textContent = '';
      $('d-thumbs').replaceChildren();
      return;
    }
    $('d-id').textContent = t.id;
    $('d-status').textContent = t.status;
    $('d-status').className = 'badge ' + t.status;
    kv($('d-task'), [
      ['Type', t.type], ['Trace id', t.trace_id], ['Application', t.application_id], ['User', t.user_id],
      ['Credential', t.credential_id], ['Created', fmtTime(t.created_at)], ['Started', fmtTime(t.started_at)],
      ['Finished', fmtTime(t.finished_at)], ['Duration', t.duration === undefined ? '—' : fmtDur(t.duration)],
    ]);
    const cb = t.callback;
    if (cb) {
      kv($('d-callback'), [
        ['Status', badge(cb.status)], ['Attempts', String(cb.attempts)],
        ['Last status', cb.last_status === undefined ? '—' : (cb.last_status === 0 ? 'no answer' : String(cb.last_status))],
        ['Last error', cb.last_error], ['Next attempt', cb.next_attempt_at ? fmtTime(cb.next_attempt_at) : '—'],
        ['Delivered', cb.delivered_at ? fmtTime(cb.delivered_at) : '—'],
        ['Target', t.request && typeof t.request.callback_url === 'string' ? t.request.callback_url : '—'],
      ]);
    } else {
      kv($('d-callback'), [['Status', 'no callback']]);
    }
    $('redeliver').hidden = !(cb && t.finished_at !== undefined);
    $('d-request').textContent = pretty(t.request);
    $('d-response').textContent = pretty(t.response);
    $('d-thumbs').replaceChildren(...thumbnails(t.response).map((src) => {
      const img = el('img', { alt: 'image in the response', loading: 'lazy' });
      img.src = src;
      return img;
    }));
  }

  // ---- routing and refresh ----
  function route() {
    const m = /^#task=(.+)$/.exec(location.hash);
    const id = m ? decodeURIComponent(m[1]) : null;
    $('list-view').hidden = !!id;
    $('detail-view').hidden = !id;
    state.detail = id;
    return guarded(() => (id ? loadDetail(id) : loadList()));
  }

  async function refreshAll() {
    if (!token() || state.busy) return;
    state.busy = true;
    try {
      await guarded(async () => {
        await loadSummary();
        await loadChart();
        if (state.detail) await loadDetail(state.detail); else await loadList();
      });
    } finally {
      state.busy = false;
    }
  }

  function start() {
    show('app');
    state.filter = readFilters();
    refreshAll();
    route();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const tok = $('token').value.trim();
      if (!tok) return;
      $('login-error').textContent = '';
      try {
        await api('api/summary', undefined, tok);
      } catch (e) {
        $('login-error').textContent = e instanceof AuthError ? 'This token is not accepted: ' + e.message + '.' : 'Error: ' + e.message;
        $('token').select();
        return;
      }
      sessionStorage.setItem(KEY, tok);
      $('token').value = '';
      start();
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('refresh').addEventListener('click', () => refreshAll());
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.filter = readFilters();
      state.offset = 0;
      guarded(loadList);
    });
    $('filters').addEventListener('reset', () => {
      setTimeout(() => { state.filter = {}; state.offset = 0; guarded(loadList); }, 0);
    });
    $('prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); guarded(loadList); });
    $('next').addEventListener('click', () => { state.offset += PAGE; guarded(loadList); });
    $('back').addEventListener('click', () => { location.hash = ''; });
    window.addEventListener('hashchange', route);
    $('redeliver').addEventListener('click', () => guarded(async () => {
      const id = state.detail;
      $('redeliver').disabled = true;
      try {
        const r = await api('api/redeliver', { ids: [id] });
        notice(r.count > 0 ? 'Redeliver: the callback of ' + id + ' is due again and being delivered.' : 'Redeliver: nothing to redeliver for ' + id + '.', r.count === 0);
        await loadDetail(id);
        await loadSummary();
      } finally {
        $('redeliver').disabled = false;
      }
    }));
    $('recover').addEventListener('submit', (ev) => {
      ev.preventDefault();
      guarded(async () => {
        const since = localInputToSeconds($('recover').elements.since.value);
        if (!since) { notice('Choose a date and time to recover from.', true); return; }
        const r = await api('api/recover', { since: Number(since) });
        notice('Recover: ' + num(r.count) + ' failed callback' + (r.count === 1 ? '' : 's') + ' of tasks finished since ' + fmtTime(Number(since)) + ' made due again.', false);
        await refreshAll();
      });
    });
    setInterval(() => { if (document.visibilityState === 'visible') refreshAll(); }, 3000);
    if (token()) start(); else show('login');
  });
})();
