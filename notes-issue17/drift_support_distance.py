import numpy as np
from simulator.dataset import generate
from simulator.machine import VirtualMachine
from simulator.scenarios import Scenario
from edge.fdrest import FEATURES
Q = np.array([0.001,0.01,0.1,0.25,0.5,0.75,0.9,0.99,0.999])
x, y = generate(20000, 0)
qs = np.quantile(x, Q, axis=0); mn, mx = x.min(0), x.max(0); sd = x.std(0)
envs = {"q.001-.999": (qs[0], qs[-1]), "q.01-.99": (qs[1], qs[-2]), "min-max": (mn, mx)}
def excess(w, lo, hi):
    return np.maximum(np.maximum(w - hi, lo - w), 0).mean(0)/sd
W=300
res={k:[] for k in envs}
for seed in range(3):
  for prof in ["default","motor-1500","pump-3000","compressor-3600"]:
    scens = [Scenario.healthy(), Scenario.multi()] + [Scenario.developing(f, minutes=10) for f in range(8)] + [Scenario.random(seed)]
    for sc in scens:
      m = VirtualMachine(seed, prof, scenario=sc)
      rows = np.array([[r.features[f] for f in FEATURES] for r in m.run(1200, 2.0)])
      for k in range(0, 1200-W+1, 300):
        w = rows[k:k+W]
        for e,(lo,hi) in envs.items():
            d = excess(w, lo, hi); res[e].append((d.max(), FEATURES[d.argmax()], prof, sc.name))
for e in envs:
    a = np.array([r[0] for r in res[e]])
    print(e, "max %.4f p99 %.4f median %.4f frac>0 %.2f" % (a.max(), np.quantile(a,.99), np.median(a), (a>0).mean()), max(res[e])[1:])
m = VirtualMachine(5, "default", scenario="healthy"); base = np.array([[r.features[f] for f in FEATURES] for r in m.run(W, 2.0)])
for name in ["Temperature","PEAK_Axial","Rotation Speed","KURTOSIS_Horizontal"]:
  j=FEATURES.index(name); mu=x[:,j].mean()
  print(name, "base mean at %.2f sd from training mean"%((base[:,j].mean()-mu)/sd[j]), "q.999 at %.2f sd"%((qs[-1,j]-mu)/sd[j]))
  for k in [1,2,3,4,6]:
    w = base.copy(); w[:,j] += k*sd[j]
    print("  +%d sd"%k, " ".join("%s %.3f"%(e, excess(w,*envs[e])[j]) for e in envs))
