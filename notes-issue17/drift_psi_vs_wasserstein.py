import numpy as np
from simulator.dataset import generate
from simulator.machine import VirtualMachine
from simulator.scenarios import Scenario
from edge.fdrest import FEATURES
Q = np.array([0.001,0.01,0.1,0.25,0.5,0.75,0.9,0.99,0.999])
x, y = generate(20000, 0)
qs = np.quantile(x, Q, axis=0); mn, mx = x.min(0), x.max(0); sd = x.std(0)
U = np.r_[0, Q, 1]; TQ = np.vstack([mn, qs, mx]); exp_p = np.diff(U)
def psi(w):
    c = np.array([np.bincount(np.searchsorted(qs[:,j], w[:,j], side='right'), minlength=10) for j in range(35)]).T/len(w)
    p = np.maximum(c, 1e-4); return ((p-exp_p[:,None])*np.log(p/exp_p[:,None])).sum(0)
def w1(w):
    d = np.abs(np.quantile(w, U, axis=0) - TQ)
    return (exp_p[:,None]*(d[1:]+d[:-1])/2).sum(0)/sd
W=300
res=[]
for seed in range(3):
  for prof in ["default","motor-1500","pump-3000","compressor-3600"]:
    scens = [Scenario.healthy(), Scenario.multi()] + [Scenario.developing(f, minutes=10) for f in range(8)] + [Scenario.random(seed)]
    for sc in scens:
      m = VirtualMachine(seed, prof, scenario=sc)
      rows = np.array([[r.features[f] for f in FEATURES] for r in m.run(1200, 2.0)])
      for k in range(0, 1200-W+1, 300):
        w = rows[k:k+W]; ww=w1(w); p=psi(w)
        res.append((prof, sc.name, seed, ww.max(), ww.mean(), p.max(), FEATURES[ww.argmax()]))
a = np.array([r[3] for r in res]); b=np.array([r[4] for r in res]); c=np.array([r[5] for r in res])
print("windows", len(res), "W1/sd max-over-features: max %.2f p99 %.2f median %.2f" % (a.max(), np.quantile(a,.99), np.median(a)))
print("W1/sd mean-over-features: max %.2f median %.2f" % (b.max(), np.median(b)))
print("PSI max-over-features: min %.2f median %.2f max %.2f" % (c.min(), np.median(c), c.max()))
worst = sorted(res, key=lambda r:-r[3])[:5]
for r in worst: print(r)
# drift: default healthy, push one feature by k sd
m = VirtualMachine(5, "default", scenario="healthy"); base = np.array([[r.features[f] for f in FEATURES] for r in m.run(W, 2.0)])
for j in [FEATURES.index("Temperature"), FEATURES.index("PEAK_Axial"), 0]:
  for k in [0,1,2,3,4,6]:
    w = base.copy(); w[:,j] += k*sd[j]; ww=w1(w)
    print(FEATURES[j], k, "W1 %.2f"%ww[j], "PSI %.2f"%psi(w)[j])
