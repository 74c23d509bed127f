#!/usr/bin/env bash
# Install the optional `sparse` extra (pytorch-fast-transformers) used by the
# `fast_transformers` attention backend.
#
# Why a script rather than `pip install stemsep[sparse]`:
#  * the package's setup.py imports torch, so pip's build isolation (a fresh env without
#    torch) fails: it must be built with --no-build-isolation against the installed torch;
#  * when nvcc is found on PATH it compiles the CUDA kernels too, which needs a matching
#    CUDA toolkit and takes very long; with PATH reduced to /usr/bin:/bin only the CPU
#    extensions are built (~5 min on 2 cores). Set STEMSEP_SPARSE_CUDA=1 to keep PATH (GPU build).
#
# Usage: bash scripts/install_sparse.sh [PIP]   (PIP defaults to .venv/bin/pip, else `pip`)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pip="${1:-}"
if [[ -z "$pip" ]]; then
    if [[ -x "$here/.venv/bin/pip" ]]; then pip="$here/.venv/bin/pip"; else pip="$(command -v pip)"; fi
fi
if [[ "${STEMSEP_SPARSE_CUDA:-0}" == "1" ]]; then
    exec "$pip" install --no-build-isolation "pytorch-fast-transformers==0.4.0"
fi
PATH=/usr/bin:/bin exec "$pip" install --no-build-isolation "pytorch-fast-transformers==0.4.0"
