#!/usr/bin/env bash
# Download, here, the wheels the GPU image lacks (Python 3.12, x86-64) into .whl/, which
# gpu_session.sh installs on the device; pass `carry: [".whl"]` to the device `run`.
# Pins follow pyproject.toml; the rest are their import-time needs, as seen working on an H100,
# and pytest, for the tests that need a GPU (the CUDA-graph trainer tests).
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  pytorch-optimizer==4.1.0 neuraloperator==2.0.0 tensorly==0.10.0 tensorly-torch==0.5.0 \
  deepxde==1.15.0 scikit-optimize==0.10.2 pyaml==26.7.0 \
  pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 pytest-timeout==2.4.0
ls .whl
