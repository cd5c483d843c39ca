# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GPU page's files (HTML, style sheet, script), served by ``page`` as they are written here.

They live in a Python module so that they travel with the rest of the gateway in the code
ConfigMap (which carries every ``*.py`` of gateway/). Plain HTML, CSS and JavaScript: no
framework, no build step, nothing from another origin. The script builds every element with
``textContent`` (never ``innerHTML``), so no text from the cluster is ever parsed as HTML, and
the Content-Security-Policy allows no inline script or style.
"""

HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>GPU - homelab.gpu</title>
<link rel="stylesheet" href="/gateway/page.css">
<script src="/gateway/page.js" defer></script>
</head>
<body>
<header class="top">
  <h1>GPU</h1>
  <p id="live" class="live" role="status" aria-live="polite">Connecting...</p>
</header>
<main>
  <section id="token-box" class="card" aria-labelledby="token-title">
    <h2 id="token-title">Switch token</h2>
    <form id="token-form" class="token-form">
      <label for="token">Gateway token (Secret <code>vllm-gateway-token</code>, key <code>token</code>); kept in this tab only</label>
      <div class="row">
        <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" autocapitalize="off">
        <button type="submit" id="token-save">Save</button>
        <button type="button" id="token-forget" class="secondary">Forget</button>
      </div>
    </form>
    <p id="token-state" class="hint">No token yet: the buttons need it.</p>
  </section>
  <div id="message" class="message" role="alert" hidden></div>
  <div id="instances"></div>
</main>
<noscript><p class="card">This page needs JavaScript. <a href="/gateway/status">/gateway/status</a> has the same data as JSON.</p></noscript>
<footer class="hint">homelab.gpu gateway - <a href="/gateway/status">status (JSON)</a> - <a href="/metrics">metrics</a></footer>
</body>
</html>
"""

STYLE = r"""
:root { --bg: #f5f6f8; --fg: #16181d; --muted: #4a505c; --card: #fff; --line: #d3d7df; --accent: #0b57d0;
  --accent-fg: #fff; --ok: #146c2e; --warn: #8a5300; --bad: #b3261e; --banner: #fff4d6; --banner-line: #b07b00;
  --info: #e8f0fe; --error: #fce8e6; --good: #e6f4ea;
  --ph-terminate: #6f7480; --ph-schedule: #7b61c9; --ph-pull: #1e7fd6; --ph-start: #00897b; --ph-ready: #3f9a43;
  --ph-verify: #d99400; --ph-rollback: #d32f2f; --ph-sleep: #5c6bc0; --ph-wake: #f57c00; --ph-warmup: #c2185b; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #121418; --fg: #eceef2; --muted: #b4bac6; --card: #1c1f26; --line: #3a3f4b; --accent: #8ab4f8;
    --accent-fg: #0b1a33; --ok: #81c995; --warn: #fdd663; --bad: #f28b82; --banner: #3b3113; --banner-line: #fdd663;
    --info: #1f2b3f; --error: #3f1f1d; --good: #1c3324; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 64rem; padding: 0.75rem; background: var(--bg); color: var(--fg);
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
a { color: var(--accent); }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.9em; overflow-wrap: anywhere; }
h1 { font-size: 1.5rem; margin: 0; }
h2 { font-size: 1.2rem; margin: 0 0 0.5rem; }
h3 { font-size: 1rem; margin: 1rem 0 0.4rem; }
.top { display: flex; align-items: baseline; justify-content: space-between; gap: 0.5rem; flex-wrap: wrap; margin-bottom: 0.5rem; }
.live { margin: 0; font-size: 0.9rem; color: var(--muted); }
.live.on::before { content: ""; display: inline-block; width: 0.6rem; height: 0.6rem; border-radius: 50%; background: var(--ok);
  margin-right: 0.35rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 0.5rem; padding: 0.75rem 1rem; margin: 0 0 0.75rem; }
.hint { color: var(--muted); font-size: 0.9rem; margin: 0.4rem 0 0; }
.row { display: flex; gap: 0.5rem; flex-wrap: wrap; align-items: center; }
.token-form label { display: block; margin-bottom: 0.3rem; font-size: 0.95rem; }
input[type=password] { flex: 1 1 12rem; min-width: 0; font: inherit; padding: 0.45rem 0.6rem; border: 1px solid var(--muted);
  border-radius: 0.35rem; background: var(--card); color: var(--fg); }
button { font: inherit; padding: 0.45rem 0.9rem; border-radius: 0.35rem; border: 1px solid var(--accent); background: var(--accent);
  color: var(--accent-fg); cursor: pointer; min-height: 2.5rem; }
button.secondary { background: transparent; color: var(--accent); }
button:disabled { opacity: 0.55; cursor: not-allowed; }
button:focus-visible, input:focus-visible, a:focus-visible { outline: 3px solid var(--warn); outline-offset: 2px; }
.message { border-radius: 0.5rem; padding: 0.6rem 1rem; margin: 0 0 0.75rem; border: 1px solid var(--line); }
.message.info { background: var(--info); }
.message.error { background: var(--error); border-color: var(--bad); }
.message.ok { background: var(--good); border-color: var(--ok); }
.banner { background: var(--banner); border: 1px solid var(--banner-line); border-radius: 0.4rem; padding: 0.6rem 0.8rem; margin: 0 0 0.75rem; }
.banner p { margin: 0 0 0.5rem; }
.switching { border: 1px solid var(--accent); border-radius: 0.4rem; padding: 0.6rem 0.8rem; margin: 0 0 0.75rem; }
.switching p { margin: 0 0 0.4rem; }
.phases { list-style: none; display: flex; flex-wrap: wrap; gap: 0.3rem; padding: 0; margin: 0; }
.phases li { border: 1px solid var(--line); border-radius: 1rem; padding: 0.1rem 0.6rem; font-size: 0.85rem; color: var(--muted); }
.phases li.done { color: var(--fg); border-color: var(--ok); }
.phases li.current { color: var(--accent-fg); background: var(--accent); border-color: var(--accent); font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0 0 0.5rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.mode-now { font-weight: 700; font-size: 1.1rem; }
.actions { display: flex; flex-wrap: wrap; gap: 0.5rem; margin: 0.25rem 0 0.5rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
.v-ok { color: var(--ok); }
.v-warn { color: var(--warn); }
.v-bad { color: var(--bad); font-weight: 600; }
.small { display: block; font-size: 0.8rem; color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { fill: var(--fg); font-size: 12px; }
caption { text-align: left; padding-bottom: 0.3rem; }
svg.chart .axis { stroke: var(--line); }
.ph-terminate { fill: var(--ph-terminate); background: var(--ph-terminate); }
.ph-schedule { fill: var(--ph-schedule); background: var(--ph-schedule); }
.ph-pull { fill: var(--ph-pull); background: var(--ph-pull); }
.ph-start { fill: var(--ph-start); background: var(--ph-start); }
.ph-ready { fill: var(--ph-ready); background: var(--ph-ready); }
.ph-verify { fill: var(--ph-verify); background: var(--ph-verify); }
.ph-rollback { fill: var(--ph-rollback); background: var(--ph-rollback); }
.ph-sleep { fill: var(--ph-sleep); background: var(--ph-sleep); }
.ph-wake { fill: var(--ph-wake); background: var(--ph-wake); }
.ph-warmup { fill: var(--ph-warmup); background: var(--ph-warmup); }
.ph-other { fill: var(--muted); background: var(--muted); }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 0.25rem 0.8rem; padding: 0; margin: 0.3rem 0; font-size: 0.85rem; }
.swatch { display: inline-block; width: 0.8rem; height: 0.8rem; border-radius: 0.15rem; margin-right: 0.3rem; vertical-align: -0.1rem; }
footer { margin: 1rem 0; }
@media (max-width: 30rem) {
  body { padding: 0.5rem; font-size: 15px; }
  .card { padding: 0.6rem 0.7rem; }
  dl.facts { grid-template-columns: 1fr; gap: 0; }
  dl.facts dd { margin-bottom: 0.35rem; }
  .actions button { flex: 1 1 45%; }
  .hide-narrow { display: none; }
}
"""

SCRIPT = r"""'use strict';
(function () {
  var KEY = 'homelab.gpu gateway token';
  var POLL_MS = 3000;
  var RECONNECT_MS = 15000;
  // the engine's phases (readiness.PHASES; RESIDENT_PHASES for a switch between resident modes), in order
  var PHASES = ['terminate', 'schedule', 'pull', 'start', 'ready', 'verify'];
  var RESIDENT_PHASES = ['terminate', 'sleep', 'start', 'wake', 'warmup', 'verify'];
  var ORDER = ['terminate', 'sleep', 'schedule', 'pull', 'start', 'ready', 'wake', 'warmup', 'verify', 'rollback'];
  var page = { doc: null, text: '', receivedAt: 0, details: {}, detailKey: {}, detailBusy: false, busy: false,
               source: null, poll: null };

  // -- building DOM (textContent only: nothing from the cluster is parsed as HTML) -------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === 'text') { node.textContent = String(value); } else if (key === 'class') { node.className = value; }
      else { node.setAttribute(key, value === true ? '' : String(value)); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined || child === false) { return; }
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return node;
  }
  function svg(tag, attrs, children) {
    var node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === 'text') { node.textContent = String(attrs[key]); } else { node.setAttribute(key, String(attrs[key])); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }
  function $(id) { return document.getElementById(id); }
  function ident(text) { return String(text).replace(/[^A-Za-z0-9_-]/g, '_'); }

  // -- formatting -----------------------------------------------------------------------------------
  function when(iso) {
    if (!iso) { return 'unknown'; }
    var date = new Date(iso);
    if (isNaN(date.getTime())) { return String(iso); }
    var ago = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    var rel = ago < 90 ? ago + ' s ago' : ago < 5400 ? Math.round(ago / 60) + ' min ago' : ago < 129600 ?
      Math.round(ago / 3600) + ' h ago' : Math.round(ago / 86400) + ' d ago';
    var today = date.toDateString() === new Date().toDateString();
    return (today ? date.toLocaleTimeString([], { timeStyle: 'short' }) :
      date.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' })) + ' (' + rel + ')';
  }
  function secs(value) { return value === null || value === undefined ? '-' : Number(value).toFixed(1) + ' s'; }
  function verdictClass(verdict) {
    if (verdict === 'ok' || verdict === 'pass' || verdict === 'fits') { return 'v-ok'; }
    if (verdict === 'refused' || verdict === 'fail' || verdict === 'too_large') { return 'v-bad'; }
    return 'v-warn';
  }
  function phaseClass(name) { return ORDER.indexOf(name) >= 0 ? 'ph-' + name : 'ph-other'; }
  function byOrder(a, b) { return ORDER.indexOf(a) - ORDER.indexOf(b); }

  // -- messages and the token -----------------------------------------------------------------------
  function say(kind, text) {
    var box = $('message');
    box.className = 'message ' + kind;
    box.textContent = text;
    box.hidden = !text;
  }
  function token() { try { return window.sessionStorage.getItem(KEY) || ''; } catch (err) { return ''; } }
  function setToken(value) {
    try {
      if (value) { window.sessionStorage.setItem(KEY, value); } else { window.sessionStorage.removeItem(KEY); }
    } catch (err) { say('error', 'This browser does not keep the token (session storage is off): ' + err.message); }
    showToken();
  }
  function showToken() {
    $('token-state').textContent = token() ? 'A token is saved for this tab; it is sent only with a switch.' :
      'No token yet: the buttons need it.';
  }

  // -- live updates -----------------------------------------------------------------------------------
  function setLive(on, text) {
    var live = $('live');
    live.className = on ? 'live on' : 'live';
    live.textContent = text;
  }
  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    var source = new EventSource('/gateway/events');
    page.source = source;
    source.addEventListener('status', function (event) {
      try { apply(JSON.parse(event.data), event.data); } catch (err) { /* a broken event: the next one repairs it */ }
    });
    source.onopen = function () { stopPolling(); setLive(true, 'Live'); };
    source.onerror = function () {
      setLive(false, 'Live updates lost: checking every ' + POLL_MS / 1000 + ' s');
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        page.source = null;
        window.setTimeout(connect, RECONNECT_MS);
      }
    };
  }
  function poll() {
    fetch('/gateway/status', { cache: 'no-store', credentials: 'omit' }).then(function (resp) {
      return resp.text();
    }).then(function (text) { apply(JSON.parse(text), text); }).catch(function () {
      setLive(false, 'The gateway does not answer; retrying every ' + POLL_MS / 1000 + ' s');
    });
  }
  function startPolling() { if (!page.poll) { page.poll = window.setInterval(poll, POLL_MS); poll(); } }
  function stopPolling() { if (page.poll) { window.clearInterval(page.poll); page.poll = null; } }

  function apply(doc, text) {
    page.receivedAt = Date.now();
    if (text === page.text) { return; }
    page.doc = doc;
    page.text = text;
    render();
    details();
  }
  // the catalog's verdicts (CUDA, architecture, VRAM) and target times: read again when a mode changes
  function details() {
    var doc = page.doc;
    if (!doc || page.detailBusy) { return; }
    var stale = (doc.instances || []).some(function (inst) {
      return !inst.progress && !inst.switching && page.detailKey[inst.name] !== inst.mode;
    });
    if (!stale) { return; }
    page.detailBusy = true;
    fetch('/gateway/status?detail=1', { cache: 'no-store', credentials: 'omit' }).then(function (resp) {
      return resp.json();
    }).then(function (full) {
      (full.instances || []).forEach(function (inst) {
        page.details[inst.name] = inst.info || {};
        page.detailKey[inst.name] = inst.mode;
      });
      render();
    }).catch(function () { /* the table says the verdicts are unknown */ }).then(function () { page.detailBusy = false; });
  }

  // -- switching ------------------------------------------------------------------------------------------
  function errorText(body, fallback) {
    if (body && body.msg) { return body.msg; }
    if (body && body.error && body.error.message) { return body.error.message; }
    if (body && typeof body.error === 'string') { return body.error; }
    return fallback;
  }
  function doSwitch(instance, mode) {
    var secret = token();
    if (!secret) {
      say('error', 'Enter the gateway token first (Switch token, above): nothing was changed.');
      $('token').focus();
      return;
    }
    page.busy = true;
    render();
    say('info', 'Switching ' + instance + ' to ' + mode + '... the page shows each phase as it happens.');
    fetch('/gateway/switch', {
      method: 'POST', cache: 'no-store', credentials: 'omit',
      headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + secret },
      body: JSON.stringify({ mode: mode, instance: instance })
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (err) { body = null; }
        return { status: resp.status, body: body };
      });
    }).then(function (answer) {
      var body = answer.body || {};
      if (answer.status === 401) {
        setToken('');
        say('error', 'The gateway did not accept the token, so nothing was changed. Enter the right token above. (' +
            errorText(body, 'HTTP 401') + ')');
      } else if (answer.status === 403) {
        say('error', errorText(body, 'The switch API is disabled.'));
      } else if (answer.status >= 400 || body.failed) {
        say('error', 'The switch to ' + mode + ' did not happen: ' + errorText(body, 'HTTP ' + answer.status));
      } else {
        say('ok', instance + ' is now in mode ' + mode + (body.changed === false ? ' (it already was)' :
            ' (switched in ' + secs(body.elapsed) + ')') + '.');
      }
    }).catch(function (err) {
      say('error', 'The gateway did not answer the switch (' + err.message + '); the page shows what it knows.');
    }).then(function () {
      page.busy = false;
      render();
      details();
    });
  }

  // -- rendering --------------------------------------------------------------------------------------------
  function facts(inst) {
    var rows = [
      ['Mode', el('span', { class: 'mode-now', text: inst.mode || 'none (no Deployment)' })],
      ['Model', inst.model || (inst.mode ? 'none (the GPU is free)' : '-')],
      ['Ready', inst.ready ? 'yes, since ' + when(inst.ready_since) : 'no'],
      ['Requests', (inst.in_flight || 0) + ' in flight, ' + (inst.queued || 0) + ' queued' +
        (inst.pending_switches ? ', ' + inst.pending_switches + ' switch(es) waiting' : '')]
    ];
    var list = el('dl', { class: 'facts' });
    rows.forEach(function (row) {
      list.appendChild(el('dt', { text: row[0] }));
      list.appendChild(el('dd', {}, [row[1]]));
    });
    return list;
  }
  function banner(inst) {
    if (!inst.locked) { return null; }
    var release = inst.default_mode;
    return el('div', { class: 'banner', role: 'status', id: 'reserved-' + ident(inst.name) }, [
      el('p', {}, [el('strong', { text: 'Reserved: ' }), 'the GPU is kept free for ' + inst.mode + ' since ' +
        when(inst.locked_since) + '. No request loads a model until a person releases it.']),
      el('p', {}, ['Release here, or on the control node: ', el('code', { text: 'gpu-mode ' + release }), ' or ',
        el('code', { text: 'ansible-playbook switch_mode.yml -e mode=' + release }), '.']),
      el('button', { type: 'button', 'data-action': 'switch', 'data-instance': inst.name, 'data-mode': release,
                     'data-key': 'release:' + inst.name, class: 'release', disabled: page.busy || !!inst.progress,
                     text: 'Release (back to ' + release + ')' })
    ]);
  }
  function progress(inst) {
    var run = inst.progress;
    if (!run && !inst.switching) { return null; }
    var box = el('div', { class: 'switching', role: 'status', 'aria-live': 'polite',
                          id: 'switching-' + ident(inst.name) });
    if (!run) {
      box.appendChild(el('p', { text: 'A switch is being prepared (the requests in flight finish first).' }));
      return box;
    }
    var by = run.by === 'gateway' ? 'the gateway' : run.by === 'console' ? 'Ansible or gpu-mode' : 'unknown';
    box.appendChild(el('p', {}, [el('strong', { text: 'Switching ' + (run.from || 'nothing') + ' \u2192 ' + run.to }),
      ' (trigger ' + (run.trigger || 'unknown') + ', run by ' + by + ')']));
    box.appendChild(el('p', {}, ['Phase ', el('strong', { class: 'phase-now', text: run.phase || 'starting' }), ' for ',
      el('span', { class: 'elapsed', 'data-base': run.phase_elapsed_s || 0, text: secs(run.phase_elapsed_s) }),
      '; ', el('span', { class: 'elapsed', 'data-base': run.elapsed_s || 0, text: secs(run.elapsed_s) }), ' in all.']));
    var list = el('ol', { class: 'phases', 'aria-label': 'Phases' });
    var seen = Object.keys(run.phases || {}).concat([run.phase]);
    var resident = seen.some(function (name) { return name === 'sleep' || name === 'wake' || name === 'warmup'; });
    var names = (resident ? RESIDENT_PHASES : PHASES).slice();
    if (seen.indexOf('rollback') >= 0) { names.push('rollback'); }
    names.forEach(function (name) {
      var done = run.phases && run.phases[name] !== undefined;
      var current = run.phase === name;
      list.appendChild(el('li', { class: current ? 'current' : done ? 'done' : '', 'aria-current': current ? 'step' : null,
                                  text: name + (done ? ' ' + secs(run.phases[name]) : '') }));
    });
    box.appendChild(list);
    return box;
  }
  function actions(inst) {
    var box = el('div', { class: 'actions', role: 'group', 'aria-label': 'Switch ' + inst.name });
    Object.keys(inst.modes || {}).sort().forEach(function (name) {
      var mode = inst.modes[name];
      var now = name === inst.mode;
      var label = now ? name + ' (now)' : mode.lock ? 'Reserve for ' + name : 'Switch to ' + name;
      box.appendChild(el('button', { type: 'button', 'data-action': 'switch', 'data-instance': inst.name, 'data-mode': name,
                                     'data-key': 'switch:' + inst.name + ':' + name, class: mode.lock ? 'secondary' : null,
                                     disabled: page.busy || now || !!inst.progress, text: label }));
    });
    return box;
  }
  function verdictCell(check) {
    if (!check || !check.verdict) { return el('td', { text: 'unknown' }); }
    var cell = el('td', {}, [el('span', { class: verdictClass(check.verdict), text: check.verdict })]);
    if (verdictClass(check.verdict) !== 'v-ok' && check.message) { cell.appendChild(el('span', { class: 'small', text: check.message })); }
    return cell;
  }
  function modesTable(inst) {
    var info = (page.details[inst.name] || {}).modes || {};
    var body = el('tbody');
    Object.keys(inst.modes || {}).sort().forEach(function (name) {
      var mode = inst.modes[name];
      var detail = info[name] || {};
      // a resident mode's engine: awake (behind the Service), asleep, starting or stopped
      var engine = (inst.resident || {})[name];
      body.appendChild(el('tr', { 'data-mode': name }, [
        el('th', { scope: 'row' }, [name + (name === inst.mode ? ' (now)' : ''), engine ?
          el('span', { class: 'small engine', 'data-engine': engine, text: 'resident, ' + engine }) : null]),
        el('td', { class: 'hide-narrow', text: mode.model || 'none (GPU free)' }),
        mode.replicas ? verdictCell(detail.cuda) : el('td', { text: '-' }),
        mode.replicas ? verdictCell(detail.arch) : el('td', { text: '-' }),
        mode.replicas ? verdictCell(detail.vram) : el('td', { text: '-' }),
        el('td', { text: detail.target_seconds ? detail.target_seconds + ' s' : 'unknown' }),
        el('td', { class: 'hide-narrow', text: mode.replicas ? (mode.on_demand ? 'yes' : 'no') : mode.lock ? 'reserves the GPU' : 'frees the GPU' })
      ]));
    });
    var head = el('tr', {}, ['Mode', 'Model', 'CUDA', 'Arch', 'VRAM', 'Switch time', 'On demand'].map(
      function (text, index) {
        return el('th', { scope: 'col', class: index === 1 || index === 6 ? 'hide-narrow' : null, text: text });
      }));
    return el('div', { class: 'scroll' }, [el('table', { class: 'modes' }, [
      el('caption', { class: 'hint', text: 'Preflight verdicts (CUDA, GPU architecture, VRAM) of each mode on this GPU, ' +
        'and the time a switch to it is expected to take' }), el('thead', {}, [head]), body])]);
  }
  function chart(switches) {
    var shown = switches.slice(0, 20);
    var rowH = 22;
    // drawn at the width it is shown at, so its text stays readable on a phone
    var width = Math.max(280, Math.min(1000, ($('instances').clientWidth || 640) - 40));
    var labelW = width < 480 ? 95 : 150;
    var barW = width - labelW - 60;
    var longest = shown.reduce(function (most, sw) { return Math.max(most, sw.seconds || 0); }, 0) || 1;
    var height = shown.length * rowH + 20;
    var root = svg('svg', { class: 'chart', viewBox: '0 0 ' + width + ' ' + height, role: 'img',
                            'aria-label': 'Duration of the last ' + shown.length + ' switches by phase; the table below has the numbers' });
    shown.forEach(function (sw, index) {
      var y = index * rowH + 4;
      root.appendChild(svg('text', { x: 0, y: y + 13, text: (sw.from || '-') + ' \u2192 ' + sw.to }));
      var x = labelW;
      var phases = sw.phases || {};
      var names = Object.keys(phases);
      var sum = names.reduce(function (total, name) { return total + (phases[name] || 0); }, 0);
      var scale = barW / longest;
      names.sort(byOrder).forEach(function (name) {
        var w = Math.max(1, (phases[name] || 0) * scale);
        root.appendChild(svg('rect', { x: x.toFixed(1), y: y, width: w.toFixed(1), height: rowH - 8, class: phaseClass(name) },
                             [svg('title', { text: name + ' ' + secs(phases[name]) })]));
        x += w;
      });
      if ((sw.seconds || 0) > sum + 0.05) {
        var rest = ((sw.seconds || 0) - sum) * scale;
        root.appendChild(svg('rect', { x: x.toFixed(1), y: y, width: Math.max(1, rest).toFixed(1), height: rowH - 8,
                                       class: 'ph-other' }, [svg('title', { text: 'other ' + secs(sw.seconds - sum) })]));
        x += rest;
      }
      root.appendChild(svg('text', { x: (x + 4).toFixed(1), y: y + 13, text: secs(sw.seconds) + (sw.outcome === 'ok' ? '' :
        ' ' + (sw.outcome || '')) }));
    });
    root.appendChild(svg('line', { x1: labelW, y1: height - 6, x2: labelW + barW, y2: height - 6, class: 'axis' }));
    return root;
  }
  function legend(switches) {
    var list = el('ul', { class: 'legend', 'aria-label': 'Phases' });
    var used = {};
    switches.forEach(function (sw) { Object.keys(sw.phases || {}).forEach(function (name) { used[name] = true; }); });
    ORDER.filter(function (name) { return used[name]; }).concat(['other']).forEach(function (name) {
      list.appendChild(el('li', {}, [el('span', { class: 'swatch ' + phaseClass(name), 'aria-hidden': 'true' }), name]));
    });
    return list;
  }
  // the mode whose step failed and that phase: the target, or a keep-awake or sleeping mode
  function failedStep(sw) {
    return 'failed: ' + (sw.failed_mode || sw.to) + (sw.failed_phase ? ' (' + sw.failed_phase + ')' : '');
  }
  function historyTable(switches) {
    var body = el('tbody');
    switches.forEach(function (sw) {
      var phases = sw.phases || {};
      var parts = Object.keys(phases).sort(byOrder).map(
        function (name) { return name + ' ' + secs(phases[name]); });
      var trigger = (sw.trigger || 'unknown') + (sw.by === 'console' ? ' (Ansible/gpu-mode)' : sw.by === 'gateway' &&
        sw.trigger === 'person' ? ' (this page or the API)' : '');
      var outcome = el('td', {}, [el('span', { class: sw.outcome === 'ok' ? 'v-ok' : 'v-bad', text: sw.outcome || 'unknown' })]);
      if (sw.failed_mode || sw.failed_phase) {
        outcome.appendChild(el('span', { class: 'small failed-step', text: failedStep(sw) }));
      }
      if (sw.message) { outcome.appendChild(el('span', { class: 'small', text: sw.message })); }
      body.appendChild(el('tr', {}, [el('td', { text: when(sw.finished_at) }),
        el('td', { class: 'switch-pair', text: (sw.from || '-') + ' \u2192 ' + sw.to }), el('td', { text: trigger }), outcome,
        el('td', { text: secs(sw.seconds) }), el('td', { class: 'hide-narrow', text: parts.join(', ') || '-' })]));
    });
    var head = el('tr', {}, ['Finished', 'Switch', 'Trigger', 'Outcome', 'Took', 'By phase'].map(function (text, index) {
      return el('th', { scope: 'col', class: index === 5 ? 'hide-narrow' : null, text: text });
    }));
    return el('div', { class: 'scroll' }, [el('table', { class: 'history' }, [el('thead', {}, [head]), body])]);
  }
  // each part of an instance is rebuilt only when what it shows changed, so a button under a finger or the
  // keyboard focus stays put while the live updates come in
  function part(box, key, build) {
    if (box.partKey === key) { return; }
    box.partKey = key;
    var node = build();
    box.replaceChildren();
    if (node) { box.appendChild(node); }
  }
  function section(inst) {
    var id = 'instance-' + ident(inst.name);
    var box = $(id);
    if (!box) {
      box = el('section', { class: 'card instance', id: id, 'aria-labelledby': id + '-title' }, [
        el('h2', { id: id + '-title', text: inst.name + (inst.namespace ? ' (' + inst.namespace + ')' : '') })]);
      ['banner', 'progress', 'facts', 'actions', 'modes', 'history'].forEach(function (name) {
        if (name === 'actions') { box.appendChild(el('h3', { text: 'Switch' })); }
        if (name === 'modes') { box.appendChild(el('h3', { text: 'Modes' })); }
        if (name === 'history') { box.appendChild(el('h3', { text: 'Last switches' })); }
        box.appendChild(el('div', { class: 'part-' + name }));
      });
    }
    box.setAttribute('data-mode', inst.mode || '');
    function slot(name) { return box.querySelector('.part-' + name); }
    var switches = inst.switches || [];
    var busy = page.busy || !!inst.progress;
    part(slot('banner'), JSON.stringify([inst.locked, inst.mode, inst.locked_since, inst.default_mode, busy]),
         function () { return banner(inst); });
    part(slot('progress'), JSON.stringify([inst.progress, inst.switching]), function () { return progress(inst); });
    part(slot('facts'), JSON.stringify([inst.mode, inst.model, inst.ready, inst.ready_since, inst.in_flight, inst.queued,
                                        inst.pending_switches]), function () { return facts(inst); });
    part(slot('actions'), JSON.stringify([inst.modes, inst.mode, busy]), function () { return actions(inst); });
    part(slot('modes'), JSON.stringify([inst.modes, inst.mode, inst.resident, page.details[inst.name] || null]),
         function () { return modesTable(inst); });
    part(slot('history'), JSON.stringify(switches), function () {
      if (!switches.length) { return el('p', { class: 'hint', text: 'No switch since the gateway started.' }); }
      return el('div', {}, [chart(switches), legend(switches), historyTable(switches)]);
    });
    return box;
  }
  function render() {
    var doc = page.doc;
    if (!doc) { return; }
    var focused = document.activeElement && document.activeElement.getAttribute('data-key');
    var root = $('instances');
    var keep = [];
    (doc.instances || []).forEach(function (inst) {
      var box = section(inst);
      keep.push(box);
      if (box.parentNode !== root) { root.appendChild(box); }
    });
    Array.prototype.slice.call(root.children).forEach(function (child) {
      if (keep.indexOf(child) < 0) { root.removeChild(child); }
    });
    if (focused && !(document.activeElement && document.activeElement.getAttribute('data-key') === focused)) {
      var again = root.querySelector('[data-key="' + focused.replace(/["\\]/g, '\\$&') + '"]');
      if (again && !again.disabled) { again.focus(); }
    }
  }
  function tick() {
    var passed = (Date.now() - page.receivedAt) / 1000;
    Array.prototype.forEach.call(document.querySelectorAll('.elapsed'), function (node) {
      node.textContent = secs(Number(node.getAttribute('data-base')) + passed);
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    showToken();
    $('token-form').addEventListener('submit', function (event) {
      event.preventDefault();
      var value = $('token').value.trim();
      $('token').value = '';
      if (!value) { say('error', 'The token field is empty: paste the token, then press Save.'); return; }
      setToken(value);
      say('info', 'Token saved for this tab.');
    });
    $('token-forget').addEventListener('click', function () { setToken(''); say('info', 'Token forgotten.'); });
    $('instances').addEventListener('click', function (event) {
      var button = event.target.closest('button[data-action="switch"]');
      if (button && !button.disabled) { doSwitch(button.getAttribute('data-instance'), button.getAttribute('data-mode')); }
    });
    window.addEventListener('resize', function () {
      Array.prototype.forEach.call(document.querySelectorAll('.part-history'), function (box) { box.partKey = null; });
      render();
    });
    window.setInterval(tick, 1000);
    poll();
    connect();
  });
}());
"""
