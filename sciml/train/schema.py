"""The typed schema of an operator-learning config (``task: operator``, e.g. configs/burgers/fno.yaml)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, PositiveFloat, model_validator

from sciml.config import NonNegativeInt, PositiveInt, StrictModel, WholeInt, checks_training_components




def _field_list(names: list[str]) -> list[str]:
    """A selection of fields: `[]` meant every field but was recorded as `[]` in config.yaml, and `[a, a]` gave the
    model one field twice as two channels."""
    if not names:
        raise ValueError("an empty list selects no field: leave the key out (null) for every field of the file, or "
                         "name the fields, e.g. [a]")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{twice} given more than once: name each field once")
    return names


FieldList = Annotated[list[str], AfterValidator(_field_list)]


class DataConfig(StrictModel):
    recipe: str | None = Field("burgers", description="recipe name in datasets/ or a path to a recipe .yaml")
    preset: str | None = None
    recipe_overrides: list[str] = Field(default_factory=list, description="key=value overrides of the recipe")
    path: str | None = Field(None, description="an existing dataset file; replaces recipe")
    root: str | None = Field(None, description="folder for generated files (default: <repo>/datasets, the folder of the "
                             "built-in recipes, whatever the recipe's path or the working directory)")
    inputs: FieldList | None = None  # default: every input field
    outputs: FieldList | None = None  # default: every output field
    n_train: PositiveInt = 1000
    n_test: PositiveInt = 200
    # a validation split: the n_val samples right after the training ones (rows [n_train, n_train + n_val)), apart
    # from the test rows (the file's last n_test: n_train + n_val + n_test <= the file's samples). With n_val > 0
    # each evaluation logs val_rel_l2 and "best" is the evaluated epoch of lowest val_rel_l2; 0: no validation
    # split, "best" on the training loss
    n_val: NonNegativeInt = 0
    resolution: PositiveInt | None = None  # subsample the stored grid to this many points on its first axis (one stride on all)
    # Saved times of time-varying fields: an index, a window [start, stop) (one channel per time), or null (all)
    input_time: int | tuple[int, int] | None = -1
    output_time: int | tuple[int, int] | None = -1
    normalize_inputs: Literal["none", "channel", "pointwise"] = "channel"
    normalize_outputs: Literal["none", "channel", "pointwise"] = "channel"


class NamedConfig(StrictModel):
    """``{name: ..., **kwargs}``: the kwargs are checked by the component's own constructor."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScheduleConfig(StrictModel):
    name: Literal["none", "step", "cosine"] = "step"
    step_size: PositiveInt = 100  # epochs between decays ("step")
    gamma: float = Field(0.5, gt=0, le=1)  # the factor of each decay: above 1 the lr would grow
    # linear warm-up (optimizer steps) to optimizer.lr, then the schedule: "cosine" from the lr to ~0 over the
    # remaining steps; "step" keeps its decays at the configured epochs of the whole run (warm-up included)
    warmup_steps: NonNegativeInt = 0


class TrainingConfig(StrictModel):
    epochs: PositiveInt = 500
    batch_size: PositiveInt = 20
    loss: str = "rel_l2"
    # epochs between evaluations; each one may save "best": the lowest validation rel. L2 so far (val_rel_l2) with
    # data.n_val > 0, otherwise the lowest epoch-mean training loss (the test split never chooses a checkpoint)
    eval_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 10  # epochs
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    compile: bool = False
    # each full-batch step (forward, backward, guard, optimizer) captured as one CUDA graph and
    # replayed; graph_safe optimizers (adam, adamw, ours), the guard polled (every 10 steps unless
    # guard.check_every says otherwise)
    cuda_graph: bool = False
    max_minutes: PositiveFloat | None = None  # stop (with a checkpoint) after this wall time; resume to go on
    # with max_minutes: after a few timed epochs, shorten `epochs` to what the budget affords and
    # compress the schedule to match (on the run's progress fraction: a step schedule's decays fall at the
    # same fractions and it ends at the configured final factor), so a capped run ends annealed instead of
    # cut off mid-schedule. The pace is re-estimated every lcm(eval_every, checkpoint_every) epochs (3 at
    # least) and the rest of the plan re-fit when it would overrun the budget or leave over 10 % of it unused;
    # the plan and its revisions are in the checkpoint, so a resume goes on with them
    fit_to_budget: bool = False
    # with fit_to_budget: end this sitting after these minutes (with a checkpoint) while the plan spans
    # max_minutes, so a budget longer than one sitting (a device call) runs across resumes. A resumed sitting
    # starts a fresh timing window at its first re-estimate point (its first epochs hold compilation and capture)
    # and makes no revision there: the split run revises and trains exactly as one sitting would only when the
    # pace did not change within the window ending at the first re-estimate point after each resume
    stop_after_minutes: PositiveFloat | None = None
    progress: bool = True
    plot: bool = True
    n_plot: PositiveInt = 4


    @model_validator(mode="after")
    def _budget_needs_a_cap(self) -> "TrainingConfig":
        if self.fit_to_budget and self.max_minutes is None:
            raise ValueError("fit_to_budget needs a budget: set training.max_minutes too")
        if self.stop_after_minutes is not None and not self.fit_to_budget:
            raise ValueError("stop_after_minutes splits a fit_to_budget plan across sittings: set "
                             "training.fit_to_budget=true and the whole budget as training.max_minutes, "
                             "or use max_minutes alone to stop and resume")
        return self


class PhysicsConfig(StrictModel):
    """Operator learning from the PDE alone (``physics:`` in an operator config).

    The loss is the problem's residual and condition norms on the space-time grid
    (`sciml.constraints.physics_loss`); the dataset's solutions serve only for evaluation. The
    grid is the dataset's with the input as its first time level (or its own saved t = 0), so the
    data must be a time-dependent field whose initial value is the input (e.g. the
    `burgers_spacetime` recipe).
    """

    problem: str = Field(description="grid problem name (`sciml list grid_problems`) or 'package.module:attr'")
    problem_args: dict[str, Any] = Field(default_factory=dict)
    constraint: Literal["soft", "hard"] = "hard"  # soft: the model outputs u; hard: basis fields + HardConstraint
    n_basis: PositiveInt = 16  # basis fields the model outputs for the hard constraint
    # train on the first levels of the space-time grid (t = 0 included), test on all of them and report the error
    # beyond the window as well (`test_rel_l2_beyond`): extrapolation in time, as the PI-HC-MoE paper's t > 400 s
    train_levels: PositiveInt | None = None
    # HardConstraint options (hard only): blocks per grid axis (experts), nodes per block (null: all), every
    # expert fitting every condition node, overlap in nodes per axis, ridge, the Levenberg-Marquardt solve's
    # steps and tolerances
    experts: list[PositiveInt] | None = None
    points: PositiveInt | None = None
    shared_conditions: bool = False
    overlap: NonNegativeInt | list[NonNegativeInt] = 0
    ridge: PositiveFloat = 1e-4
    max_steps: PositiveInt = 50
    rtol: PositiveFloat = 1e-4
    atol: PositiveFloat = 1e-4
    on_failure: Literal["record", "warn", "raise"] = "record"
    # the initial condition (hard only): "rows", least-squares rows like the other conditions (met only as well as
    # the basis allows); "exact", built into the field, u = u0 + (t / T) sum_i w_i b_i, so u(., 0) = u0 exactly and
    # those rows are dropped (as the PI-HC-MoE paper's code's mollifier; `GridProblem.layer`)
    initial: Literal["rows", "exact"] = "rows"

    def ignored_layer_options(self) -> list[str]:
        """Layer options set away from their defaults that the soft constraint (no layer) leaves unused. Training
        warns of them; they are not refused, since every pi_hc config sets them and its PI-SC variant is one
        override (physics.constraint=soft), and runs saved with them must still load."""
        from sciml.constraints.operator import LAYER_OPTIONS

        if self.constraint != "soft":
            return []
        return [f"physics.{k}" for k in LAYER_OPTIONS if getattr(self, k) != type(self).model_fields[k].default]

    def layer_options(self) -> dict[str, Any]:
        """The HardConstraint keywords (empty for the soft constraint)."""
        from sciml.constraints.operator import LAYER_OPTIONS

        if self.constraint == "soft":
            return {}
        return self.model_dump(include=set(LAYER_OPTIONS))


class OutputConfig(StrictModel):
    root: str = "runs"
    name: str | None = None


ROLLOUT_MODELS = ("fno2d_time", "fno_time")  # autoregressive: each predicted step is fed back as the next input


def check_rollout_windows(model: str, input_time, output_time, n_times: int | None = None) -> None:
    """A rollout model predicts the step after its input window, then the one after that, and so on: its output
    window must start where the input window stops. A gap or an overlap trained it on targets its rollout never
    predicts, and its metric meant nothing. Raises ValueError; a negative index or null is checked only once the
    file's count of saved times (`n_times`) is known."""
    from sciml.data.loading import time_range

    tin, tout = time_range(input_time, n_times), time_range(output_time, n_times)
    if tin is None or tout is None or tout[0] == tin[1]:
        return
    stop, steps = tin[1], tout[1] - tout[0]
    shown = lambda select: list(select) if isinstance(select, (list, tuple)) else select
    raise ValueError(f"data.output_time must start where data.input_time stops for an autoregressive model (input "
                     f"[{tin[0]}, {stop}) -> output [{stop}, ...)): model {model!r} feeds each prediction back as the "
                     f"next step, and data.input_time={shown(input_time)} with data.output_time={shown(output_time)} "
                     f"selects the saved times [{tout[0]}, {tout[1]}); set data.output_time: [{stop}, {stop + steps}] "
                     f"(or move data.input_time to stop at {tout[0]})")


SPACETIME_MODELS = ("fno3d",)  # time is a grid axis of one field: the output channels are that field's steps


def check_spacetime_outputs(model: str, outputs, *, given: str = "") -> None:
    """A space-time model's output channels are the time steps of one field, convolved along its time axis; the
    loader stacks several fields' windows time by time (u(t1), v(t1), u(t2), ...), which it would read as one field
    alternating along time (its time modes, time padding and time coordinate all mixed). Raises ValueError.
    `given`: where the fields came from, for the message (data.outputs itself when empty)."""
    if model not in SPACETIME_MODELS or outputs is None or len(outputs) < 2:
        return
    fields = list(outputs)
    raise ValueError(f"model {model!r} predicts one field over time (its output channels are that field's steps, "
                     f"along its time axis) and data.outputs{given}={fields} gives {len(fields)} fields, whose steps "
                     f"it would interleave along that axis: train one model per field (data.outputs: [{fields[0]}], "
                     f"...), or use model fno2d_time with model.state_channels: {len(fields)} (a state of several "
                     f"fields per step; data.inputs the same fields)")


def _guard_numbers(value: Any) -> Any:
    from sciml.optim.guard import Guard

    return Guard.parse_settings(value) if isinstance(value, dict) else value


# a `guard:` mapping (null: no guard), its `inf`/`nan` words read as the numbers they mean
GuardSettings = Annotated[dict[str, Any] | None, BeforeValidator(_guard_numbers)]


class OperatorConfig(StrictModel):
    task: Literal["operator"] = "operator"
    seed: WholeInt = 0
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: NamedConfig
    optimizer: NamedConfig = Field(default_factory=lambda: NamedConfig(name="adam", lr=1e-3))
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    guard: GuardSettings = Field(default_factory=dict)  # options of sciml.optim.guard.Guard; null: off
    physics: PhysicsConfig | None = None  # train from the PDE alone (see PhysicsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    def guard_settings(self) -> dict[str, Any]:
        """The guard's settings: the config's, polled every 10 steps in graph mode unless it says otherwise;
        ``guard: null`` is ``enabled: false``, as a PINN phase's ``guard: null`` is no guard."""
        if self.guard is None:
            return {"enabled": False}
        return {"check_every": 10, **self.guard} if self.training.cuda_graph else dict(self.guard)

    @model_validator(mode="after")
    def _physics_reads_physical_fields(self) -> "OperatorConfig":
        """Physics-informed training evaluates the PDE on the fields themselves, over all saved times:
        normalisation defaults to none and output_time to all; other values set explicitly are errors."""
        if self.physics is None:
            return self
        data, given = self.data, self.data.model_fields_set
        for key in ("normalize_inputs", "normalize_outputs"):
            if key in given and getattr(data, key) != "none":
                raise ValueError(f"physics: the PDE is evaluated on the fields in physical units; set data.{key}: none "
                                 f"(or drop it), not {getattr(data, key)!r}")
            setattr(data, key, "none")
        if "output_time" in given and data.output_time is not None:
            raise ValueError("physics: the PDE is evaluated over every saved time; set data.output_time: null (or drop "
                             f"it), not {data.output_time!r}")
        data.output_time = None
        if self.physics.constraint == "hard":
            t = self.training
            if t.precision != "fp32" and checks_training_components():
                # measured on CPU, Burgers tiny: bf16 training ended at test rel. L2 1.00 (fp32 0.53); the fp32 model's
                # basis rounded to tf32's 10 bits, or given 1e-4 relative noise, fits a field of 1/25 to 1/13 the norm
                raise ValueError(f"physics.constraint hard: the layer differentiates the model's basis fields on the grid, "
                                 f"which amplifies per-point rounding past the fields themselves, so "
                                 f"training.precision={t.precision} fits near-zero fields; set training.precision: fp32 "
                                 f"(or physics.constraint: soft)")
            if t.compile or t.cuda_graph:
                raise ValueError("physics.constraint hard: the layer's solve runs a data-dependent number of steps, which "
                                 "neither torch.compile nor a CUDA graph can hold; set training.compile: false and "
                                 "training.cuda_graph: false (or physics.constraint: soft)")
            from sciml.optim import closure_kind

            if self.physics.points is not None and closure_kind(self.optimizer.name) != "none":
                raise ValueError(f"optimizer {self.optimizer.name!r} re-evaluates the loss in each step and needs the same "
                                 "collocation nodes every time; set physics.points: null (all nodes) or use a "
                                 "first-order optimizer")
        return self

    @model_validator(mode="after")
    def _rollouts_read_their_own_predictions(self) -> "OperatorConfig":
        """An autoregressive model feeds its normalised predictions back as normalised inputs: per-channel
        or pointwise statistics differ between input and output steps, so every step after the first
        would start from a mis-scaled state (by ~25 % on a small NS set). Only physical units are one scale."""
        if self.model.name in ROLLOUT_MODELS:
            data = self.data
            bad = [k for k in ("normalize_inputs", "normalize_outputs") if getattr(data, k) != "none"]
            if bad:
                raise ValueError(f"model {self.model.name!r} feeds its predictions back as inputs, which needs inputs and "
                                 f"outputs on one scale: set data.normalize_inputs: none and data.normalize_outputs: none "
                                 f"(now {', '.join(f'data.{k}: {getattr(data, k)}' for k in bad)})")
            check_rollout_windows(self.model.name, data.input_time, data.output_time)  # before the data is made
        return self

    @model_validator(mode="after")
    def _spacetime_model_predicts_one_field(self) -> "OperatorConfig":
        """Checked on the config before the data is made; data.outputs: null is checked on the file's fields."""
        check_spacetime_outputs(self.model.name, self.data.outputs)
        return self

    @model_validator(mode="after")
    def _schedule_fits_the_run(self) -> "OperatorConfig":
        """A warm-up as long as the run never reaches the schedule, an lr of 0 that no schedule or warm-up can
        raise (the registry accepts 0): caught before any training. A step schedule that never decays is only
        warned of, by the trainer (`warn_schedule_never_decays`): validation alone (eval, load_operator, a dry
        run) has nothing to warn of."""
        t, s = self.training, self.schedule
        total = math.ceil(self.data.n_train / t.batch_size) * t.epochs
        if s.warmup_steps >= total:
            raise ValueError(f"schedule.warmup_steps={s.warmup_steps} is not below the run's {total} optimizer steps "
                             f"(training.epochs={t.epochs} x ceil(data.n_train / training.batch_size)); lower it")
        if self.optimizer.kwargs().get("lr", 1) == 0:
            raise ValueError("optimizer.lr=0 never moves the weights (the schedule and warm-up scale it); give a "
                             "positive lr")
        return self

    @model_validator(mode="after")
    def _components_can_run(self) -> "OperatorConfig":
        """The model's name and option names are known, the optimizer and guard build, and with
        training.cuda_graph the step can be captured: checked before the dataset is generated or loaded."""
        from sciml.models import check_model
        from sciml.optim import Guard, check_optimizer, closure_kind

        check_model(self.model.name, self.model.kwargs())
        if not checks_training_components():  # a saved run, to evaluate: only its model is rebuilt
            return self
        name, graph = self.optimizer.name, self.training.cuda_graph
        try:
            if graph and closure_kind(name) != "none":
                raise ValueError(f"training.cuda_graph needs a first-order optimizer; {name!r} steps with a closure. "
                                 "Use a first-order one such as adam, or set training.cuda_graph: false")
            check_optimizer(name, self.optimizer.kwargs(), graph=graph)
        except ValueError as err:
            message = str(err).replace(" cuda_graph:", " training.cuda_graph:")
            if "unknown keyword argument" in message:  # often a setting of the optimizer the file named
                message += (f"; a name given by override keeps the file's other optimizer settings: replace the "
                            f"whole section instead, e.g. 'optimizer={{name: {name}, lr: ...}}'")
            raise ValueError(message if message.startswith("optimizer") else f"optimizer: {message}") from None
        if self.physics is None:  # physics-informed training has its own loss
            from sciml.train.losses import build_loss

            try:
                build_loss(self.training.loss)
            except TypeError as err:
                raise ValueError(f"training.{err}") from None
        guard = self.guard_settings()
        try:
            Guard.check_settings(guard)
        except ValueError as err:
            raise ValueError(f"guard: {err}") from None
        if graph and Guard.syncs_with(**guard):
            raise ValueError("training.cuda_graph needs the guard's polled mode: set guard.check_every > 1 "
                             "(10 when unset) or training.cuda_graph: false")
        return self
