#!/usr/bin/env bash
# The GPU run plan of BENCHMARKS.md as commands: one device `run` per part, `carry: [".whl"]`.
#
#   bash benchmarks/gpu_plan.sh 5      # then, issued at once on the warm machine:
#   bash benchmarks/gpu_plan.sh 5b
#   CALL_SECONDS=400 bash benchmarks/gpu_plan.sh 5b   # when the session has less left than the part asks
#
# Call `run` with timeout_s: 600 and CALL_SECONDS at most 580 (budget_left_s - 40 for a second call): the deadline's
# SIGINT needs the seconds after it to save. A call returns at most 8 files from $OUT: every part writes fewer.
#
# A session has 15 device-minutes, about a minute of which goes to the machine's start. Row budgets
# come from the H200 step times (FNO at Darcy 85: ~4 ms a step, 500 epochs of 50 steps in ~2 min);
# rows train with the schedule fit to their budget (bench_operators), and every budget is also cut to
# what the call has left (gpu_session.sh exports its deadline), so a part may list more than fits:
# a row that would not end in time is skipped and keeps its earlier result (a row's missing dataset is made
# first and its budget fixed from what is left after it). Parts 5b, 6b and 10b need
# the dataset their first part left on that machine, so they must follow it within 30 s (the machine
# goes back after that). Operator rows train in graph mode (`training.cuda_graph`): on the H200 the
# README job reached the same test rel. L2 as eager (0.00339) in 12.1 s instead of 20.1 s (whole
# command), and every benchmark config replays cleanly in the CPU simulation (fp32 and bf16).
set -u
here=$(dirname "$0")
s() { bash "$here/gpu_session.sh" "${CALL_SECONDS:-$1}" "${@:2}"; }
case "${1:-}" in
  1)   s 560 'python3 benchmarks/bench_fno_speed.py --compile --profile --cases 5,3,1,2,4,0' \
             'python3 benchmarks/bench_precision.py --epochs 60' \
             'python3 benchmarks/bench_fno_speed.py --precision tf32 --cases 5,3,1,2,4,0' ;;
  # the three rows short of the bar, every pointwise kernel with its profile (no compile): ~2 minutes
  1q)  s 240 'python3 benchmarks/bench_fno_speed.py --profile --cases 1,3,5' ;;
  2)   s 560 'python3 benchmarks/bench_datagen.py --parts ns_step,burgers,ns_generate --max-minutes 7' \
             'python3 -m pytest -q -p no:cacheprovider tests/sciml/train -k graph' ;;
  3)   s 560 'timeout 150 python3 -m pytest -q -p no:cacheprovider tests/sciml/train tests/sciml/models/test_fno.py tests/sciml/constraints -k "graph or pointwise or bf16 or expert"' \
             'python3 benchmarks/bench_pinn.py --parts lbfgs' \
             'python3 benchmarks/bench_pinn.py --parts time_to_target --ttt graph,dde_setup,deepxde --dde-cap 240' ;;
  # part 3's time to 1e-2 for sciml's eager and compiled modes (eager took 343.8 s on the H200), a call of its
  # own: each variant is capped at what the call has left (a capped row says "not reached by X s")
  3b)  s 560 'python3 benchmarks/bench_pinn.py --parts time_to_target --ttt graph,eager,compile_graph' ;;
  # each part fits its call with bench_operators' 75 s reserve per row: 2 x (3 + 1.25) min here, and
  # 4c: 1.5 + 2 min of training and 2 x 1.25 min reserve, with time left to generate the Burgers set
  4)   s 570 'python3 benchmarks/bench_operators.py --rows darcy_fno,darcy_deeponet --max-minutes 3 training.cuda_graph=true' ;;
  4c)  s 560 'python3 benchmarks/bench_operators.py --rows burgers_fno --max-minutes 1.5 training.cuda_graph=true' \
             'python3 benchmarks/bench_operators.py --rows burgers_deeponet --max-minutes 2 training.cuda_graph=true' ;;
  4b)  s 560 'python3 benchmarks/bench_operators.py --rows darcy_fno_421 --max-minutes 8 training.cuda_graph=true' ;;
  5|6) s 270 'python3 benchmarks/bench_datagen.py --parts ns_generate --root datasets' ;;
  5b)  s 540 'python3 benchmarks/bench_operators.py --rows ns_fno2d_nu1e-3 --max-minutes 9 training.cuda_graph=true' ;;
  6b)  s 540 'python3 benchmarks/bench_operators.py --rows ns_fno3d_nu1e-3 --max-minutes 9 training.cuda_graph=true' ;;
  7)   s 560 'python3 benchmarks/bench_pinn.py --parts accuracy --problems burgers,allen_cahn,convection --jobs 9 --max-minutes 8.5' ;;
  8)   s 560 'python3 benchmarks/bench_pinn.py --parts accuracy --problems diffusion_reaction,poisson_lshape,wave --jobs 9 --max-minutes 8.5' ;;
  10)  s 300 'python3 -m sciml.cli generate navier_stokes params.nu=1e-5 params.t_end=20 --max-minutes 4' ;;
  10b) s 500 'python3 benchmarks/bench_operators.py --rows ns_fno2d_nu1e-5 --max-minutes 9 training.cuda_graph=true' ;;
  # the grid sized to ~12 minutes here, in this call and one more (~4 minutes) on the warm machine, convection (the
  # task issue 8's bar rests on) with twice a task's share (runs/ is kept between
  # calls, the tree is not: the results, and with them the budget plan, travel through runs/). The hand-off copy
  # runs on the step's exit, however it ends: the deadline's SIGINT ends python, and bash would skip a plain `; cp`
  11)  s 560 'trap "mkdir -p runs; cp benchmarks/results/optimizers.json runs/ 2>/dev/null" EXIT; trap "exit 130" INT TERM; cp runs/optimizers.json benchmarks/results/ 2>/dev/null; python3 benchmarks/bench_optimizers.py --session-minutes 12 --task-weights pinn_convection=2 --merge --skip-done --max-minutes 9' ;;
  # the hard-constraint layer (no issue yet): PI-HC against PI-HC-MoE by collocation nodes, paper-like sizes
  12)  s 420 'python3 benchmarks/bench_hard_constraint.py --parts speed' \
             'python3 benchmarks/bench_hard_constraint.py --parts speed --pde navier_stokes' ;;
  # configs/burgers/pi_hc.yaml trained from the PDE alone per variant (soft, hc, moe, moe_overlap), 2 minutes each,
  # or an even share of what the call has left after the data is there (bench_hard_constraint splits it at the start)
  12b) s 560 'python3 benchmarks/bench_hard_constraint.py --parts accuracy --minutes 2' ;;
  # configs/navier_stokes/pi_hc.yaml from the PDE alone per variant (data made in the first, ~1 minute), 2 minutes each
  12c) s 580 'python3 benchmarks/bench_hard_constraint.py --parts accuracy --pde navier_stokes --minutes 2' ;;
  # configs/diffusion_sorption/pi_hc.yaml likewise (1024 x 101, data made in the first, ~1 minute), 2 minutes each
  12d) s 580 'python3 benchmarks/bench_hard_constraint.py --parts accuracy --pde diffusion_sorption --minutes 2 --variants soft,hc,moe,moe_overlap' ;;
  # the same trained on t <= 400 s (81 of 101 levels), tested beyond: the paper's extrapolation in time
  12e) s 580 'python3 benchmarks/bench_hard_constraint.py --parts accuracy --pde diffusion_sorption --train-levels 81 --minutes 2.5 --variants soft,hc,moe' ;;
  # the autoregressive FNO on Kuramoto-Sivashinsky (no issue): data made in the call (~1 minute), ~7 minutes of training
  13)  s 560 'python3 benchmarks/bench_operators.py --rows ks_fno --max-minutes 7 training.cuda_graph=true' ;;
  *)   echo "usage: bash benchmarks/gpu_plan.sh {1,1q,2,3,3b,4,4b,4c,5,5b,6,6b,7,8,10,10b,11,12,12b,12c,12d,12e,13}" >&2; exit 2 ;;
esac
