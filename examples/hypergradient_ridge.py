"""Tune a ridge penalty by hypergradient descent: IFT + Neumann series (Lorraine et al. 2020).

    w*(lam) = argmin_w 1/2 ||X w - y||^2 + lam/2 ||w||^2          (inner, training data)
    lam*    = argmin_lam 1/2 ||X_v w*(lam) - y_v||^2              (outer, validation data)

The inner problem is solved approximately by gradient descent (as in training); the
hypergradient dL_V/dlog(lam) uses 40 Neumann terms for H^{-1} and is printed next to the closed
form.  alpha = the inner learning rate = 1 / lambda_max(H), recomputed as lam moves: the series
then contracts by 1 - lambda_min(H) / lambda_max(H) <= 0.6 per term.  A step fixed at the first
lam (e = 2.72 here: alpha = 1 / (1.501 + 2.718) = 0.237) contracts by 0.84 once lam has fallen to
0.17 (0.84^40 ~ 1e-3), and 40 terms then leave the hypergradient near the optimum, where it is
small, without a correct digit (+3.0e-06 for a closed form of +1.3e-04 at the last outer step).
Run:  PYTHONPATH=. python examples/hypergradient_ridge.py
"""

import torch

from solvers.hypergrad import Neumann, hypergradient

torch.manual_seed(0)
n, p = 200, 20  # X^T X has eigenvalues in [0.505, 1.501] (this draw): with alpha = 1 / lambda_max(H), 40 terms suffice
X, Xv = torch.randn(n, p, dtype=torch.float64) / n ** 0.5, torch.randn(n, p, dtype=torch.float64) / n ** 0.5
w_true = torch.randn(p, dtype=torch.float64)
y = X @ w_true + 0.5 * torch.randn(n, dtype=torch.float64)
yv = Xv @ w_true + 0.5 * torch.randn(n, dtype=torch.float64)

train = lambda w, h: 0.5 * (X @ w[0] - y).square().sum() + 0.5 * h[0].exp() * w[0].square().sum()
val = lambda w, h: 0.5 * (Xv @ w[0] - yv).square().sum()

log_lam, w = torch.tensor(1.0, dtype=torch.float64), torch.zeros(p, dtype=torch.float64)
eig_max = torch.linalg.eigvalsh(X.T @ X).max().item()
for outer in range(30):
    lr_inner = 1.0 / (eig_max + log_lam.exp().item())  # 1 / lambda_max(H) for the current lam
    for _ in range(100):  # warm-started inner gradient descent
        w = w - lr_inner * (X.T @ (X @ w - y) + log_lam.exp() * w)
    (g,), sol = hypergradient(train, val, [w], [log_lam], solve=Neumann(steps=40, alpha=lr_inner))
    if outer % 10 == 0 or outer == 29:
        lam = log_lam.clone().requires_grad_()
        w_exact = torch.linalg.solve(X.T @ X + lam.exp() * torch.eye(p, dtype=torch.float64), X.T @ y)
        (g_exact,) = torch.autograd.grad(0.5 * (Xv @ w_exact - yv).square().sum(), lam)
        print(f"outer {outer:2d}: lam {log_lam.exp().item():.4f}  val loss {val([w], [log_lam]).item():.4f}  "
              f"hypergrad {g.item():+.4e} (closed form {g_exact.item():+.4e})")
    log_lam = log_lam - 0.5 * g
