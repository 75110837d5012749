# Compares the tensors node-moe (NODE_MOE_DUMP, see README.md) and lldump wrote: per name and layer,
# the largest difference and how many values differ. Usage: compare.py <dir> <names,...> <layers>
import numpy as np, sys, os
d = sys.argv[1]
def load(p): return np.fromfile(p, dtype=np.float32)
ours = os.path.join(d, 'ours'); ll = os.path.join(d, os.environ.get('LL','ll'))
names = sys.argv[2].split(',')
L = int(sys.argv[3])
for il in range(L):
    for nm in names:
        a = os.path.join(ours, f'{nm}-{il}.bin'); b = os.path.join(ll, f'{nm}-{il}.bin')
        if not os.path.exists(a) or not os.path.exists(b): continue
        x, y = load(a), load(b)
        if x.size != y.size: print(nm, il, 'size', x.size, y.size); continue
        diff = np.abs(x - y); rel = diff.max() / (np.abs(y).max() + 1e-30)
        nz = np.nonzero(diff)[0]
        print(f'{nm}-{il}: maxabs {diff.max():.3g} rel {rel:.3g} ndiff {nz.size}/{x.size} first {nz[0] if nz.size else -1}')
x = load(os.path.join(ours,'logits.bin')); y = load(os.path.join(ll,'logits.bin'))
print('logits maxabs', np.abs(x-y).max(), 'ndiff', np.count_nonzero(x-y))
