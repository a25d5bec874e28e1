// The RainStorm dashboard: jobs, tasks and workers from the JSON API, refreshed every second.
// Every value (a job's name, an operator's path, an error, a worker's address) is put into
// the page as text (textContent), never parsed as HTML: whatever a job or a worker sends is
// shown, never run. The page's Content-Security-Policy runs only this file, no inline script
// or event handler.
'use strict';

// A state word (running, dead, …) colours its cell through a class; anything else gets none.
const STATE = /^[a-z]{1,16}$/;

function cell(tag, value) {
  const el = document.createElement(tag);
  const text = value === null || value === undefined ? ''
    : typeof value === 'object' ? JSON.stringify(value) : String(value);
  el.textContent = text;
  if (tag === 'td' && typeof value === 'string' && STATE.test(value)) {
    el.classList.add(value);
  }
  return el;
}

function fill(id, cols, rows) {
  const table = document.getElementById(id);
  const head = document.createElement('tr');
  for (const c of cols) {
    head.appendChild(cell('th', c));
  }
  const body = [head];
  for (const r of rows) {
    const tr = document.createElement('tr');
    for (const c of cols) {
      tr.appendChild(cell('td', r[c]));
    }
    body.push(tr);
  }
  table.replaceChildren(...body);
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
    if (typed) {
      sessionStorage.setItem('rainstorm-token', typed);
    }
    throw new Error('unauthorized');
  }
  return r.json();
}

async function refresh() {
  try {
    const [j, t, w] = await Promise.all(['/api/jobs', '/api/tasks', '/api/workers'].map(get));
    fill('jobs', ['id', 'name', 'status', 'delivery', 'source_tuples', 'sink_tuples', 'failures',
      'recoveries', 'elapsed_ms', 'latency_ms', 'error'], j.reverse());
    fill('tasks', ['job', 'stage', 'task', 'worker', 'pid', 'state', 'attempt', 'tuples_in',
      'tuples_out', 'input_rate', 'operator'], t);
    fill('workers', ['id', 'address', 'state', 'last_heartbeat_s', 'running_tasks'], w);
  } catch (e) {
    // The next refresh tries again (a leader restarting, a secret not typed yet).
  }
}

refresh();
setInterval(refresh, 1000);
