"""Render benchmarks/BENCHMARKS.md from benchmarks/results/*.json.

    python benchmarks/render.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = """# Benchmarks

Rendered by `python benchmarks/render.py` from `benchmarks/results/*.json`; each table says how
it was measured (command, device, date, commit). Do not edit by hand: rerun the script named in
the table and render again. A commit marked `-dirty` had tracked files changed when the table was
written; before `9eb2976` (2026-11-26) a benchmark's own results file counted, so a table written
in several calls or beside another benchmark's results says `-dirty` from a clean source tree too.

**Status (2026-11-27):** tables whose line names a GPU were measured on one, in five leases of
15 device-minutes each (torch 2.11): on an H100 on 2026-11-25 (Burgers FNO end to end, Darcy and
NS-accuracy data generation, implicit vs unrolled backward with LM throughput, the first PINN
step speeds: the `*_h100` tables) and on an H200 twice on 2026-11-26 (NS step, NS generation with its
FFT floor, PINN step speed with the trainer's own CUDA-graph and compiled modes; then the FNO
step times against neuralop at paper sizes and the PINN time to rel. L2 1e-2 of sciml's trainer), and on an
H100 on 2026-11-26 (the CUDA tests, L-BFGS iterations, PINN time to 1e-2 beside DeepXDE's, FNO step times
with kernel profiles: `pinn.json`, `fno_speed_paper.json`, `fno_profiles.txt` (`fno_profile_*.txt` before 2026-11-27); the H200 files of the
same names are kept as `*_h200`), and on an H100 on 2026-11-27 (the PINN accuracy rows of `pinn.json`, 3 seeds of
each of six problems). Every other
table was measured on a shared 2-core CPU, most at reduced scale (`--small`; a few at the scale their title
names): those show the scripts work and give CPU figures and ratios, not the issues' GPU bars.

### GPU run plan (one H100 or H200; 15 device-minutes per session, 10 per command)

A session's device time counts from the machine's start (about a minute) to its return, and the
machine goes back 30 s after a call. So a session is one prepared call of up to ~9.5 minutes and,
for the NS rows, a short generation call and then the row on the warm machine. `bash benchmarks/gpu_plan.sh PART` holds each part's exact steps (the table below only names them);
it calls `benchmarks/gpu_session.sh SECONDS 'step' ...`, which runs steps in order to a deadline,
each bounded by the time left, and installs the wheels carried in `.whl/` (the packages the GPU
image lacks; `bash benchmarks/fetch_wheels.sh` lists and downloads them here). Call `run` with `carry: [".whl"]` and
`timeout_s: 600` (with CALL_SECONDS at most 580: the deadline's SIGINT needs the seconds after it to save), copy the returned
`results/*` into `benchmarks/results/` (merge rows by hand where two calls wrote the same
file; a run on another GPU kind replaces a file's rows, so first keep the old file as
`<name>_<gpu>.json` with that name inside), then `python benchmarks/render.py`. Every benchmark writes its JSON after each row, case or
part, so a step stopped by its time limit keeps what it finished. The deadline is exported
(`GPU_SESSION_DEADLINE`): operator rows, PINN accuracy runs, NS generation and the optimizer grid
cut their budgets to what the call has left, so they end with a result instead of being killed; an
operator row makes its missing dataset first and then fixes its budget, and one with under a minute left
is skipped and keeps its earlier result (so does a row that fails). Where the session has
less device time left than a part's seconds, run it as `CALL_SECONDS=N bash benchmarks/gpu_plan.sh PART`.
Every command of every part is checked here first: `tests/benchmarks/test_gpu_plan.py` runs the plan with a
stub `python3` and each benchmark's `--dry-run` (rows, parts, cases, tasks, variants and config overrides must exist).

| session | `gpu_plan.sh` parts | issue: bar |
|---|---|---|
| done 2026-11-25 (H100) | `bench_burgers` (3.3 min), `bench_implicit` (1.1), `bench_datagen --parts darcy` (0.2), `--parts ns_accuracy` (1.4), `--parts ns_generate` (5.1), `bench_pinn --parts speed` (1.4) | 3, 7 met; 4: the NS floor is still to measure; 6: 7.5x, bar 10x |
| done 2026-11-26 (H200) | `2` without its Burgers timing: `bench_datagen --parts ns_step,ns_generate` (3.4), the graph-mode tests (0.4); `bench_pinn --parts speed` (1.6); the README job with `training.cuda_graph` on and off, fp32 and bf16 (1.1); `--parts time_to_target` stopped (DeepXDE's recipe ran past the 196 s left) | 4 met (198 s, floor 108 s); 6: trainer step 14.3x with compile + `cuda_graph` (8.8x `cuda_graph` alone); two CUDA-only defects found and fixed |
| done 2026-11-26 (H200, 2nd) | the graph-mode tests on CUDA (0.8; 2 failed, both fixed since on CPU, to confirm); the README job with `compile` + `cuda_graph` (0.5); `3` stopped in its third variant: time to 1e-2 for sciml's graph and eager modes (8.2); `1` with `--compile` in two calls, all six rows (2.9) | 5: step <= 1/3 of neuralop's on 2 of 6 rows (Burgers 1024 0.112, NS 64 0.284), missed on 4 (0.49 to 1.46); 6: time to 1e-2 for sciml (97.6 s graph, 343.8 s eager), DeepXDE's not reached |
| done 2026-11-26 (H100) | `3` (9.4; its last step, sciml's eager and compiled time to 1e-2, stopped at the deadline): 102 CUDA tests passed; `1`'s first step with `CALL_SECONDS=250` (3.9): step times and profiles of all six rows; its precision and TF32 steps had no time left | 5: step <= 1/3 of neuralop's on 3 of 6 rows (Burgers 1024 0.114, Darcy 85 0.238, NS 64 0.131), missed on Burgers 8192 (0.406), Darcy 421 (0.444), NS 256 (0.583); peak memory below neuralop's on all six. The profiles put cuDNN's 1x1 convolution backward at 41-52 % of those three steps: the `mm` pointwise kernel (channel-major 2D GEMMs) is the answer to time next. 6: time to 1e-2, sciml 18.9 s (its config, graph mode) and 25.4 s (DeepXDE's net, points and optimizers), DeepXDE's recipe not reached in 240 s (0.0215 at the cap) |
| done 2026-11-27 (H100) | `7` (9.1), then `8` with `CALL_SECONDS=280` (4.2; its runs cut at 224 s by the call's deadline: diffusion-reaction and L-shape stopped by that cap, wave finished) | 6: Burgers 5.84e-4 mean (2.68e-4 to 1.20e-3), Allen-Cahn 7.37e-4, convection 3.51e-4 (bars 1e-3, 1e-2, 1e-2); diffusion-reaction 1.00e-4, L-shape 7.49e-3, wave 1.18e-2 (1.2e-3 to 2.85e-2) reported |
| 2 (done on the H100 above but its last step, now `3b`) | `3`: the CUDA tests (graph modes, the previous session's two fixes, our optimizers in real graphs, the FNO's cuDNN pointwise maps), an L-BFGS iteration with torch's and sciml's L-BFGS (seconds), PINN time to rel. L2 1e-2 for sciml's config and DeepXDE's setup in graph mode and for DeepXDE's recipe (capped at 240 s: a cap is a lower bound) | 6: time to 1e-2 beside DeepXDE's; the L-BFGS phases' cost on GPU |
| 2b | `3b`: PINN time to rel. L2 1e-2 for sciml's eager and compiled (+ `cuda_graph`) modes, a call of its own (eager took 343.8 s on the H200); each variant capped at what the call has left, a capped row recording "not reached by X s" and its rel. L2 at the cap | 6: time to 1e-2, every sciml mode |
| 3 | `1` (now with the `dft_mm` variant: read its profile before any other FNO change; `1q`, ~2 minutes, times only the three rows short of the bar, every kernel, profiled, and fits beside another part): FNO step times against neuralop, fp32 for both (cuDNN's TF32 off too) with the kernel variants and a kernel-by-kernel profile of each row, the precision policies' accuracy (60 epochs each; moved here from `3`, where the time-to-target steps left it no time), then TF32 step times for both (~9 min) | 5: step <= 1/3 of neuralop's, peak memory no higher (3 rows short on the H100); bf16/TF32 accuracy equal to fp32's |
| 4 | `4`: the Darcy FNO (trained at 85, evaluated at 85 and 421) and the Darcy DeepONet, 3 minutes each | 5: Darcy s = 85 <= 0.0108, at 421 <= 0.0098; DeepONet beside FNO |
| 4c | `4c`: the Burgers FNO (1.5 minutes: the paper schedule took 27 s of replayed steps at 1.09 ms on the H200) and the Burgers DeepONet (2 minutes), split from `4`, which could not fit all four rows and their reserves in one call | 5: Burgers <= 0.003 (3.6e-4 already in `bench_burgers`, H100); DeepONet beside FNO |
| 4b | `4b`: the Darcy FNO trained at 421 (8 minutes) | 5: Darcy at 421 <= 0.0098 |
| 5 | `5`: NS generation into `datasets/` (expected ~2 minutes: the adaptive step now takes half the steps of the 198 s run); `5b` at once: `ns_fno2d_nu1e-3`, what the call has left (~8 minutes) | 5: FNO-2D <= 0.0128 (the set must be made on the same machine) |
| 6 | `6`, `6b`: as 5, with `ns_fno3d_nu1e-3` | 5: FNO-3D <= 0.0086 |
| 7 (done 2026-11-27) | `7`: PINN accuracy, burgers / allen_cahn / convection, 3 seeds, 9 runs at once (every phase but SOAP's replays as CUDA graphs) | 6: Burgers <= 1e-3, Allen-Cahn <= 1e-2, convection <= 1e-2 (3 seeds each) |
| 8 (done 2026-11-27, cut short: rerun for full budgets) | `8`: PINN accuracy, diffusion_reaction / poisson_lshape / wave | 6: the others, beside published figures |
| 10 | `10`: the nu = 1e-5 set (T = 20); `10b`: `ns_fno2d_nu1e-5`, ~8 minutes of training | 5: FNO-2D <= 0.1556 |
| 11 | `11`, then `11` again at once on the warm machine (`CALL_SECONDS` = what is left): the optimizer grid, every task's budget sized by timed probes so the whole grid takes ~12 minutes of this device (`--session-minutes 12`, the two calls a 15-minute session holds, convection with twice a task's share: the bar rests on its budget; the convection task's default is 8000 evaluations, where the SOAP + L-BFGS recipe beat 1.94e-3 on CPU on 3 of 3 seeds; the plan is saved with the results and kept by the second call), first-order ensembles and L-BFGS closures replayed as CUDA graphs | 8: full grid in one session; best convection <= 1.94e-3 |
| 12 | `12`: the hard-constraint layer's step, one expert against four, by collocation nodes, Burgers 1024 x 101 and Navier-Stokes 64^3 (the paper's sizes; ~5 minutes) | no issue yet: the PI-HC-MoE paper's speed-up of experts (12.8x at 10^4 nodes on NS) |
| 12b | `12b`: `configs/burgers/pi_hc.yaml` trained from the PDE alone, soft / one expert / four / four overlapping, 2 minutes each or an even share of what the call has left (1000 trajectories) | no issue yet: PI-HC(-MoE) against PI-SC at full data |
| 12c | `12c`: `configs/navier_stokes/pi_hc.yaml` trained from the PDE alone, soft / one expert / 2 x 2 experts / overlapping, 2 minutes each (1000 trajectories at 64 x 64 x 65, data made in the call) | no issue yet: the PI-HC-MoE paper's Navier-Stokes comparison |
| 12d | `12d`: `configs/diffusion_sorption/pi_hc.yaml` likewise (1000 trajectories at 1024 x 101, PDEBench's setting) | no issue yet: the PI-HC-MoE paper's diffusion-sorption comparison (PI-SC 85.9 %, PI-HC 7.6 %, PI-HC-MoE 3.6 %) |
| 12e | `12e`: as `12d` trained on t <= 400 s (81 of 101 levels), the error beyond reported, soft / one expert / four, 2.5 minutes each | no issue yet: the paper's extrapolation in time (t > 400 s: PI-SC 805.6 %, PI-HC 48.0 %, PI-HC-MoE 14.8 %) |
| 13 | `13`: the autoregressive FNO on Kuramoto–Sivashinsky (`configs/ks/fno.yaml`, data made in the call, ~7 minutes of training) | no issue: a chaotic 1D benchmark beside the FNO paper's |

FNO step ratios of the sessions above (and of rows without `sciml_variant`) are each row's fastest sciml variant
(`sciml_best`) picked in the same noisy rounds it was timed in, about 4 % optimistic by that choice alone; rows
written since give the default variant's (`ratio`) and the fastest one timed again in fresh rounds (`best_ratio`).

Operator rows are capped below 10 minutes of training so that loading, evaluation and start-up
fit the command. A row that misses its bar records what a longer run reaches: `bench_operators.py
--rows ROW --total-minutes T` plans the schedule for T minutes and trains until the call's end (a
checkpoint), and the same command with `--resume` in the next call on the warm machine goes on
(`runs/` stays between calls; the row is named `ROW_Tmin` and counts its sittings). PINN runs resume
by rerunning their command, `ns_generate` from its last finished batch (on the same machine only).
"""


def short_commit(commit, n: int = 12) -> str:
    """A commit's hash cut to `n` characters, its ``-dirty`` marker (git_commit's: tracked files changed) kept."""
    commit = str(commit)
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:n] + ("-dirty" if dirty else "")


def _cell(value) -> str:
    """A table cell: `|` escaped and line breaks made ``<br>``, so an error message cannot break the table."""
    text = _fmt(value).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def render_one(result: dict) -> str:
    lines = [f"## {result['title']}", ""]
    lines.append(
        f"`{result.get('command', '?')}` on {result.get('device', '?')}, {result.get('date', '?')}, "
        f"commit `{short_commit(result.get('commit', '?'))}`, torch {result.get('torch', '?')}"
    )
    lines.append("")
    lines += _table(result.get("rows", []))
    if result.get("notes"):
        lines += [result["notes"].strip(), ""]
    # further tables of the result: {key: heading}, each result[key] a list of rows
    for key, heading in result.get("tables", {}).items():
        if result.get(key):
            lines += [heading, ""] + _table(result[key])
    return "\n".join(lines)


def _table(rows: list[dict]) -> list[str]:
    """Markdown lines of `rows`; a column of structured per-run records (lists of dicts) stays in the JSON."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c, v in row.items() if c not in columns
                    and not (isinstance(v, list) and any(isinstance(x, dict) for x in v))]
    if not columns:
        return []
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines + [""]


def render(results_dir: Path = HERE / "results") -> str:
    parts = [HEADER]
    for path in sorted(results_dir.glob("*.json")):
        parts.append(render_one(json.loads(path.read_text())))
    return "\n".join(parts)


if __name__ == "__main__":
    (HERE / "BENCHMARKS.md").write_text(render())
    print(f"wrote {HERE / 'BENCHMARKS.md'}")
