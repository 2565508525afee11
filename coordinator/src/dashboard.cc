#include "dashboard.h"

namespace dtrn::coordinator {

const std::string& dashboard_html() {
  static const std::string kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dtrn coordinator</title>
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#e6e6e6}
 header{display:flex;gap:24px;align-items:center;padding:12px 20px;background:#1a2027;border-bottom:1px solid #2c343d}
 header h1{font-size:18px;margin:0}
 .stat{display:flex;flex-direction:column}.stat b{font-size:18px}.stat span{font-size:11px;color:#9aa5b1}
 main{display:grid;grid-template-columns:2fr 1fr;gap:16px;padding:16px 20px}
 section{background:#1a2027;border:1px solid #2c343d;border-radius:6px;padding:12px}
 section h2{font-size:13px;margin:0 0 8px;color:#9aa5b1;text-transform:uppercase;letter-spacing:.05em}
 canvas{width:100%;height:260px}
 .small canvas{height:140px}
 table{width:100%;border-collapse:collapse;font-size:13px}td,th{padding:3px 6px;text-align:left;border-bottom:1px solid #2c343d}
 #legend span{display:inline-block;margin-right:14px}
 #legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
 .starved{color:#ff6b6b;font-weight:bold}.saturated{color:#ffa94d;font-weight:bold}
 #events{font:12px ui-monospace,monospace;max-height:300px;overflow:auto;white-space:pre-wrap}
 .state{padding:2px 8px;border-radius:10px;background:#2c343d}
 .running{background:#2b8a3e}.restarting{background:#e67700}.failed{background:#c92a2a}.succeeded{background:#1864ab}
</style></head><body>
<header><h1>dtrn</h1>
 <select id="job-select"></select>
 <span id="job-state" class="state">no job</span>
 <div class="stat"><b id="job-step">-</b><span>step</span></div>
 <div class="stat"><b id="job-loss">-</b><span>loss</span></div>
 <div class="stat"><b id="job-tps">-</b><span>tokens/s</span></div>
 <div class="stat"><b id="job-restarts">-</b><span>restarts (generation)</span></div>
</header>
<main>
 <div>
  <section><h2>Routed fraction per D layer</h2><canvas id="routing"></canvas><div id="legend"></div></section>
  <div style="display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-top:16px" class="small">
   <section><h2>Loss</h2><canvas id="loss"></canvas></section>
   <section><h2>Tokens / s</h2><canvas id="tps"></canvas></section>
  </div>
 </div>
 <div>
  <section><h2>Workers</h2><table id="workers"><thead><tr><th>rank</th><th>host</th><th>state</th><th>step</th><th>phase</th><th>heartbeat</th></tr></thead><tbody></tbody></table></section>
  <section style="margin-top:16px"><h2>Events</h2><div id="events"></div></section>
 </div>
</main>
<script>
const colors=['#4dabf7','#69db7c','#ffd43b','#f783ac','#a9e34b','#ffa94d','#b197fc','#63e6be','#ff8787','#74c0fc'];
let jobId=null,steps=[],generation=-1;
const $=id=>document.getElementById(id);
function fmt(x,d){return x===undefined?'-':Number(x).toFixed(d)}
function draw(canvas,series,opts){
  const dpr=window.devicePixelRatio||1,w=canvas.clientWidth,h=canvas.clientHeight;
  canvas.width=w*dpr;canvas.height=h*dpr;const g=canvas.getContext('2d');g.scale(dpr,dpr);
  g.clearRect(0,0,w,h);const L=44,B=18,W=w-L-8,H=h-B-6;
  let xs=[],ys=[];series.forEach(s=>s.points.forEach(p=>{xs.push(p[0]);ys.push(p[1])}));
  if(!xs.length)return;
  let x0=Math.min(...xs),x1=Math.max(...xs);if(x1===x0)x1=x0+1;
  let y0=opts.min!==undefined?opts.min:Math.min(...ys),y1=opts.max!==undefined?opts.max:Math.max(...ys);if(y1===y0)y1=y0+1;
  const X=x=>L+(x-x0)/(x1-x0)*W,Y=y=>6+H-(y-y0)/(y1-y0)*H;
  g.strokeStyle='#2c343d';g.fillStyle='#9aa5b1';g.font='11px sans-serif';
  for(let i=0;i<=4;i++){const y=y0+(y1-y0)*i/4;g.beginPath();g.moveTo(L,Y(y));g.lineTo(L+W,Y(y));g.stroke();g.fillText(y.toPrecision(3),2,Y(y)+4)}
  g.fillText('step '+x0,L,h-4);g.fillText(String(x1),L+W-30,h-4);
  (opts.guides||[]).forEach(v=>{g.setLineDash([4,4]);g.strokeStyle='#868e96';g.beginPath();g.moveTo(L,Y(v));g.lineTo(L+W,Y(v));g.stroke();g.setLineDash([])});
  series.forEach(s=>{g.strokeStyle=s.color;g.lineWidth=1.5;g.beginPath();s.points.forEach((p,i)=>i?g.lineTo(X(p[0]),Y(p[1])):g.moveTo(X(p[0]),Y(p[1])));g.stroke()});
}
function render(job){
  $('job-state').textContent=(job.state||'').replace('JOB_STATE_','').toLowerCase();
  $('job-state').className='state '+$('job-state').textContent;
  $('job-step').textContent=job.step||0;
  $('job-restarts').textContent=(job.restarts||0)+' ('+(job.generation||0)+')';
  const last=steps[steps.length-1];
  if(last){$('job-loss').textContent=fmt(last.loss,4);$('job-tps').textContent=fmt(last.tokensPerS,0)}
  const layers={};steps.forEach(s=>(s.layers||[]).forEach(l=>{(layers[l.layer||0]=layers[l.layer||0]||[]).push([Number(s.step),l.f||0])}));
  const ids=Object.keys(layers).sort((a,b)=>a-b);
  draw($('routing'),ids.map((id,i)=>({color:colors[i%colors.length],points:layers[id]})),{min:0,max:1,guides:[0.01,0.9]});
  $('legend').innerHTML=ids.map((id,i)=>{const l=(last.layers||[]).find(x=>(x.layer||0)==id)||{};
    const cls=l.starved?'starved':(l.saturated?'saturated':'');
    return '<span class="'+cls+'" data-layer="'+id+'"><i style="background:'+colors[i%colors.length]+'"></i>layer '+id+': f '+fmt(l.f,3)+
      ' [min '+fmt(l.fMin,3)+', max '+fmt(l.fMax,3)+'] s '+fmt(l.s,3)+(l.starved?' STARVED':'')+(l.saturated?' SATURATED':'')+'</span>'}).join('');
  draw($('loss'),[{color:'#4dabf7',points:steps.map(s=>[Number(s.step),s.loss||0])}],{});
  draw($('tps'),[{color:'#69db7c',points:steps.map(s=>[Number(s.step),s.tokensPerS||0])}],{min:0});
  $('workers').tBodies[0].innerHTML=(job.workers||[]).map(w=>'<tr><td>'+(w.rank||0)+'</td><td>'+w.host+'</td><td>'+w.state+'</td><td>'+(w.step||0)+
    '</td><td>'+(w.phase||'')+'</td><td>'+fmt(w.heartbeatAgeS,1)+' s ago</td></tr>').join('');
}
async function tick(){
  try{
    const list=await (await fetch('/api/jobs')).json();const jobs=list.jobs||[];
    const sel=$('job-select');const ids=jobs.map(j=>j.id);
    if(sel.options.length!==ids.length){sel.innerHTML=ids.map(id=>'<option>'+id+'</option>').join('');if(ids.length)sel.value=ids[ids.length-1]}
    if(sel.value&&sel.value!==jobId){jobId=sel.value;steps=[];generation=-1}
    if(!jobId)return;
    const since=steps.length?steps[steps.length-1].step:0;
    const h=await (await fetch('/api/job?id='+encodeURIComponent(jobId)+'&since='+since)).json();
    const gen=h.job.generation||0;
    if(gen!==generation&&generation!==-1){steps=[];generation=gen;return tick()}
    generation=gen;steps=steps.concat(h.steps||[]);
    render(h.job);
    $('events').textContent=(h.events||[]).map(e=>new Date(e.timeUnixS*1000).toISOString().substr(11,8)+'  '+e.log).reverse().join('\n');
  }catch(e){$('job-state').textContent='coordinator unreachable'}
}
tick();setInterval(tick,1000);
</script></body></html>
)HTML";
  return kPage;
}

}  // namespace dtrn::coordinator
