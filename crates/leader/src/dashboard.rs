//! A one-page dashboard: jobs, tasks and workers, refreshed from the JSON API every second.

use axum::response::Html;

/// Serves the page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>RainStorm</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eef}
.running{color:#06c}.succeeded,.alive,.finished{color:#080}.failed,.dead{color:#c00}.cancelled{color:#888}
</style></head><body>
<h1>RainStorm</h1>
<h2>Jobs</h2><table id="jobs"></table>
<h2>Tasks</h2><table id="tasks"></table>
<h2>Workers</h2><table id="workers"></table>
<script>
function esc(s){return String(s ?? '').replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]))}
function fill(id, cols, rows){
  const t=document.getElementById(id);
  t.innerHTML='<tr>'+cols.map(c=>'<th>'+c+'</th>').join('')+'</tr>'+
    rows.map(r=>'<tr>'+cols.map(c=>{const v=r[c]; return '<td class="'+esc(v)+'">'+esc(typeof v==='object'&&v?JSON.stringify(v):v)+'</td>'}).join('')+'</tr>').join('');
}
// The API needs the cluster secret: open the page as /#token=SECRET (the fragment never
// leaves the browser), or type it when asked; it is kept for this tab only.
function token(){
  const m=location.hash.match(/token=([^&]+)/);
  if(m){sessionStorage.setItem('rainstorm-token',decodeURIComponent(m[1])); history.replaceState(null,'',location.pathname);}
  return sessionStorage.getItem('rainstorm-token')||'';
}
let asked=false;
async function get(u){
  const r=await fetch(u,{headers:token()?{'Authorization':'Bearer '+token()}:{}});
  if(r.status===401){
    const t=asked?null:prompt('Cluster secret');
    asked=true;
    if(t){sessionStorage.setItem('rainstorm-token',t);}
    throw new Error('unauthorized');
  }
  return r.json();
}
async function refresh(){
  try{
    const [j,t,w]=await Promise.all(['/api/jobs','/api/tasks','/api/workers'].map(get));
    fill('jobs',['id','name','status','delivery','source_tuples','sink_tuples','failures','recoveries','elapsed_ms','latency_ms','error'],j.reverse());
    fill('tasks',['job','stage','task','worker','pid','state','attempt','tuples_in','tuples_out','input_rate','operator'],t);
    fill('workers',['id','address','state','last_heartbeat_s','running_tasks'],w);
  }catch(e){}
}
refresh(); setInterval(refresh,1000);
</script></body></html>"#;
