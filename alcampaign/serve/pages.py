# ruff: noqa: E501  (JavaScript and HTML in strings)
"""HTML and JavaScript of the dashboard's two pages (no template engine, no CDN).

``{poll}`` (seconds between refreshes, 0 for none) and ``{name}`` (HTML-escaped
campaign name) are substituted by :mod:`alcampaign.serve.dashboard`. Everything from the
stores is inserted with ``textContent``, never as HTML.
"""

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}.met{color:#070}.unmet{color:#a00}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plot{width:480px;height:360px}
.controls *{margin-right:6px}#error{color:#a00}small{color:#666}
</style>"""

COMMON_JS = """<script>
function el(tag, text, attrs){
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function fmt(v){
  if (v === null || v === undefined) return '\\u2014';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}
async function getJSON(url){
  const r = await fetch(url, {cache: 'no-store'});
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}
function showError(e){ document.getElementById('error').textContent = e ? String(e.message || e) : ''; }
const seen = {};
function changed(key, value){  // re-render only what changed: no flicker, no lost selection
  const text = JSON.stringify(value);
  if (seen[key] === text) return false;
  seen[key] = text; return true;
}
function poll(fn){ const s = {poll}; fn(); if (s > 0) setInterval(fn, s * 1000); }
</script>"""

INDEX = (
    """<!doctype html><html><head><meta charset="utf-8"><title>alcampaign: campaigns</title>"""
    + STYLE
    + """<script src="/static/plotly.min.js"></script>"""
    + COMMON_JS
    + """</head><body>
<h1>Campaigns</h1>
<p><small>Read-only view of the campaign stores; refreshes every {poll} s
(0: on reload only). API schema: <a href="/openapi.json">/openapi.json</a></small></p>
<p id="error"></p>
<table id="campaigns"><thead><tr><th>campaign</th><th>system</th><th>state</th>
<th>iteration</th><th>oracle calls</th><th>candidates</th>
<th>metrics (value / threshold)</th><th>stop reason</th><th>last activity (UTC)</th></tr></thead>
<tbody></tbody></table>
<script>
async function load(){
  try {
    const rows = await getJSON('/api/dashboard/campaigns');
    if (!changed('list', rows)) { showError(null); return; }
    const body = document.querySelector('#campaigns tbody');
    body.replaceChildren();
    for (const c of rows){
      const tr = el('tr', null, {'data-name': c.name});
      const a = el('a', c.name, {href: '/campaign/' + encodeURIComponent(c.name)});
      const td = el('td'); td.appendChild(a); tr.appendChild(td);
      for (const k of ['system', 'state', 'iteration', 'n_oracle_calls', 'n_candidates'])
        tr.appendChild(el('td', fmt(c[k]), {'class': 'col-' + k}));
      const m = el('td', null, {'class': 'col-metrics'});
      for (const cr of c.criteria){
        const s = el('div', cr.name + ' ' + fmt(cr.value) + ' / ' + fmt(cr.threshold),
                     {'class': cr.met ? 'met' : 'unmet'});
        m.appendChild(s);
      }
      if (!c.criteria.length)
        for (const [k, v] of Object.entries(c.metrics)) m.appendChild(el('div', k + ' ' + fmt(v)));
      tr.appendChild(m);
      tr.appendChild(el('td', fmt(c.stop_reason)));
      tr.appendChild(el('td', fmt(c.updated_at), {'class': 'col-updated_at'}));
      body.appendChild(tr);
    }
    document.body.setAttribute('data-loaded', String(rows.length));
    showError(null);
  } catch (e) { showError(e); }
}
poll(load);
</script></body></html>"""
)

CAMPAIGN = (
    """<!doctype html><html><head><meta charset="utf-8"><title>alcampaign: {name}</title>"""
    + STYLE
    + """<script src="/static/plotly.min.js"></script>"""
    + COMMON_JS
    + """</head><body data-campaign="{name}">
<p><a href="/">&larr; all campaigns</a></p>
<h1>Campaign <span id="name"></span></h1>
<p id="error"></p>
<h2>Status</h2>
<table id="status"><tbody></tbody></table>
<h2>Metrics and stopping rules</h2>
<table id="criteria"><thead><tr><th>criterion</th><th>value</th><th>threshold</th>
<th>met</th></tr></thead><tbody></tbody></table>
<h2>Plots</h2>
<div class="plots">
<div class="plot" id="plot-learning_curve"></div><div class="plot" id="plot-calibration"></div>
<div class="plot" id="plot-parity"></div><div class="plot" id="plot-hull"></div>
</div>
<h2>Decisions</h2>
<table id="history"><thead><tr><th>iteration</th><th>rule</th><th>oracle calls</th>
<th>cv rmse</th><th>asked</th><th>decision</th><th>time</th></tr></thead><tbody></tbody></table>
<h2>Acquisitions</h2>
<table id="acquisitions"><thead><tr><th>iteration</th><th>candidate</th><th>formula</th>
<th>rule</th><th>score</th><th>state</th></tr></thead><tbody></tbody></table>
<h2>Candidates</h2>
<div class="controls">
<input id="search" placeholder="formula or id" size="18">
<select id="state"><option value="">any state</option><option>pool</option>
<option>acquired</option><option>requested</option><option>labelled</option>
<option>failed</option></select>
<select id="sort"><option value="candidate_id">sort: id</option>
<option value="formula">sort: formula</option><option value="n_sites">sort: atoms</option>
<option value="state">sort: state</option>
<option value="chgnet_energy">sort: CHGNet energy</option></select>
<select id="per-page"><option>25</option><option selected>50</option><option>100</option>
<option>500</option></select>
<button id="prev">&larr; previous</button><span id="page-info"></span>
<button id="next">next &rarr;</button>
</div>
<table id="candidates"><thead><tr><th>candidate</th><th>formula</th><th>atoms</th>
<th>state</th><th>energy (eV/atom)</th><th>source</th><th>surrogate (eV/atom)</th>
<th>&sigma; (eV/atom)</th><th>acquired in</th><th>CIF</th></tr></thead><tbody></tbody></table>
<script>
const NAME = document.body.getAttribute('data-campaign');
const BASE = '/api/dashboard/campaigns/' + encodeURIComponent(NAME);
let page = 1, nPages = 1;
document.getElementById('name').textContent = NAME;

function row(cells, attrs){
  const tr = el('tr', null, attrs);
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el('td', fmt(c)));
  return tr;
}
function fill(id, rows){ const b = document.querySelector('#' + id + ' tbody'); b.replaceChildren(...rows); }
function valueCell(v, id){ return el('td', fmt(v), {id: id, 'data-value': JSON.stringify(v)}); }

async function loadStatus(){
  const s = await getJSON(BASE + '/status');
  if (!changed('status', s)) return;
  fill('status', ['state', 'iteration', 'n_oracle_calls', 'n_candidates', 'stop_reason',
                  'updated_at'].map(k => row([el('th', k.replace(/_/g, ' ')),
                                              valueCell(s[k], 'field-' + k)])));
  const crit = Object.fromEntries(s.criteria.map(c => [c.name, c]));
  const rows = [];
  for (const [k, v] of Object.entries(s.metrics)){
    const c = crit[k]; delete crit[k];
    rows.push(row([el('td', 'cv ' + k), valueCell(v, 'metric-' + k),
                   c ? fmt(c.threshold) : '', c ? (c.met ? 'yes' : 'no') : ''],
                  {'class': c ? (c.met ? 'met' : 'unmet') : ''}));
  }
  for (const c of Object.values(crit))
    rows.push(row([el('td', c.name), valueCell(c.value, 'criterion-' + c.name),
                   fmt(c.threshold), c.met ? 'yes' : 'no'], {'class': c.met ? 'met' : 'unmet'}));
  fill('criteria', rows);
}

function plot(id, traces, title, xtitle, ytitle){
  Plotly.react('plot-' + id, traces, {title: {text: title}, margin: {t: 40, l: 60, r: 10, b: 50},
    xaxis: {title: {text: xtitle}}, yaxis: {title: {text: ytitle}}, legend: {font: {size: 10}}},
    {displaylogo: false, responsive: true});
}

async function loadPlots(){
  const p = await getJSON(BASE + '/plots');
  if (!changed('plots', p)) return;
  const lc = p.learning_curve, meV = a => a.map(v => v === null ? null : 1000 * v);
  const lcTraces = [
    {x: lc.n_oracle_calls, y: meV(lc.rmse), name: 'RMSE', mode: 'lines+markers'},
    {x: lc.n_oracle_calls, y: meV(lc.mae), name: 'MAE', mode: 'lines+markers'}];
  for (const [k, v] of Object.entries(lc.targets)) if (v)
    lcTraces.push({x: [Math.min(...lc.n_oracle_calls), Math.max(...lc.n_oracle_calls)],
                   y: [1000 * v, 1000 * v], name: k, mode: 'lines', line: {dash: 'dot'}});
  plot('learning_curve', lcTraces, 'Learning curve (cross-validated)', 'oracle calls',
       'error (meV/atom)');
  if (p.calibration){
    const c = p.calibration;
    plot('calibration', [{x: [0, 1], y: [0, 1], name: 'ideal', mode: 'lines',
                          line: {dash: 'dash', color: 'grey'}},
                         {x: c.nominal, y: c.observed, name: 'observed', mode: 'lines+markers'}],
         'Calibration (ECE ' + fmt(c.ece) + ')', 'nominal coverage', 'observed coverage');
  }
  if (p.parity){
    const q = p.parity, lo = Math.min(...q.oracle, ...q.mean), hi = Math.max(...q.oracle, ...q.mean);
    plot('parity', [{x: q.oracle, y: q.mean, text: q.ids, mode: 'markers', name: 'out-of-fold',
                     error_y: {type: 'data', array: q.std, visible: true}},
                    {x: [lo, hi], y: [lo, hi], mode: 'lines', name: 'y = x',
                     line: {dash: 'dash', color: 'grey'}}],
         'Parity: surrogate vs oracle', 'oracle (eV/atom)', 'surrogate (eV/atom)');
  }
  if (p.hull){
    const h = p.hull, on = h.e_above_hull.map(e => e < 1e-6);
    const pick = (a, keep) => a.filter((_, i) => on[i] === keep);
    const order = pick(h.x, true).map((x, i) => [x, pick(h.formation_energy, true)[i],
                                                  pick(h.ids, true)[i]]).sort((a, b) => a[0] - b[0]);
    const u = h.predicted, predicted = !u ? [] : [{x: u.x, y: u.formation_energy, text: u.ids,
      mode: 'markers', name: 'unlabelled: predicted ± 1 std (model ' + u.model_iteration + ')',
      marker: {color: 'grey', size: 4, opacity: 0.5},
      error_y: {type: 'data', array: u.std, visible: true, thickness: 0.6, width: 0}}];
    plot('hull', [...predicted, {x: pick(h.x, false), y: pick(h.formation_energy, false),
                   text: pick(h.ids, false), mode: 'markers', name: 'labelled'},
                  {x: order.map(o => o[0]), y: order.map(o => o[1]), text: order.map(o => o[2]),
                   mode: 'lines+markers', name: 'ground states', line: {color: 'red'}}],
         'Convex hull (' + h.method + ')', 'fraction ' + h.x_element, 'formation energy (eV/atom)');
  }
  fill('history', p.history.map(h => row([h.iteration, h.rule, h.n_oracle_calls, h.rmse,
                                          h.acquired.length, h.decision, h.time])));
  fill('acquisitions', p.acquisitions.map(a => row([a.iteration, a.candidate_id, a.formula,
                                                    a.rule, a.score, a.state])));
}

function cifLink(cid, relaxed){
  const url = BASE + '/structures/' + encodeURIComponent(cid) + '.cif' + (relaxed ? '?relaxed=true' : '');
  return el('a', relaxed ? 'relaxed' : 'CIF', {href: url, 'class': relaxed ? 'cif-relaxed' : 'cif'});
}

async function loadCandidates(){
  const q = new URLSearchParams({page: page, per_page: document.getElementById('per-page').value,
                                 sort: document.getElementById('sort').value});
  const search = document.getElementById('search').value.trim();
  const state = document.getElementById('state').value;
  if (search) q.set('search', search);
  if (state) q.set('state', state);
  const t = await getJSON(BASE + '/candidates?' + q);
  if (!changed('candidates', t)) return;
  nPages = t.n_pages;
  document.getElementById('page-info').textContent =
    'page ' + t.page + ' of ' + t.n_pages + ' (' + t.total + ' candidates)';
  document.getElementById('prev').disabled = t.page <= 1;
  document.getElementById('next').disabled = t.page >= t.n_pages;
  fill('candidates', t.rows.map(r => {
    const links = el('td'); links.appendChild(cifLink(r.candidate_id, false));
    if (r.relaxed){ links.appendChild(document.createTextNode(' ')); links.appendChild(cifLink(r.candidate_id, true)); }
    return row([r.candidate_id, r.formula, r.n_sites, r.state, r.energy_per_atom, r.energy_source,
                r.predicted, r.sigma, r.iteration, links], {'data-id': r.candidate_id});
  }));
  document.getElementById('candidates').setAttribute('data-page', String(t.page));
}

async function refresh(){
  try { await loadStatus(); await loadPlots(); await loadCandidates(); showError(null);
        document.body.setAttribute('data-refreshed', String(Date.now())); }
  catch (e) { showError(e); }
}
function reloadTable(first){ if (first) page = 1; loadCandidates().then(() => showError(null), showError); }
document.getElementById('prev').onclick = () => { if (page > 1){ page--; reloadTable(false); } };
document.getElementById('next').onclick = () => { if (page < nPages){ page++; reloadTable(false); } };
for (const id of ['state', 'sort', 'per-page']) document.getElementById(id).onchange = () => reloadTable(true);
let timer = null;
document.getElementById('search').oninput = () => { clearTimeout(timer); timer = setTimeout(() => reloadTable(true), 250); };
poll(refresh);
</script></body></html>"""
)
