"""A training step captured once as a CUDA graph and replayed: one launch instead of hundreds.

A PINN step on a small MLP is a few hundred tiny kernels; on an H100 launching them costs more
than running them (Burgers, 2540 points, on an H100: 4.7 ms eager, 0.60 ms replayed). `CapturedStep` wraps
a zero-argument step function (zero_grad, forward, backward, optimizer update) and:

1. runs it eagerly `warmup` times on a side stream (real training steps: optimizers create their
   state lazily, and capture needs the warm-up off the main stream);
2. captures the next call and replays it at once (capture records kernels without running them);
3. replays the graph on every later call, returning the tensors the captured call returned
   (the same storage each time: read them before the next call or clone them).

What a replay does is fixed at capture: the tensors it reads and writes (parameters, gradients,
optimizer state, a tensor learning rate, the training points) and every Python number baked into
a kernel (a loss weight, an lr scale). Whoever changes any of these outside the step (a rollback
that loads a state dict, points of a new size, new loss weights) calls `invalidate()`, and the
next call warms up and captures afresh. Host synchronisation inside the step is impossible.

Off CUDA the step simply runs eagerly. With ``SIMULATE = True`` (tests) it also checks, on
every call after a "capture", what a replay would get wrong: a different operator sequence, a
different Python number in any operator, an input tensor outside the step that now lives
elsewhere (a rebound tensor the graph would not see), or a host read of a tensor. At the
"capture" it also checks that no autograd graph made before it is still alive and reaches a
tensor the step reads: the parameters' gradient accumulators would then belong to the default
stream, and a real capture fails ("operation would make the legacy stream depend on a capturing
blocking stream"). Whatever runs between steps keeps only detached tensors.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

SIMULATE = False  # tests: check replay-equivalence off CUDA (see the module docstring)


class StaleGraphError(RuntimeError):
    """A replayed graph would differ from running the step now: something changed without `invalidate()`."""


class CapturedStep:
    """Call a training step; on CUDA the calls after warm-up replay one captured graph.

    Args:
        fn: the step, no arguments; returns tensors (any nesting) the caller reads after a call.
        device: where the step runs; capture only on CUDA.
        warmup: eager calls before each capture, at least 1 (optimizers create their state lazily:
            a captured first step would re-create it on every replay).
    """

    def __init__(self, fn: Callable[[], Any], device: torch.device | str, *, warmup: int = 2):
        if warmup < 1:
            raise ValueError(f"CapturedStep needs warmup >= 1 eager steps before capture, got {warmup}")
        self.fn, self.device, self.warmup = fn, torch.device(device), warmup
        self._graph: Any = None
        self._outputs: Any = None
        self._warm = 0

    @property
    def captured(self) -> bool:
        """Whether the next call replays (its outputs are then the graph's static tensors)."""
        return self._graph is not None

    def invalidate(self) -> None:
        """Something the captured step reads changed outside it: warm up and capture again."""
        self._graph, self._outputs, self._warm = None, None, 0

    def __call__(self) -> Any:
        if self._graph is not None:
            return self._replay()
        if self._warm < self.warmup:
            self._warm += 1
            return self._eager_warmup()
        return self._capture()

    # ------------------------------------------------------------------
    def _eager_warmup(self):
        if self.device.type != "cuda":
            return self.fn()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self.fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def _capture(self):
        if self.device.type == "cuda":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._outputs = self.fn()
            self._graph = graph
            graph.replay()  # capture only recorded this step: run it
            return self._outputs
        if not SIMULATE:  # off CUDA there is nothing to capture: every call runs eagerly
            self._graph = self.fn
            return self.fn()
        self._graph = _Simulated(self.fn)
        return self._graph.first()

    def _replay(self):
        if self.device.type == "cuda":
            self._graph.replay()
            return self._outputs
        return self._graph()


class _Simulated:
    """Runs the step eagerly and checks that the op stream matches the first ("captured") call."""

    def __init__(self, fn):
        self.fn, self.trace = fn, None

    def first(self):
        mode = _OpTrace()
        with mode:
            out = self.fn()
        self.trace = mode.ops
        if any(_held_by_live_graph(t) for t in mode.leaves.values()):
            raise StaleGraphError("an autograd graph made before the capture is still alive and reaches a tensor the "
                                  "step reads (a loss or loss term kept undetached between steps): on CUDA its "
                                  "gradient accumulators stay on the default stream and capture fails; keep "
                                  "only .detach()ed tensors between steps")
        return out

    def __call__(self):
        trace, out = _trace(self.fn)
        if len(trace) != len(self.trace):
            raise StaleGraphError(f"the step now runs {len(trace)} operators, the captured one {len(self.trace)}")
        for i, (now, then) in enumerate(zip(trace, self.trace)):
            if now[0] != then[0]:
                raise StaleGraphError(f"operator {i} is now {now[0]}, in the captured step {then[0]}")
            if now[1] != then[1]:
                raise StaleGraphError(f"operator {i} ({now[0]}) now has arguments {now[1]}, in the captured step "
                                      f"{then[1]}: a number or shape baked into the graph changed")
            if now[2] != then[2]:
                raise StaleGraphError(f"operator {i} ({now[0]}) reads a tensor made outside the step that now lives "
                                      "elsewhere (rebound or reloaded): the graph would read the old one")
        return out


def _held_by_live_graph(leaf: torch.Tensor) -> bool:
    """Whether some autograd graph still alive accumulates into `leaf`.

    A leaf's gradient accumulator lives only as long as a graph (or someone) holds it: tag the one
    we get, let ours go, and ask again; the tag survives only if another holder kept it alive.
    (Not a scan of gc.get_objects(): whether tensors are gc-tracked differs between torch builds.)"""
    def accumulator():
        with torch.enable_grad():
            return leaf.view_as(leaf).grad_fn.next_functions[0][0]

    node = accumulator()
    node.metadata["sciml_probe"] = True
    del node
    return accumulator().metadata.pop("sciml_probe", False)


def _trace(fn):
    mode = _OpTrace()
    with mode:
        out = fn()
    return mode.ops, out


_VALUES = (int, float, bool, complex, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


class _OpTrace(TorchDispatchMode):
    """Each op as (name, Python numbers and shapes of its arguments, storage of inputs made before the step)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []
        self._made: set[int] = set()  # storages the step itself allocated
        self.leaves: dict[int, torch.Tensor] = {}  # leaves needing grad that the step reads, by storage

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise StaleGraphError("the step reads a tensor on the host (.item(), float(), a Python branch on a "
                                  "tensor): CUDA-graph capture cannot contain a host synchronisation")
        flat, _ = tree_flatten((args, kwargs))
        numbers, outside, read = [], [], set()
        for a in flat:
            if isinstance(a, torch.Tensor):
                ptr = a.untyped_storage().data_ptr()
                numbers.append((tuple(a.shape), a.dtype))
                read.add(ptr)
                if ptr not in self._made:
                    outside.append(ptr)
                    if a.requires_grad and a.is_leaf:
                        self.leaves.setdefault(ptr, a)
            elif isinstance(a, _VALUES):
                numbers.append(a)
            else:  # an opaque object (e.g. a profiler record): its identity means nothing to a replay
                numbers.append(type(a).__name__)
        out = func(*args, **kwargs)
        if func.namespace == "profiler":  # optimizer.step's record_function markers: no kernels
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in read:  # not an in-place result
                self._made.add(t.untyped_storage().data_ptr())
        self.ops.append((str(func), tuple(map(repr, numbers)), tuple(outside)))
        return out
