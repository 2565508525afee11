set -x
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
B=build-gpu/bin/dtrn
cfg="--config deploy/configs/360m.yaml --set train.micro_batch=8 --set model.seq_len=2048 --set model.n_layers=4"
$B bench $cfg --set model.layout=TTTT --steps 5 --warmup 3 --json
$B bench $cfg --set model.layout=TTDT --steps 5 --warmup 3 --routed-fraction 0.1 --json
$B bench $cfg --set model.layout=TTDT --steps 5 --warmup 3 --routed-fraction 1.0 --json
ncu --clock-control none --metrics gpu__time_duration.sum --csv $B bench $cfg --set model.layout=TTDT --steps 1 --warmup 1 --routed-fraction 0.1 > $OUT/ncu.csv 2>$OUT/ncu.err
python3 - <<'PY'
import csv, collections, os
rows=list(csv.reader(open(os.environ['OUT']+'/ncu.csv')))
hdr=None; tot=collections.Counter(); cnt=collections.Counter()
for r in rows:
    if 'Kernel Name' in r: hdr=r; continue
    if hdr is None or len(r)!=len(hdr): continue
    d=dict(zip(hdr,r))
    if d.get('Metric Name')!='gpu__time_duration.sum': continue
    v=float(d['Metric Value'].replace(',',''))
    unit=d.get('Metric Unit','')
    if unit=='usecond': v*=1e3
    elif unit=='msecond': v*=1e6
    name=d['Kernel Name'][:110]
    tot[name]+=v; cnt[name]+=1
s=sum(tot.values())
print('total ms', s/1e6)
for k,v in tot.most_common(40): print(f"{v/1e6:9.3f} ms {cnt[k]:5d}  {k}")
PY
