"""Every registered optimizer, with its source paper (shown by `sciml list`)."""

from __future__ import annotations

import torch

from ._registry import OPTIMIZERS, OptimizerSpec


def _add(name: str, spec: OptimizerSpec, description: str, source: str) -> None:
    OPTIMIZERS.add(name, spec, description=description, source=source)


# torch.optim: reference quality and complex-aware.
_add("adam", OptimizerSpec(torch.optim.Adam, complex_native=True, fuse_by_default=True, graph_safe=True),
     "Adam (torch.optim)", "Kingma & Ba 2015, arXiv:1412.6980")
_add("adamw", OptimizerSpec(torch.optim.AdamW, complex_native=True, fuse_by_default=True, graph_safe=True),
     "AdamW, decoupled weight decay (torch.optim)", "Loshchilov & Hutter 2019, arXiv:1711.05101")
_add("radam", OptimizerSpec(torch.optim.RAdam, complex_native=True),
     "Rectified Adam (torch.optim)", "Liu et al. 2020, arXiv:1908.03265")
_add("nadam", OptimizerSpec(torch.optim.NAdam, complex_native=True),
     "Nesterov Adam (torch.optim)", "Dozat 2016, ICLR workshop")
_add("sgd", OptimizerSpec(torch.optim.SGD, complex_native=True, fuse_by_default=True),
     "SGD with optional (Nesterov) momentum (torch.optim)", "Robbins & Monro 1951; Sutskever et al. 2013")

# torch.optim.LBFGS's algorithm and line search, its direction in compact form (a few GEMMs, no host
# read per stored pair: sciml.optim._lbfgs); complex parameters as real views
from ._lbfgs import LBFGS  # noqa: E402

_add("lbfgs", OptimizerSpec(LBFGS, complex_native=True, needs_closure=True),
     "L-BFGS, optional strong-Wolfe line search, compact-form direction (torch.optim.LBFGS's iterates); step(closure)",
     "Liu & Nocedal 1989; compact form: Byrd, Nocedal & Schnabel 1994")

# ours (sciml.optim._adaptive): library versions drift from the papers or reject complex tensors;
# their steps keep the count on device, so they can be captured in a CUDA graph (`graph_safe`).
from ._adaptive import MARS, SPAM, AdaBelief, AdEMAMix, ClipRAdaGradD, FAdam, SubsetNorm  # noqa: E402

_add("adabelief", OptimizerSpec(AdaBelief, complex_native=True, graph_safe=True),
     "AdaBelief: step size from the belief in the gradient (EMA of (g-m)^2)", "Zhuang et al., NeurIPS 2020, arXiv:2010.07468")
_add("spam", OptimizerSpec(SPAM, complex_native=True, graph_safe=True),
     "SPAM: Adam + spike-aware clipping, momentum reset every 500 steps, cosine re-warm-up; density<1: sparse momentum",
     "Huang et al., ICLR 2025, arXiv:2501.06842")
_add("ademamix", OptimizerSpec(AdEMAMix, complex_native=True, graph_safe=True),
     "AdEMAMix: Adam + slow EMA mixed with weight alpha (alpha=2, decoupled decay, optional warm-ups)",
     "Pagliardini et al. 2024, arXiv:2409.03137")
_add("mars", OptimizerSpec(MARS, complex_native=True, graph_safe=True),
     "MARS-AdamW: variance-reduced, unit-norm-clipped gradient into AdamW", "Yuan et al. 2024, arXiv:2411.10438")
_add("fadam", OptimizerSpec(FAdam, complex_native=True, graph_safe=True),
     "FAdam: Fisher (natural-gradient) Adam with RMS clipping", "Hwang 2024, arXiv:2405.12807")
_add("subset_norm", OptimizerSpec(SubsetNorm, complex_native=True, graph_safe=True),
     "AdamW with Subset-Norm step sizes (one second moment per index of the larger dimension); momentum_rank: Subspace-Momentum",
     "Nguyen et al. 2024, arXiv:2411.07120")
_add("clip_radagradd", OptimizerSpec(ClipRAdaGradD, complex_native=True, graph_safe=True),
     "Clip-RAdaGradD: clipped, reweighted AdaGrad-Norm with delayed step size",
     "Chezhegov et al. 2024, arXiv:2406.04443")

# pytorch-optimizer 4.1.0 (pinned, imported on first build), allow-listed keywords; foreach pinned
# off: its per-parameter path is the one our tests check against the paper's rule. These four count
# steps per group: `per_parameter_steps` gives every parameter its own count, as torch's and ours do.
from ._library import gravity_adapter, per_parameter_steps  # noqa: E402

_PO = "pytorch_optimizer:"
_PER_PARAM = (per_parameter_steps,)
_ADAM_KW = ("lr", "betas", "weight_decay", "eps")
_add("diffgrad", OptimizerSpec(_PO + "DiffGrad", allowed=_ADAM_KW,
                               fixed=dict(foreach=False, weight_decouple=True, rectify=False), adapters=_PER_PARAM),
     "diffGrad: Adam step times sigmoid(|g_{t-1} - g_t|) friction (pytorch-optimizer)",
     "Dubey et al., IEEE TNNLS 2020, arXiv:1909.11015")
_add("grams", OptimizerSpec(_PO + "Grams", allowed=_ADAM_KW, fixed=dict(foreach=False, weight_decouple=True),
                            adapters=_PER_PARAM),
     "Grams: Adam magnitude with the current gradient's sign (pytorch-optimizer)",
     "Cao, Li & Song 2024, arXiv:2412.17107")
_add("gravity", OptimizerSpec(_PO + "Gravity", allowed=("lr", "alpha", "beta"), fixed=dict(foreach=False),
                              adapters=(gravity_adapter, per_parameter_steps)),  # lr > 0; V0 from the built lr
     "Gravity: velocity EMA of g/(1+(g max|g|)^2), soft large-gradient braking (pytorch-optimizer)",
     "Bahrami & Pouriyan Zadeh 2021, arXiv:2101.09192")
_add("soap", OptimizerSpec(_PO + "SOAP", allowed=(
        "lr", "betas", "shampoo_beta", "weight_decay", "precondition_frequency", "max_precondition_dim",
        "merge_dims", "precondition_1d", "correct_bias", "normalize_gradient", "eps"), adapters=_PER_PARAM),
     "SOAP: Adam in Shampoo's eigenbasis (pytorch-optimizer; complex via real views)",
     "Vyas et al., ICLR 2025, arXiv:2409.11321")

# gradient filters over any first-order optimizer (`base: adam`)
from ._filters import FilterSpec  # noqa: E402

OPTIMIZERS.add("grokfast", FilterSpec("grokfast"),
               description="Grokfast-EMA gradient filter g + lamb*EMA(g) over `base` (default adam)",
               source="Lee et al. 2024, arXiv:2405.20233")
OPTIMIZERS.add("perpgrad", FilterSpec("perpgrad"),
               description="⊥Grad: gradient projected orthogonal to the weights, rescaled, over `base`",
               source="Prieto et al. 2025, arXiv:2501.04697")

from ._newton import NysNewtonCG  # noqa: E402

_add("nys_newton_cg", OptimizerSpec(NysNewtonCG, complex_native=True, needs_closure=True),
     "Nystrom-preconditioned Newton-CG + Armijo; step(closure), closure returns the loss without backward()",
     "Rathore et al., ICML 2024, arXiv:2402.01868")
