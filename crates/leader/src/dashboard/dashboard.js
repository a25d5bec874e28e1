// The RainStorm dashboard: each job as a graph (source → stages → sink) with the bottleneck
// stage marked, per-task detail on click, recent failures and rescales, and the workers;
// refreshed from the JSON API every second, updating nodes in place (what is open stays open).
// Every value (a job's name, an operator's path, an error, a worker's address) is put into
// the page as text (textContent) or an attribute value, never parsed as HTML: whatever a job
// or a worker sends is shown, never run. The page's Content-Security-Policy runs only this
// file, no inline script or event handler.
'use strict';

// ---- Pure: what the numbers say ----

const num = (v) => (typeof v === 'number' && isFinite(v) ? v : 0);

// One stage's summary from its tasks' views: counts and rates are sums over the tasks owning
// key groups, the busy / back-pressured / idle shares means over those running (null if none).
// Standby tasks (idle, holding no slot) are only counted: they must not dilute the shares.
function summarize(tasks) {
  const s = { tasks: 0, standby: 0, running: 0, failed: 0, inRate: 0, outRate: 0, queued: 0,
    busy: null, backpressured: null, idle: null };
  let busy = 0, bp = 0, idle = 0;
  for (const t of tasks) {
    if (t.standby) { s.standby++; continue; }
    s.tasks++;
    s.inRate += num(t.input_rate);
    s.outRate += num(t.output_rate);
    s.queued += num(t.queued);
    if (t.state === 'failed') s.failed++;
    if (t.state !== 'running') continue;
    s.running++;
    busy += num(t.busy);
    bp += num(t.backpressured);
    idle += num(t.idle);
  }
  if (s.running > 0) {
    s.busy = busy / s.running;
    s.backpressured = bp / s.running;
    s.idle = idle / s.running;
  }
  return s;
}

// A stage busier than this is "meaningfully busy"; below it nothing holds the job back.
const BUSY_MIN = 0.3;

// THE BOTTLENECK RULE (docs/decisions.md): back-pressure reasoning as Flink's UI does it. A
// stage that cannot keep up is busy all the time while the stages before it wait on it
// (back-pressured) and the stages after it wait for it (idle). So the bottleneck is the
// operator stage (never the source or the sink) with the highest mean busy share, provided
// that share is above BUSY_MIN and above the stage's own back-pressured share (a stage that
// spends more time waiting on its downstream is held back, not holding back). On a tie the
// most upstream stage wins. No stage qualifies → null (nothing marked).
// `stages`: [{stage, busy, backpressured}] in stage order. Returns a stage number or null.
function bottleneck(stages) {
  let best = null;
  for (const s of stages) {
    if (s.busy === null || s.busy <= BUSY_MIN || s.busy <= num(s.backpressured)) continue;
    if (best === null || s.busy > best.busy) best = s;
  }
  return best === null ? null : best.stage;
}

// ---- Formatting ----

function rate(x) {
  x = num(x);
  if (x >= 10000) return (x / 1000).toFixed(0) + 'k/s';
  if (x >= 1000) return (x / 1000).toFixed(1) + 'k/s';
  return (x >= 10 ? x.toFixed(0) : x.toFixed(1)) + '/s';
}
const pct = (x) => (x === null || x === undefined ? '–' : Math.round(num(x) * 100) + '%');
function duration(ms) {
  const s = Math.floor(num(ms) / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}
// An operator or path by its last component, each step of a chain of built-ins
// (`filter x | select 3`) by its name (the full text goes in the tooltip).
const base = (p) =>
  String(p || '')
    .split(' | ')
    .map((step) => step.split(' ')[0].split('/').pop())
    .join(' | ');

// ---- DOM helpers: elements built empty, text written only when it changed ----

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function setText(e, v) {
  const text = v === null || v === undefined ? '' : String(v);
  if (e.textContent !== text) e.textContent = text;
}

// A state word (running, dead, …) colours its cell through a class; anything else gets none.
const STATE = /^[a-z]{1,16}$/;

function setCell(td, v) {
  const text = v === null || v === undefined ? ''
    : typeof v === 'object' ? JSON.stringify(v) : String(v);
  setText(td, text);
  const cls = typeof v === 'string' && STATE.test(v) ? v : '';
  if (td.className !== cls) td.className = cls;
}

// Keeps a table's body in step with `rows` by key: existing rows are updated in place, new
// ones added, vanished ones removed. `cols`: [[heading, row => value]].
function syncTable(table, cols, rows, key, onRow) {
  if (!table.tHead) {
    const tr = table.createTHead().insertRow();
    for (const [h] of cols) setText(el('th', '', tr), h);
    table.createTBody();
  }
  const body = table.tBodies[0];
  const old = new Map();
  for (const tr of body.rows) old.set(tr.dataset.key, tr);
  rows.forEach((r, i) => {
    const k = String(key(r));
    let tr = old.get(k);
    if (tr) {
      old.delete(k);
    } else {
      tr = el('tr');
      tr.dataset.key = k;
      for (let c = 0; c < cols.length; c++) el('td', '', tr);
      if (onRow) onRow(tr, k);
    }
    cols.forEach(([, get], c) => setCell(tr.cells[c], get(r)));
    if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
  });
  for (const tr of old.values()) tr.remove();
}

// Puts `children` into `parent` in this order, moving only what is out of place.
function order(parent, children) {
  children.forEach((c, i) => {
    if (parent.children[i] !== c) parent.insertBefore(c, parent.children[i] || null);
  });
  while (parent.children.length > children.length) parent.lastElementChild.remove();
}

// ---- What the user opened, kept across refreshes ----

const openStages = new Set(); // "job/stage": a stage whose task table is shown
const openJobs = new Set(); // an ended job whose graph is shown
const cards = new Map(); // job id → its card's nodes

function toggle(set, k) {
  if (set.has(k)) set.delete(k); else set.add(k);
  render();
}

// ---- A job's card: header, notes, graph, task tables ----

function node(card, n, kind) {
  const box = el('div', 'node ' + kind);
  box.dataset.stage = String(n);
  box.dataset.bottleneck = 'false';
  const parts = { box, kind, title: el('div', 'title', box), badge: el('div', 'badge', box),
    lines: [el('div', 'line', box), el('div', 'line', box), el('div', 'line', box)] };
  parts.bar = el('div', 'bar', box);
  parts.segs = ['busy', 'bp', 'idle'].map((c) => el('span', c, parts.bar));
  parts.shares = el('div', 'line shares', box);
  box.tabIndex = 0;
  const k = card.id + '/' + n;
  box.addEventListener('click', () => toggle(openStages, k));
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(openStages, k); }
  });
  return parts;
}

function newCard(id) {
  const root = el('div', 'job');
  const head = el('div', 'head', root);
  const card = { id, root, nodes: new Map(), arrows: [], tables: new Map(),
    name: el('span', 'name', head), status: el('span', 'status', head),
    jid: el('span', 'id', head), facts: el('span', 'facts', head),
    note: el('div', 'note', root), graph: el('div', 'graph', root),
    scaling: el('div', 'scaling', root), details: el('div', 'details', root) };
  card.graph.dataset.job = id;
  head.addEventListener('click', () => { if (openJobs.has(id)) toggle(openJobs, id); });
  return card;
}

// What node n of a job with `count` stages is called.
function label(job, n, count) {
  if (n === 0) return ['Source', 'the source'];
  if (n === count + 1) return ['Sink · ' + base(job.sink), String(job.sink || '')];
  const desc = String(job.stages[n - 1]).replace(/^\d+×/, '');
  return ['Stage ' + n + ' · ' + base(desc), desc];
}

function updateCard(card, job, tasks) {
  const ended = job.status !== 'running' && job.status !== 'pending';
  card.root.classList.toggle('ended', ended);
  setText(card.name, job.name || '(unnamed)');
  setText(card.status, job.status);
  card.status.className = 'status ' + (STATE.test(job.status) ? job.status : '');
  setText(card.jid, job.id);
  const lat = job.latency_ms ? ' · latency p50 ' + Math.round(num(job.latency_ms.p50)) +
    ' ms, p99 ' + Math.round(num(job.latency_ms.p99)) + ' ms' : '';
  setText(card.facts, job.delivery + ' · ' + duration(job.elapsed_ms) + ' · ' +
    num(job.source_tuples) + ' read → ' + num(job.sink_tuples) + ' written · ' +
    num(job.failures) + ' failures, ' + num(job.recoveries) + ' recoveries' + lat +
    (ended ? ' · click to close' : ''));
  const notes = [];
  if (job.pending_reason) notes.push('Waiting: ' + job.pending_reason);
  if (job.error) notes.push('Error: ' + job.error);
  if (job.last_failure) notes.push('Last failure: ' + job.last_failure);
  setText(card.note, notes.join('\n'));

  // Node n's tasks, as TaskInfo.stage numbers them: 0 is the source, 1..count the operator
  // stages, count+1 the sink (whose tasks the API may or may not list).
  const count = Array.isArray(job.stages) ? job.stages.length : 0;
  const sums = [];
  for (let n = 0; n <= count + 1; n++) {
    sums.push(Object.assign({ stage: n }, summarize(tasks.filter((t) => t.stage === n))));
  }
  const marked = bottleneck(sums.slice(1, count + 1));
  const wanted = [];
  for (let n = 0; n <= count + 1; n++) {
    const kind = n === 0 ? 'source' : n === count + 1 ? 'sink' : 'stage';
    let p = card.nodes.get(n);
    if (!p || p.kind !== kind) {
      p = node(card, n, kind);
      card.nodes.set(n, p);
    }
    if (n > 0) {
      if (!card.arrows[n]) card.arrows[n] = el('span', 'arrow');
      setText(card.arrows[n], '→');
      wanted.push(card.arrows[n]);
    }
    wanted.push(p.box);
    const s = sums[n];
    const [title, tip] = label(job, n, count);
    setText(p.title, title);
    p.box.title = tip + ' (click for its tasks)';
    // An operator stage's tasks owning key groups, as the job's view counts them.
    const owning = (kind === 'stage' && num((job.stage_tasks || [])[n - 1])) || s.tasks;
    if (kind === 'stage') p.box.dataset.stageTasks = String(owning);
    setText(p.lines[0], [owning + (owning === 1 ? ' task' : ' tasks'),
      s.running !== owning && s.running + ' running', s.failed && s.failed + ' failed',
      s.standby && '+' + s.standby + ' standby'].filter(Boolean).join(', '));
    if (kind === 'source') {
      setText(p.lines[1], num(job.source_tuples) + ' read · out ' + rate(s.outRate));
    } else if (kind === 'sink') {
      setText(p.lines[1], num(job.sink_tuples) + ' written · in ' + rate(s.inRate));
    } else {
      setText(p.lines[1], 'in ' + rate(s.inRate) + ' · out ' + rate(s.outRate));
    }
    setText(p.lines[2], 'queue ' + s.queued);
    const shares = [s.busy, s.backpressured, s.idle];
    p.segs.forEach((seg, i) => { seg.style.width = pct(shares[i] === null ? 0 : shares[i]); });
    setText(p.shares, 'busy ' + pct(s.busy) + ' · bp ' + pct(s.backpressured) + ' · idle ' +
      pct(s.idle));
    p.bar.title = 'mean over running tasks: busy ' + pct(s.busy) + ', back-pressured ' +
      pct(s.backpressured) + ', idle ' + pct(s.idle);
    p.box.classList.toggle('open', openStages.has(card.id + '/' + n));
    const isB = n === marked;
    p.box.dataset.bottleneck = String(isB);
    setText(p.badge, isB ? 'bottleneck' : '');
  }
  for (const n of card.nodes.keys()) if (n > count + 1) card.nodes.delete(n);
  order(card.graph, wanted);
  const scaling = Array.isArray(job.scaling) ? job.scaling.slice(-10).reverse() : [];
  setText(card.scaling, scaling.map(scaleLine).join('\n'));
  updateDetails(card, job, tasks, count);
}

// One rescale of the job's list under its graph: when, stage, from → to, outcome, rate, why.
function scaleLine(s) {
  return [new Date(num(s.time_ms)).toLocaleTimeString(), 'stage ' + s.stage,
    num(s.from) + ' → ' + num(s.to) + ' tasks', s.rate === undefined ? '' : 'at ' + rate(s.rate),
    s.outcome + (s.took_ms === undefined ? '' : ' in ' + num(s.took_ms) + ' ms'),
    String(s.reason || '') + (s.cause ? ' — ' + s.cause : '')].filter(Boolean).join(' · ');
}

const TASK_COLS = [
  ['task', (t) => t.task], ['worker', (t) => t.worker],
  ['state', (t) => (t.standby && t.state === 'running' ? 'standby' : t.state)],
  ['attempt / restarts', (t) => num(t.attempt) + ' / ' + num(t.restarts)],
  ['tuples in / out', (t) => num(t.tuples_in) + ' / ' + num(t.tuples_out)],
  ['rate in / out', (t) => rate(t.input_rate) + ' / ' + rate(t.output_rate)],
  ['queued', (t) => num(t.queued)], ['busy', (t) => pct(t.busy)],
  ['back-pressured', (t) => pct(t.backpressured)], ['idle', (t) => pct(t.idle)],
  ['error', (t) => t.error || ''],
];

// The task tables of the stages the user opened, in stage order; each kept and updated.
function updateDetails(card, job, tasks, count) {
  const shown = [];
  for (let n = 0; n <= count + 1; n++) {
    const k = card.id + '/' + n;
    if (!openStages.has(k)) { card.tables.delete(n); continue; }
    let d = card.tables.get(n);
    if (!d) {
      const wrap = el('div', 'tasks');
      d = { wrap, caption: el('div', 'caption', wrap), table: el('table', '', wrap) };
      card.tables.set(n, d);
    }
    const mine = tasks.filter((t) => t.stage === n).sort((a, b) => a.task - b.task);
    setText(d.caption, label(job, n, count)[0] + ': tasks' +
      (mine[0] && mine[0].operator ? ' (' + mine[0].operator + ')' : ''));
    syncTable(d.table, TASK_COLS, mine, (t) => t.task);
    shown.push(d.wrap);
  }
  order(card.details, shown);
}

// ---- The page ----

const ENDED_COLS = [
  ['id', (j) => j.id], ['name', (j) => j.name || ''], ['status', (j) => j.status],
  ['delivery', (j) => j.delivery],
  ['read → written', (j) => num(j.source_tuples) + ' → ' + num(j.sink_tuples)],
  ['failures / recoveries', (j) => num(j.failures) + ' / ' + num(j.recoveries)],
  ['elapsed', (j) => duration(j.elapsed_ms)],
  ['error or last failure', (j) => j.error || j.last_failure || ''],
];

const WORKER_COLS = [
  ['id', (w) => w.id], ['address', (w) => w.address], ['state', (w) => w.state],
  ['slots used / total', (w) => (w.slots === undefined || w.slots === null ? '–'
    : num(w.slots_used) + ' / ' + num(w.slots))],
  ['running tasks', (w) => num(w.running_tasks)],
  ['heartbeat', (w) => num(w.last_heartbeat_s).toFixed(1) + ' s ago'],
  ['data conns', (w) => num(w.data_conns)],
];

let data = { jobs: [], tasks: [], workers: [] };

function render() {
  const jobs = data.jobs.slice().reverse(); // newest first
  const live = (j) => j.status === 'running' || j.status === 'pending' || openJobs.has(j.id);
  const byJob = new Map();
  for (const t of data.tasks) {
    if (!byJob.has(t.job)) byJob.set(t.job, []);
    byJob.get(t.job).push(t);
  }
  const shown = [];
  for (const j of jobs.filter(live)) {
    let card = cards.get(j.id);
    if (!card) { card = newCard(j.id); cards.set(j.id, card); }
    updateCard(card, j, byJob.get(j.id) || []);
    shown.push(card.root);
  }
  for (const id of cards.keys()) if (!jobs.some((j) => j.id === id && live(j))) cards.delete(id);
  order(document.getElementById('jobs'), shown);
  setText(document.getElementById('no-jobs'), shown.length ? '' : 'No running job.');
  const ended = jobs.filter((j) => !live(j));
  setText(document.getElementById('ended-count'), ended.length ? '(' + ended.length +
    '; click one to see its graph)' : '(none)');
  syncTable(document.getElementById('ended'), ENDED_COLS, ended, (j) => j.id,
    (tr, id) => tr.addEventListener('click', () => toggle(openJobs, id)));
  syncTable(document.getElementById('workers'), WORKER_COLS, data.workers, (w) => w.id);
}

// The API needs the cluster secret: open the page as /#token=SECRET (the fragment never
// leaves the browser), or type it when asked; it is kept for this tab only.
function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('rainstorm-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('rainstorm-token') || '';
}

let asked = false;
async function get(url) {
  const t = token();
  const r = await fetch(url, { headers: t ? { 'Authorization': 'Bearer ' + t } : {} });
  if (r.status === 401) {
    const typed = asked ? null : prompt('Cluster secret');
    asked = true;
    if (typed) sessionStorage.setItem('rainstorm-token', typed);
    throw new Error('the cluster secret is missing or wrong');
  }
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  return r.json();
}

async function refresh() {
  const status = document.getElementById('updated');
  try {
    const [jobs, tasks, workers] =
      await Promise.all(['/api/jobs', '/api/tasks', '/api/workers'].map(get));
    data = { jobs, tasks, workers };
    render();
    setText(status, 'updated ' + new Date().toLocaleTimeString());
    status.className = '';
  } catch (e) {
    // The next refresh tries again (a leader restarting, a secret not typed yet).
    setText(status, 'not updated: ' + e.message);
    status.className = 'stale';
  }
}

refresh();
setInterval(refresh, 1000);
