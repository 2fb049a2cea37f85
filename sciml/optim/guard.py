"""The training guard: non-finite skips, adaptive clipping, spike detection, rollback.

Trainer loop::

    optimizer.zero_grad(set_to_none=True); loss.backward(); guard.step(loss)
    # closure methods (L-BFGS, Newton-CG):  guard.step(loss_or_None, closure=closure)
    for event in guard.pop_events(): metrics.write(event)

Per step ``guard.step`` does, in order:

1. global gradient norm ``n = ‖g‖₂`` (one fused reduction, stays on device);
2. non-finite check: if the loss or ``n`` is NaN/Inf the update is skipped (event
   ``skip_nonfinite``, its ``cause`` "loss" or "gradient"); `max_consecutive_skips` skips in a
   row roll back to the last good snapshot (as for spikes, below; without a snapshot they raise
   `GuardError`). If the first step after a rollback is non-finite again, the loss or gradient is
   non-finite at weights that were good, which no learning rate can change: the guard raises at
   once (``GuardError.lr_helps`` False), naming the data, the model or the PDE residual;
3. adaptive clipping (ZClip, Kumar et al. 2025, arXiv:2504.02507): EMA mean μ and variance σ²
   of ``n`` (initialised over `clip_warmup` steps); when ``n > μ + z·σ`` the gradient is scaled
   to ``μ + z·σ`` (event ``clip``); ``clip="norm"`` clips to a fixed `max_norm` instead. During
   the warm-up a norm above `WARMUP_CLIP` times the largest of the warm-up's earlier norms is
   clipped to that (a divergence in the first steps must not run unclipped);
4. spike detection against a running estimate of log(loss) over healthy steps: an EMA ``ℓ̄`` and
   an EMA ``s²`` of ``min(ℓ_t − ℓ_prev, 0)²``, the squared falls of log loss from one healthy step
   to the next. For i.i.d. noise of any distribution the difference of two samples is symmetric
   with variance 2·Var, so this estimates Var(log loss) without bias; a smooth descent adds only
   its per-step fall (not the EMA's lag), and rises, as in a divergence, do not enter, so a loss
   that climbs step by step cannot widen its own threshold; a fall by more than the spike margin
   ``log(spike_factor) + spike_z·s`` enters as that margin (a new level, not noise). The first
   ``1/(1 − spike_beta)`` falls are averaged, not decayed (a short history must not read as no noise);
   ``log(loss) > ℓ̄ + log(spike_factor) + spike_z · s`` is a spike (event ``spike``) and its update
   is skipped. The ``spike_z · s`` term makes the test robust to the loss's own noise: a
   minibatch loss is a random variable (one squared residual with label noise σ is σ²χ²₁, whose
   log has a standard deviation of 2.2), and ``spike_factor`` times its geometric mean is
   exceeded on ~9 % of healthy batch-1 steps; for a smooth full-batch loss ``s`` is ~0 and the
   test is ``loss > spike_factor · exp(ℓ̄)``. ``spike_z = 2`` (default): simulated on i.i.d. χ²₁
   (batch 1) and χ²₂/2 (batch 2) losses, no healthy step in 6·10⁴ was flagged, and a bad batch
   whose loss is 10³ times the noise floor is (tests/sciml/optim/test_guard.py); with 3 the
   batch-1 threshold is ~8000 times the geometric mean and most such batches pass. A single-sample
   loss multiplied by 10³ is not always a spike: 10³ times a tiny residual is a typical loss.
   During the first `spike_warmup` healthy steps, before the noise is known, a loss above
   `spike_factor` times the *largest* healthy loss so far (two at least) is a spike: healthy
   training rarely climbs far above where it started (i.i.d. χ²₁ losses trip it ~0.1 times in a
   10-step warm-up, against the smallest loss ~5 times), and a divergence in its first steps does
   (an lr 100x too high: 1, 3.3, 40, 913);
5. `max_spikes` spikes within `spike_window` steps roll the model and optimizer back to the last
   good snapshot (taken every `snapshot_every` healthy steps, in memory) and multiply the
   effective learning rate by `lr_factor` (events ``rollback``, ``lr_lowered``). Where a spike's
   update is skipped (exact mode, closure steps) the weights at the first spike of a window are
   copied, and become the snapshot once a healthy loss is evaluated at them (the next step, as the
   spike's update was skipped), so a later rollback keeps the healthy steps before the spike. Spikes
   in a row leave those weights unvouched: the spike may be theirs (a divergence: an lr 10⁴ too high
   put 2·10¹³ there), and the rollback returns to the periodic snapshot, as in polled mode, where the
   spikes' updates were taken. The running
   estimate then restarts from the restored state's losses: a level that persists after a
   rollback is the objective's, not a spike, and must not roll back again and again.

Closure optimizers (L-BFGS, Newton-CG) step inside ``optimizer.step(closure)``, so the guard judges
the step afterwards and, for a skip (non-finite loss or weights, or a spike), restores the model
and optimizer state it copied before the step; clipping is not applied to their inner
evaluations. A step whose weights came out non-finite (``cause`` "weights") is retried at the
learning rate times `lr_factor`, as the same step from the same state would fail the same way;
that reduction is undone after `RETRY_RECOVERY` healthy steps in a row (event ``lr_restored``),
only a rollback lowers the rate for good. The loss they return is the one evaluated at the weights *before* their step: the
check of a closure step therefore judges the previous step's result, one step late. A spike
caused by step k is seen at step k+1, whose update is skipped, while step k's weights stay
(until a rollback replaces them).

When the objective itself changes (a PINN resamples its collocation points, adaptive loss
weights move) the loss may jump for no fault of the optimizer: the trainer calls
``guard.rebase()``, which forgets the running estimate and relearns it over `spike_warmup` steps.
When only the optimizer changes (a PINN's next phase), ``guard.carry_level(previous)`` keeps the
previous guard's loss level as the warm-up's reference and relearns the noise, which the new
optimizer changes (L-BFGS is smooth where Adam was noisy).

The learning-rate reduction is kept as ``guard.lr_scale`` and applied around each
``optimizer.step`` (lr ← lr·scale, step, lr ← lr/scale), so it composes with any LR schedule
the trainer sets in ``param_groups`` and never fights it.

Host synchronisation: with ``check_every=1`` (default) each step costs one device→host copy
of three scalars (loss, norm, clip threshold), which decides the skip exactly. With
``check_every=k>1`` nothing syncs between polls: a non-finite gradient is zeroed on device
(``nan_to_num`` then ×0), so parameters stay finite but the optimizer still takes a step with
g = 0 (momentum keeps moving the weights and Adam's moments decay); the buffered losses are
inspected every k steps, so a spike is acted upon (rollback) up to k−1 steps late and its
update is not skipped. Trade-off: exact skipping vs one sync per step. Polled mode is also what
a CUDA-graph trainer captures: `update_on_device` is the device part of a step (captured with the
forward and backward), `record_step` the host part, run after each replay.

Snapshots are not part of ``state_dict`` (they would double a checkpoint); after a resume the
first healthy step takes a new one.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable

import torch

from sciml.registry import close_matches

from ._base import check_range
from ._lr import scale_lr

_CLIP_MODES = ("zclip", "norm", None)
WARMUP_CLIP = 100.0  # ZClip warm-up: clip a norm above this multiple of the largest earlier one
RETRY_RECOVERY = 10  # healthy closure steps in a row after which a retry's lr reduction is undone
_FLOATS = ("max_norm", "clip_alpha", "clip_z", "spike_factor", "spike_z", "spike_beta", "lr_factor")


# up to this many non-finite steps ending a run may be a bad batch rather than a divergence (said in the error)
TRANSIENT_SKIPS = 2


def _all_finite(tensors) -> torch.Tensor:
    """Whether every element of `tensors` is finite, as a bool on device (no host read): each tensor's largest |x|,
    NaN or inf where any element is, in one multi-tensor kernel (two kernels per tensor took a step's launch time on
    a GPU). Empty tensors are skipped (the inf-norm refuses them)."""
    ts = [torch.view_as_real(t.detach()) if t.is_complex() else t.detach() for t in tensors if t.numel()]
    if not ts:
        return torch.ones((), dtype=torch.bool)
    largest = torch._foreach_norm(ts, ord=math.inf)
    if len({(m.dtype, m.device) for m in largest}) > 1:  # torch.stack needs one dtype and device
        largest = [m.to(largest[0].device, torch.float64) for m in largest]
    return torch.isfinite(torch.stack(largest)).all()


class GuardError(RuntimeError):
    """Training cannot continue: repeated non-finite steps or too many rollbacks. ``lr_helps`` is False
    when the loss was non-finite at good weights: the data, model or residual is at fault, not the rate."""

    def __init__(self, message: str, *, lr_helps: bool = True):
        super().__init__(message)
        self.lr_helps = lr_helps

    def with_context(self, text: str) -> "GuardError":
        """This error with `text` (where it happened, how to resume) after its message, its diagnosis kept."""
        return GuardError(f"{self} {text}", lr_helps=self.lr_helps)


class Guard:
    """Protects an optimizer's steps; see the module docstring for the rules.

    Args (all keyword, from the config's ``guard:`` mapping):
        enabled: False makes ``step`` a plain ``optimizer.step``.
        clip: ``"zclip"`` (adaptive, default), ``"norm"`` (fixed `max_norm`) or None.
        max_norm: threshold for ``clip="norm"``.
        clip_alpha, clip_z, clip_warmup: ZClip EMA factor, z threshold, warm-up steps.
        spike_factor: a loss above this multiple of the running estimate is a spike.
        spike_z: ... and above this many running standard deviations of log(loss) more (the
            loss's own noise; see the module doc).
        spike_beta: EMA factor of the running log-loss estimate (mean and deviation).
        spike_warmup: healthy steps before spikes are detected.
        max_spikes, spike_window: rollback after this many spikes within the window.
        lr_factor: multiply the effective LR by this at each rollback.
        snapshot_every: healthy steps between in-memory snapshots.
        max_consecutive_skips: raise after this many non-finite steps in a row.
        max_rollbacks: raise after this many rollbacks.
        check_every: host poll interval (1 = exact per-step decisions; see module doc).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, enabled: bool = True,
                 clip: str | None = "zclip", max_norm: float = 1.0, clip_alpha: float = 0.97,
                 clip_z: float = 2.5, clip_warmup: int = 25, spike_factor: float = 10.0, spike_z: float = 2.0,
                 spike_beta: float = 0.9, spike_warmup: int = 10, max_spikes: int = 3,
                 spike_window: int = 50, lr_factor: float = 0.5, snapshot_every: int = 50,
                 max_consecutive_skips: int = 20, max_rollbacks: int = 10, check_every: int = 1):
        if not isinstance(enabled, bool):
            raise ValueError(f"guard enabled={enabled!r} must be true or false")
        if clip not in _CLIP_MODES:
            raise ValueError(f"guard clip={clip!r} is not one of {_CLIP_MODES}; use 'zclip', 'norm' or null")
        check_range("guard max_norm", max_norm, 0.0, lo_open=True)
        check_range("guard clip_alpha", clip_alpha, 0.0, 1.0, hi_open=True)
        check_range("guard clip_z", clip_z, 0.0, lo_open=True)
        check_range("guard spike_factor", spike_factor, 1.0, lo_open=True, fix="a spike is a jump above the running loss, e.g. 10")
        check_range("guard spike_z", spike_z, 0.0, fix="running standard deviations of log(loss) above the level, e.g. 2")
        check_range("guard spike_beta", spike_beta, 0.0, 1.0, hi_open=True)
        check_range("guard lr_factor", lr_factor, 0.0, 1.0, lo_open=True)
        for name, v, lo in (("clip_warmup", clip_warmup, 1), ("spike_warmup", spike_warmup, 0),
                            ("max_spikes", max_spikes, 1), ("spike_window", spike_window, 1),
                            ("snapshot_every", snapshot_every, 1), ("max_consecutive_skips", max_consecutive_skips, 1),
                            ("max_rollbacks", max_rollbacks, 0), ("check_every", check_every, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"guard {name}={v!r} must be an integer >= {lo}")
        self.model, self.optimizer, self.enabled = model, optimizer, enabled
        self.clip, self.max_norm, self.clip_alpha, self.clip_z, self.clip_warmup = clip, max_norm, clip_alpha, clip_z, clip_warmup
        self.spike_factor, self.spike_z, self.spike_beta, self.spike_warmup = spike_factor, spike_z, spike_beta, spike_warmup
        self.max_spikes, self.spike_window, self.lr_factor = max_spikes, spike_window, lr_factor
        self.snapshot_every, self.max_consecutive_skips, self.max_rollbacks = snapshot_every, max_consecutive_skips, max_rollbacks
        self.check_every = check_every
        # persistent state (state_dict)
        self.step_count = 0
        self.lr_scale = 1.0
        self.log_loss_ema: float | None = None
        self.log_loss_var = 0.0  # EMA of min(log loss − previous healthy log loss, 0)², the test's noise level
        self.log_loss_prev: float | None = None
        self.log_loss_samples = 0  # log-loss values in these statistics (for the averaged start)
        self.log_loss_max: float | None = None  # the warm-up's reference: the largest healthy log loss
        self.log_loss_max_n = 0  # values behind it (a carried level counts as established)
        self.healthy_steps = 0
        self.spike_steps: list[int] = []
        self.consecutive_skips = 0
        self.rollbacks = 0
        self.counts = {"skip_nonfinite": 0, "spike": 0, "rollback": 0, "clip": 0}
        self.retry_lowered = 0  # closure retries' lr reductions not yet undone (RETRY_RECOVERY)
        self.retry_healthy = 0
        self.ever_healthy = False  # a step judged healthy (or a resumed or previous guard's run had some)
        self._clip_mean: torch.Tensor | None = None  # ZClip statistics, on device
        self._clip_var: torch.Tensor | None = None
        self._warm_norms: list[torch.Tensor] = []
        # transient
        self._events: list[dict[str, Any]] = []
        self._snapshot: dict | None = None
        self._since_snapshot = 0
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, [loss, norm, thr, finite]) awaiting a poll
        self._on_restore: list[Callable[[], None]] = []
        self._restored = False  # a rollback loaded the last good state and no step has been judged since
        self._at_spike: dict | None = None  # the weights at a window's first skipped spike, until a healthy loss vouches

    # ------------------------------------------------------------------ public API
    def step(self, loss: torch.Tensor | float | None = None, closure: Callable[[], torch.Tensor] | None = None):
        """Check, clip and (unless skipped) call ``optimizer.step(closure)``; returns its value."""
        if not self.enabled:
            return self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        if closure is not None:
            self.step_count += 1
            return self._closure_step(loss, closure)
        if loss is None:
            raise ValueError("guard.step(loss) needs the loss of this step (or a closure for L-BFGS-type optimizers)")
        if self.check_every > 1:
            self.record_step(self.update_on_device(loss))
            return loss
        self.step_count += 1
        grads, finite, coef, record = self._measure(loss)
        lval, nval, tval, fval, wval = record.tolist()  # the one host sync of this step
        if not fval:
            self._skip_nonfinite(self.step_count, lval, nval, weights_ok=bool(wval))
            return loss
        if self._is_spike(lval):
            self._spike(self.step_count, lval)
            return loss
        if coef is not None:
            self._scale(grads, coef)
            if nval > tval:
                self._emit(self.step_count, "clip", grad_norm=nval, threshold=tval)
                self.counts["clip"] += 1
        self._scaled_step(None)
        self._healthy(lval, self.step_count)
        return loss

    def update_on_device(self, loss: torch.Tensor) -> torch.Tensor | None:
        """Polled mode's step, on device only: sanitise, clip, ``optimizer.step``; returns the step's
        record (loss, grad norm, clip threshold, finite) for `record_step`, which judges it later.
        A disabled guard just steps the optimizer (record None).

        Once `capturable` holds, this changes no host state, so a trainer may capture it (with the
        forward and backward) in a CUDA graph and call ``record_step(record, replayed=True)`` per replay.
        """
        if not self.enabled:
            self.optimizer.step()
            return None
        grads, finite, coef, record = self._measure(loss)
        for g in grads:
            g.nan_to_num_(0.0, 0.0, 0.0)
        mult = finite.to(record.dtype) if coef is None else torch.where(finite, coef, torch.zeros_like(coef))
        self._scale(grads, mult)
        self._scaled_step(None)
        return record

    def record_step(self, record: torch.Tensor | None, *, replayed: bool = False) -> None:
        """Count a step `update_on_device` took and buffer its record; polls every `check_every` steps.
        ``replayed``: the record is a CUDA graph's output, which the next replay overwrites: copy it."""
        if not self.enabled:
            return
        self.step_count += 1
        self._pending.append((self.step_count, record.clone() if replayed else record))
        if self.step_count % self.check_every == 0:
            self.poll()

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """Raise a ValueError naming the fix for an unknown or out-of-range guard setting, so a config
        fails before a run spends anything on data or training."""
        valid = [n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY]
        for key in settings:
            if key not in valid:
                raise ValueError(f"the guard has no setting {key!r}{close_matches(key, valid)}; its settings: "
                                 f"{', '.join(valid)}")
        probe = torch.nn.utils.skip_init(torch.nn.Linear, 1, 1)  # no random init: checking draws nothing from torch's RNG
        cls(probe, torch.optim.SGD(probe.parameters(), lr=0.0), **settings)  # the constructor's range checks

    @staticmethod
    def parse_settings(settings: dict[str, Any]) -> dict[str, Any]:
        """`settings` with a number setting written as ``inf`` or ``nan`` (a string to YAML 1.1, which spells
        them ``.inf``, ``.nan``) as that float: a number field means the number, as pydantic's float fields do."""
        def number(key, v):
            word = v.strip().lower().replace(".", "") if isinstance(v, str) else ""
            return float(word) if key in _FLOATS and word.lstrip("+-") in ("inf", "infinity", "nan") else v
        return {k: number(k, v) for k, v in settings.items()}

    @staticmethod
    def syncs_with(*, enabled: bool = True, check_every: int = 1, **_other_settings) -> bool:
        """Whether a guard with these settings reads the host every step (exact mode, ``check_every=1``),
        so that no step can be captured; a config is checked before any guard is built."""
        return bool(enabled) and check_every == 1

    @property
    def capturable(self) -> bool:
        """Whether `update_on_device` may be captured in a CUDA graph now: disabled, or polled
        with ZClip's warm-up over (the warm-up collects norms in a host list)."""
        return not self.enabled or (self.check_every > 1 and (self.clip != "zclip" or self._clip_mean is not None))

    def on_restore(self, hook: Callable[[], None]) -> None:
        """Call `hook` whenever the guard loads earlier model and optimizer state (a rollback, a
        reverted closure step): e.g. a captured step whose optimizer tensors were replaced."""
        self._on_restore.append(hook)

    def poll(self) -> None:
        """Judge buffered steps (polled mode): events, spike counting, rollback."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        values = torch.stack([r for _, r in self._pending]).tolist()
        self._pending = []
        rollbacks, clean = self.rollbacks, True
        for step, (lval, nval, tval, fval, wval) in zip(steps, values):
            if self.rollbacks != rollbacks:  # the steps after a rollback belong to the undone trajectory
                break
            if not fval:
                self._skip_nonfinite(step, lval, nval, zeroed=True, weights_ok=bool(wval))
                clean = False
                continue
            if self._is_spike(lval):
                self._spike(step, lval, skipped=False)  # its update was taken
                clean = False
                continue
            if self.clip is not None and nval > tval:
                self._emit(step, "clip", grad_norm=nval, threshold=tval)
                self.counts["clip"] += 1
            self._healthy(lval, step, snapshot=False)
        if clean:  # the weights hold every buffered update: snapshot them only when all were healthy
            self._maybe_snapshot()

    def rebase(self) -> None:
        """The objective changed (new training points, new loss weights): judge the buffered steps
        against the old running loss, then relearn it over `spike_warmup` healthy steps."""
        self.poll()
        self._forget_loss_level()

    def carry_level(self, previous: "Guard") -> None:
        """Start from `previous`'s loss level (same objective, another optimizer: a PINN's next phase): the
        warm-up tests spikes against it from the first step, and the noise, which the optimizer changes, is
        relearnt. Its counts carry on too, for the run's summary; the lr scale and rollbacks do not (they
        belonged to its optimizer)."""
        previous.poll()
        self.log_loss_ema = previous.log_loss_ema
        self.counts = {k: self.counts[k] + previous.counts[k] for k in self.counts}
        self._restored = previous._restored  # the weights it hands on are a restored good state, not yet judged
        self.ever_healthy = previous.ever_healthy
        self._relearn_noise()

    def weights_finite(self) -> bool:
        """Whether every model parameter is finite (one host read)."""
        return bool(self._weights_finite())

    def check_weights(self) -> None:
        """Judge the buffered steps, then the weights the latest update left, which no step's loss has judged yet:
        non-finite ones roll back to the last good state at once (events ``skip_nonfinite`` with cause "weights",
        ``rollback``), or raise `GuardError` without one. One host read; a trainer calls it before it keeps a state
        (an epoch's checkpoint, a phase's end), so that no non-finite state is ever saved or handed on."""
        if not self.enabled:
            return
        self.poll()
        if not self.weights_finite():
            self._skip_nonfinite(self.step_count, math.nan, None, weights_ok=False)

    def finish(self) -> None:
        """This guard's training ends (a PINN phase, an operator run's last epoch): judge the buffered steps and
        the final weights (`check_weights`), and if they end on non-finite steps roll back to the last good state
        (events ``rollback``, ``lr_lowered``) rather than hand on weights no healthy step vouched for; the next
        phase's first non-finite step then raises at once. Without a vouched snapshot it raises `GuardError`."""
        self.check_weights()
        if self.consecutive_skips and self._snapshot is not None and self._snapshot["vouched"]:
            self._rollback(self.step_count, reason="nonfinite")
            self.consecutive_skips = 0
        elif self.consecutive_skips:
            skips, first = self.consecutive_skips, not self.ever_healthy
            # an unvouched snapshot holds an update's weights no healthy loss was taken at, which the non-finite
            # steps after it may be the fault of (an lr far too high): never handed on as the good state
            self._snapshot = None
            self._start_afresh()
            if first:
                raise GuardError(f"the loss or its gradient was non-finite at every one of the {skips} steps (the last at "
                                 f"step {self.step_count}), from the first, at the initial weights before any update, "
                                 "which no learning rate changes: the loss (the PDE residual or a condition, the data, or "
                                 "the model's output) gives NaN/Inf; check the residual and its parameters for NaN/Inf "
                                 "(or overflow: train in float64)", lr_helps=False)
            # a bad batch or two at the very end looks the same as an update that broke the weights (an lr of 1e300:
            # finite weights, every loss at them non-finite); handing them on was the worse error, so both stop here
            maybe_batch = (f" (after {skips} step(s) only this may instead be a bad batch at the very end: if the "
                           f"data or residual can give NaN there, resume the run from its last checkpoint)"
                           if skips <= TRANSIENT_SKIPS else "")
            raise GuardError(f"training ended on {skips} steps in a row with a non-finite loss or gradient (the last at "
                             f"step {self.step_count}) and no good state was kept to return to; lower the learning "
                             f"rate, enable clipping (guard.clip), or train in float64{maybe_batch}")

    def _from_the_start(self) -> str:
        """A mid-run GuardError's diagnosis when no step was ever healthy: the loss was non-finite at the first
        weights (`finish` says it in a sentence of its own)."""
        if self.ever_healthy:
            return ""
        return (". Yet no step was ever finite: the loss (the PDE residual or a condition, the data, or the model's "
                "output) is non-finite at the initial weights, before any update, which a lower rate does not change; "
                "check the residual and its parameters for NaN/Inf (or overflow: train in float64)")

    def summary(self) -> dict[str, Any]:
        """The run's guard figures for its final record: events by kind and the final lr scale."""
        return {"skips": self.counts["skip_nonfinite"], "spikes": self.counts["spike"],
                "rollbacks": self.counts["rollback"], "clips": self.counts["clip"], "lr_scale": self.lr_scale}

    @staticmethod
    def describe(summary: dict[str, Any] | None) -> str | None:
        """One line for a `summary`, or None when the guard did nothing (or there is none)."""
        if not summary or not any(summary[k] for k in ("skips", "spikes", "rollbacks", "clips")):
            return None
        return (f"guard: {summary['skips']} non-finite skips, {summary['spikes']} spikes, {summary['rollbacks']} "
                f"rollbacks, {summary['clips']} clips; final lr scale {summary['lr_scale']:g}")

    def pop_events(self, judge_pending: bool = True) -> list[dict[str, Any]]:
        """Events since the last call, each ``{"step", "event", ...details}``; clears them.
        ``judge_pending=False`` leaves buffered steps unjudged (after a `GuardError`)."""
        if self.check_every > 1 and judge_pending:
            self.poll()
        events, self._events = self._events, []
        return events

    def _start_afresh(self) -> None:
        """On giving up, before the GuardError: rollbacks, skips and the lowered lr scale start afresh, so
        the state a trainer saves serves a resume with a lower rate (kept, the resumed run gave up at its
        first burst, at a rate lowered twice); the loss statistics stay."""
        self.gave_up_lr_scale = self.lr_scale  # the scale it last tried: a resume's lr is advised below it
        for key, value in self.afresh({}).items():
            setattr(self, key, value)

    @staticmethod
    def afresh(state: dict[str, Any]) -> dict[str, Any]:
        """`state` (a `state_dict`) with what giving up resets (`_start_afresh`): a trainer saving an older
        copy after a GuardError must reset it too, or the resume gives up at its first burst."""
        return {**state, "rollbacks": 0, "consecutive_skips": 0, "lr_scale": 1.0, "spike_steps": []}

    @property
    def holds_good_state(self) -> bool:
        """Whether a snapshot exists: a GuardError then leaves the model and optimizer at it."""
        return self._snapshot is not None

    def state_dict(self, *, to_host: bool = True) -> dict[str, Any]:
        """``to_host=False`` keeps the ZClip tensors on their device (copies): no host sync, for a copy held in
        memory between steps (a trainer's end-of-epoch copy in graph mode)."""
        host = (lambda t: t.detach().cpu().clone()) if to_host else (lambda t: t.detach().clone())
        return {
            "step_count": self.step_count, "lr_scale": self.lr_scale, "log_loss_ema": self.log_loss_ema,
            "log_loss_var": self.log_loss_var, "log_loss_samples": self.log_loss_samples, "log_loss_prev": self.log_loss_prev,
            "healthy_steps": self.healthy_steps, "spike_steps": list(self.spike_steps),
            "log_loss_max": self.log_loss_max, "log_loss_max_n": self.log_loss_max_n,
            "retry_lowered": self.retry_lowered, "retry_healthy": self.retry_healthy,
            # pending first-spike weights: the current ones (the spikes' updates were skipped), rebuilt on load
            "at_spike_step": None if self._at_spike is None else self._at_spike["step"],
            "consecutive_skips": self.consecutive_skips, "rollbacks": self.rollbacks, "counts": dict(self.counts),
            "clip_mean": None if self._clip_mean is None else host(self._clip_mean),
            "clip_var": None if self._clip_var is None else host(self._clip_var),
            "warm_norms": [host(n) for n in self._warm_norms],
        }

    @staticmethod
    def state_to_host(sd: dict[str, Any]) -> dict[str, Any]:
        """A `state_dict(to_host=False)` with its tensors (alone or in lists) moved to the host, as
        `state_dict()` gives them."""
        def host(v):
            if torch.is_tensor(v):
                return v.cpu()
            return [host(t) for t in v] if isinstance(v, list) else v
        return {k: host(v) for k, v in sd.items()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        dev = self._device()
        self.step_count, self.lr_scale, self.log_loss_ema = sd["step_count"], sd["lr_scale"], sd["log_loss_ema"]
        self.healthy_steps, self.spike_steps = sd["healthy_steps"], list(sd["spike_steps"])
        if "log_loss_var" in sd:
            self.log_loss_var, self.log_loss_samples = sd["log_loss_var"], sd["log_loss_samples"]
            self.log_loss_prev = sd["log_loss_prev"]
            # a checkpoint from before the warm-up rule: the level as its reference (none before a level)
            self.log_loss_max = sd.get("log_loss_max", self.log_loss_ema)
            self.log_loss_max_n = sd.get("log_loss_max_n", 0 if self.log_loss_ema is None else 2)
        else:  # a checkpoint from before the noise term: keep the level, relearn the noise over the warm-up
            self._relearn_noise()
        self.consecutive_skips, self.rollbacks, self.counts = sd["consecutive_skips"], sd["rollbacks"], dict(sd["counts"])
        self.retry_lowered, self.retry_healthy = sd.get("retry_lowered", 0), sd.get("retry_healthy", 0)
        self.ever_healthy = True  # a checkpoint is taken after healthy steps
        self._clip_mean = None if sd["clip_mean"] is None else sd["clip_mean"].to(dev, copy=True)  # updated in place
        self._clip_var = None if sd["clip_var"] is None else sd["clip_var"].to(dev, copy=True)
        self._warm_norms = [n.to(dev) for n in sd["warm_norms"]]
        self._snapshot, self._since_snapshot, self._pending = None, 0, []
        # loaded with the model's weights (the trainer loads those first): the weights of a pending first spike
        self._at_spike = None if sd.get("at_spike_step") is None else {**self._snapshot_light(), "step": sd["at_spike_step"]}

    # ------------------------------------------------------------------ internals
    def _device(self) -> torch.device:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _grads(self) -> list[torch.Tensor]:
        # the model's own parameters, not the optimizer's: the complex-as-real adapter hands the
        # optimizer real views whose .grad is only attached inside step()
        return [p.grad for p in self.model.parameters() if p.grad is not None]

    @staticmethod
    def _scale(grads, factor: torch.Tensor) -> None:
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for dtype, group in by_dtype.items():  # one cast and one multi-tensor kernel per dtype
            torch._foreach_mul_(group, factor.to(group[0].real.dtype if dtype.is_complex else dtype))

    def _grad_norm(self, grads, device) -> torch.Tensor:
        if not grads:
            return torch.zeros((), dtype=torch.float64, device=device)
        reals = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
        norms = torch._foreach_norm(reals)
        if len({n.dtype for n in norms}) > 1:  # torch.stack needs one dtype; one cast per tensor only then
            norms = [n.to(torch.float64) for n in norms]
        return torch.linalg.vector_norm(torch.stack(norms).to(torch.float64))

    def _measure(self, loss):
        """(grads, finite, clip coefficient or None, record [loss, norm, threshold, finite] in float64)."""
        loss_t = torch.as_tensor(loss).detach().reshape(()).to(torch.float64)
        grads = self._grads()
        norm = self._grad_norm(grads, loss_t.device)
        # the weights this loss was taken at: the previous update's result. A finite loss can come with weights an
        # update left non-finite (no loss of them is ever finite again): the update is not taken, and the step
        # is judged non-finite, cause "weights" (`_skip_nonfinite` rolls back at once)
        weights_ok = self._weights_finite().to(loss_t.device)
        finite = torch.isfinite(loss_t) & torch.isfinite(norm) & weights_ok
        coef, thr = self._clip_coef(norm, finite)
        record = torch.stack([loss_t, norm.to(loss_t.device, torch.float64), thr.to(loss_t.device, torch.float64),
                              finite.to(loss_t.device, torch.float64), weights_ok.to(torch.float64)])
        return grads, finite, coef, record

    def _weights_finite(self) -> torch.Tensor:
        """Whether every parameter is finite, on device (no host read)."""
        return _all_finite(self.model.parameters())

    def _clip_coef(self, norm: torch.Tensor, finite: torch.Tensor):
        """(coefficient or None, threshold); updates ZClip statistics on device."""
        inf = torch.full_like(norm, math.inf)
        if self.clip is None:
            return None, inf
        if self.clip == "norm":
            thr = torch.full_like(norm, self.max_norm)
            return torch.clamp(thr / (norm + 1e-12), max=1.0), thr
        safe = torch.where(finite, norm, torch.zeros_like(norm))
        if self._clip_mean is None:  # warm-up: collect; clip only far above every norm so far (on device, no sync)
            thr = inf
            if self._warm_norms:  # healthy norms grow as the model leaves its start (x1.8 a step, 0.05 -> 4.3 in 10)
                seen = torch.stack(self._warm_norms)
                largest = torch.where(torch.isnan(seen), torch.zeros_like(seen), seen).amax()
                thr = torch.where(largest > 0, WARMUP_CLIP * largest, inf)
            # NaN: not counted; the statistics follow the clipped norm, as after the warm-up
            self._warm_norms.append(torch.where(finite, torch.minimum(norm, thr), torch.full_like(norm, math.nan)))
            if len(self._warm_norms) >= self.clip_warmup:
                self._clip_mean, self._clip_var = self._warm_statistics(torch.stack(self._warm_norms))
                self._warm_norms = []
            return torch.clamp(thr / (norm + 1e-12), max=1.0), thr
        # NaN statistics: the warm-up saw no finite norm; the first finite one after it starts them
        unset = torch.isnan(self._clip_mean)
        thr = self._clip_mean + self.clip_z * self._clip_var.clamp_min(0).sqrt()
        thr = torch.where(unset, inf, thr)
        clipped = torch.minimum(safe, thr)
        a = self.clip_alpha
        # statistics follow the clipped norm so an outlier does not inflate them (ZClip);
        # a non-finite step leaves them unchanged
        new_mean = torch.where(unset, clipped, a * self._clip_mean + (1 - a) * clipped)
        new_var = torch.where(unset, torch.zeros_like(clipped), a * self._clip_var + (1 - a) * (clipped - new_mean) ** 2)
        # in place: a captured step must write the tensors the next replay reads
        self._clip_mean.copy_(torch.where(finite, new_mean, self._clip_mean))
        self._clip_var.copy_(torch.where(finite, new_var, self._clip_var))
        return torch.clamp(thr / (norm + 1e-12), max=1.0), thr

    @staticmethod
    def _warm_statistics(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) variance of the warm-up's finite norms, on device (no host read);
        NaN for both when none was finite. A non-finite step is no gradient norm: counted as 0 it
        would pull the mean down and widen the variance."""
        ok = torch.isfinite(w)
        count = ok.sum().to(w.dtype)
        mean = torch.where(ok, w, torch.zeros_like(w)).sum() / count
        var = torch.where(ok, (w - mean) ** 2, torch.zeros_like(w)).sum() / count
        every = ok.all()  # then torch's own reductions, as before non-finite steps were left out
        return torch.where(every, w.mean(), mean), torch.where(every, w.var(unbiased=False), var)

    def _scaled_step(self, closure):
        groups, scale = self.optimizer.param_groups, self.lr_scale
        if scale != 1.0:
            for g in groups:
                scale_lr(g, scale)
        try:
            return self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        finally:
            if scale != 1.0:
                for g in groups:
                    scale_lr(g, scale, undo=True)

    def _spike_threshold(self) -> float:
        """The log-loss above which a loss is a spike: ℓ̄ + log(spike_factor) + spike_z·s; during the warm-up,
        while the noise is not known, the largest healthy log loss + log(spike_factor) (inf before two)."""
        if self.healthy_steps < self.spike_warmup:
            return self.log_loss_max + math.log(self.spike_factor) if self.log_loss_max_n >= 2 else math.inf
        return self.log_loss_ema + math.log(self.spike_factor) + self.spike_z * math.sqrt(self.log_loss_var)

    def _is_spike(self, lval: float) -> bool:
        if self.log_loss_ema is None or lval <= 0:
            return False
        return math.log(lval) > self._spike_threshold()

    def _healthy(self, lval: float, step: int, snapshot: bool | dict = True) -> None:
        """Step `step` judged healthy; `snapshot=False` while polling (the weights already hold later steps); a
        dict: the state to snapshot instead of the current one (a closure step's, from before its update)."""
        if self._snapshot is not None and step == self._snapshot["step"] + 1:  # its loss was taken at those weights
            self._snapshot["vouched"] = True
        self.consecutive_skips = 0
        self._restored = False
        self.ever_healthy = True
        self.healthy_steps += 1
        if lval > 0:
            ll = math.log(lval)
            self.log_loss_max = ll if self.log_loss_max is None else max(self.log_loss_max, ll)
            self.log_loss_max_n += 1
            b = self.spike_beta
            if self.log_loss_ema is None:
                self.log_loss_ema = ll
            else:
                # the squared error of the prediction the spike test uses; averaged while fewer than
                # 1/(1 − β) errors were seen (an EMA started at 0 would read a short history as no noise)
                # falls from the previous healthy log loss only: a climb, as in a divergence, must not widen
                # its own threshold; a fall by more than the spike margin is a new level, not noise (counted
                # at the margin); averaged while fewer than 1/(1 − β) were seen
                margin = math.log(self.spike_factor) + self.spike_z * math.sqrt(self.log_loss_var)
                d, n = min(max(ll - self.log_loss_prev, -margin), 0.0), self.log_loss_samples
                bv = min(b, 1.0 - 1.0 / n)
                self.log_loss_var = bv * self.log_loss_var + (1 - bv) * d * d
                self.log_loss_ema = b * self.log_loss_ema + (1 - b) * ll
            self.log_loss_prev = ll
            self.log_loss_samples += 1
        self._since_snapshot += 1
        if self._at_spike is not None:  # this healthy loss was evaluated at those weights (the updates since were skipped)
            self._take_snapshot(self._at_spike, self._at_spike["step"])
            self._at_spike = None
        if snapshot is not False:
            self._maybe_snapshot(None if snapshot is True else snapshot)

    def _maybe_snapshot(self, state: dict | None = None) -> None:
        recent_spike = self.spike_steps and self.step_count - self.spike_steps[-1] < self.spike_window
        if self._snapshot is None or (self._since_snapshot >= self.snapshot_every and not recent_spike):
            self._take_snapshot(state)

    def _take_snapshot(self, state: dict | None = None, step: int | None = None) -> None:
        """`state`: a `_snapshot_light` copy to keep, of weights a healthy loss judged (else one of the current
        state, vouched for once the next step's loss, taken at it, is healthy); `step`: the step whose weights
        these are (else the current one)."""
        judged, state = state is not None, state or self._snapshot_light()
        floats = [v for v in state["model"].values() if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex())]
        if not bool(_all_finite(floats)):  # one host read
            return  # an update left non-finite weights: never the good state (the next step finds them)
        self._snapshot = {**state, "step": self.step_count if step is None else step, "vouched": judged}
        self._since_snapshot = 0

    def _forget_loss_level(self) -> None:
        self.log_loss_ema, self.healthy_steps, self.spike_steps = None, 0, []
        self.log_loss_var, self.log_loss_samples, self.log_loss_prev = 0.0, 0, None
        self.log_loss_max, self.log_loss_max_n = None, 0

    def _relearn_noise(self) -> None:
        """Keep the loss level (the warm-up's reference too), relearn the noise over `spike_warmup` steps."""
        self.log_loss_var, self.log_loss_samples = 0.0, 0 if self.log_loss_ema is None else 1
        self.log_loss_prev, self.healthy_steps = self.log_loss_ema, 0
        self.log_loss_max, self.log_loss_max_n = self.log_loss_ema, 0 if self.log_loss_ema is None else 2

    def _skip_nonfinite(self, step: int, lval: float, nval: float | None, zeroed: bool = False,
                        weights_ok: bool = True) -> None:
        """`nval` None: a closure step, whose loss was finite but its weights came out non-finite. `weights_ok`
        False: a first-order step found the weights non-finite, left so by an earlier update (its loss may be
        finite): no later step can mend them, so the guard rolls back to its last good state at once, or raises
        without one."""
        cause = ("weights" if not weights_ok else "loss" if not math.isfinite(lval) else
                 "gradient" if nval is not None else "weights")
        self.counts["skip_nonfinite"] += 1
        self.consecutive_skips += 1
        self.retry_healthy = 0
        self._emit(step, "skip_nonfinite", cause=cause, loss=lval, **({} if nval is None else {"grad_norm": nval}),
                   **({"note": "polled mode: gradient was zeroed, the optimizer still stepped"} if zeroed else {}))
        if not weights_ok:
            if self._snapshot is not None:  # past max_rollbacks this restores the last good state and gives up
                self._rollback(step, reason="nonfinite")
                self.consecutive_skips = 0
                return
            self._start_afresh()
            raise GuardError(
                f"an update before step {step} left non-finite weights and no good state was kept to return to: the "
                "learning rate (or another optimizer setting) is far too high for this model; lower it, enable "
                "clipping (guard.clip), or train in float64")
        if self._restored and cause != "weights":  # evaluated at the restored weights, before any update
            # without a snapshot of its own, a guard's restored weights came from the one before (carry_level)
            to = f"step {self._snapshot['step']}" if self._snapshot is not None else "handed on by the previous phase"
            self._start_afresh()
            raise GuardError(
                f"the {cause} is non-finite at step {step}, the first step after rolling back to the last good weights "
                f"({to}), so no learning rate can help: the data, the model or the PDE residual gives it. Check "
                "the inputs and targets for NaN/Inf and the model or residual for overflow (training in float64 "
                "tells overflow apart)", lr_helps=False)
        if self.consecutive_skips >= self.max_consecutive_skips:
            if self._snapshot is not None:  # past max_rollbacks this restores the last good state and gives up
                self._rollback(step, reason="nonfinite")
                self.consecutive_skips = 0
                return
            skips, first = self.consecutive_skips, not self.ever_healthy
            self._start_afresh()
            raise GuardError(
                f"{skips} consecutive steps had a non-finite loss or gradient (step {step}); "
                "lower the learning rate, enable clipping (guard.clip), or train in float64" + self._from_the_start(),
                lr_helps=not first)

    def _spike(self, step: int, lval: float, *, skipped: bool = True) -> None:
        """`skipped`: the spike's update was not taken (exact mode, closure steps), so the weights are those
        the healthy steps led to; the first spike of a window snapshots them for a rollback to keep."""
        self.counts["spike"] += 1
        self.retry_healthy = 0  # RETRY_RECOVERY counts healthy steps in a row
        self._restored = False
        self.spike_steps = [s for s in self.spike_steps if step - s < self.spike_window]
        if skipped and not self.spike_steps:
            self._at_spike = {**self._snapshot_light(), "step": step - 1}
        self.spike_steps.append(step)
        self._emit(step, "spike", loss=lval, running=math.exp(self.log_loss_ema), threshold=math.exp(self._spike_threshold()))
        if len(self.spike_steps) >= self.max_spikes:
            self._rollback(step, reason="spikes")

    def _rollback(self, step: int, reason: str) -> None:
        snap, self._at_spike = self._snapshot, None
        if snap is not None:  # also when giving up: the caller may then save the last good state
            self._restore(snap["model"], copy.deepcopy(snap["optimizer"]))
        if self.rollbacks >= self.max_rollbacks:
            self._emit(step, "gave_up", reason=reason, to_step=None if snap is None else snap["step"])
            rollbacks = self.rollbacks
            self._start_afresh()
            raise GuardError(f"guard rolled back {rollbacks} times (limit max_rollbacks={self.max_rollbacks}) "
                             f"and training still {'spikes' if reason == 'spikes' else 'diverges'} at step {step}; "
                             "lower the learning rate or use a more stable optimizer")
        self.rollbacks += 1
        self.counts["rollback"] += 1
        self._forget_loss_level()
        # weights a healthy loss judged: a non-finite loss there again is the data's, not the rate's; unjudged
        # weights (an update of a too-high rate, say) may be what diverged
        self._restored = snap is not None and snap["vouched"]
        self._emit(step, "rollback", reason=reason, to_step=None if snap is None else snap["step"])
        self.retry_lowered = 0  # a rollback lowers the rate for good, retries' reductions included
        self._lower_lr(step)

    def _lower_lr(self, step: int) -> None:
        old = self.lr_scale
        self.lr_scale *= self.lr_factor
        self._emit(step, "lr_lowered", lr_scale=self.lr_scale, previous=old,
                   lr=[g["lr"] * self.lr_scale for g in self.optimizer.param_groups])

    def _retried_healthy(self, step: int) -> None:
        """A healthy closure step: after RETRY_RECOVERY in a row, undo the retries' lr reductions."""
        if not self.retry_lowered:
            return
        self.retry_healthy += 1
        if self.retry_healthy >= RETRY_RECOVERY:
            old = self.lr_scale
            self.lr_scale /= self.lr_factor ** self.retry_lowered
            self.retry_lowered = self.retry_healthy = 0
            self._emit(step, "lr_restored", lr_scale=self.lr_scale, previous=old)

    def _closure_step(self, loss, closure):
        # closure methods take several inner evaluations; clipping is not applied to them.
        before = self._snapshot_light()
        ret = self._scaled_step(closure)
        val = ret if ret is not None else loss
        params_ok = _all_finite([p for g in self.optimizer.param_groups for p in g["params"]])
        if val is None:
            lval, ok = float("nan"), 0.0
        else:  # one device→host copy for both (was one .cpu() each)
            lval, ok = torch.stack([torch.as_tensor(val).detach().reshape(()).to(params_ok.device, torch.float64),
                                    params_ok.to(torch.float64)]).tolist()
        if not (ok and math.isfinite(lval)):
            self._restore(before["model"], before["optimizer"])
            rollbacks = self.rollbacks
            self._skip_nonfinite(self.step_count, lval, None)
            if math.isfinite(lval) and self.rollbacks == rollbacks:  # the weights blew up: retry at a lower rate
                self.retry_lowered, self.retry_healthy = self.retry_lowered + 1, 0
                self._lower_lr(self.step_count)
            return ret
        if self._is_spike(lval):  # skip the update, as for a non-finite step (the optimizer has taken it)
            self._restore(before["model"], before["optimizer"])
            self._spike(self.step_count, lval)
        else:  # the loss judged the weights before this step: those are the ones a snapshot may keep
            self._healthy(lval, self.step_count, snapshot=before)
            self._retried_healthy(self.step_count)
        return ret

    def _restore(self, model_state: dict, optimizer_state: dict) -> None:
        with torch.no_grad():
            self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        for hook in self._on_restore:
            hook()

    def _snapshot_light(self) -> dict:
        # a state dict may hold non-tensor entries (neuralop's "_metadata", torch's extra state)
        return {"model": {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                          for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def _emit(self, step: int, event: str, **details) -> None:
        self._events.append({"step": step, "event": event, **details})
