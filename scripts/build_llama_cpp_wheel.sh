#!/usr/bin/env bash
# Build the llama-cpp-python wheel once, keep it in a cache folder, install from there on later runs.
#
#   scripts/build_llama_cpp_wheel.sh [PIP_OR_PYTHON]      # build if missing, then install llama-cpp-python[server]
#   scripts/build_llama_cpp_wheel.sh --build-only [PIP_OR_PYTHON]
#   scripts/build_llama_cpp_wheel.sh --print-dir           # the folder holding the wheel (for pip --find-links)
#
# PIP_OR_PYTHON: the pip or python executable of the target environment (e.g. .venv/bin/pip);
# default: $PYTHON, else .venv/bin/python, else python3.
#
# Environment:
#   PYTHON                     interpreter whose environment receives the wheel (see above)
#   FLUXPRM_WHEEL_CACHE        wheel cache folder (default: ~/.cache/fluxprm/wheels)
#   LLAMA_CPP_PYTHON_VERSION   version to build (default: 0.3.36)
#   CMAKE_ARGS                 llama.cpp build flags (default: portable x86-64-v3: AVX2/FMA/F16C, no -march=native)
#   FLUXPRM_LLAMA_REINSTALL=1  reinstall even if that version is already installed
#
# The first build compiles llama.cpp (~4-5 min on 2 cores); later runs only copy the cached wheel.
# The wheels live in a sub-folder named after the version and a hash of CMAKE_ARGS, so changing the
# flags builds a new wheel instead of reusing one built with different flags.
set -euo pipefail

MODE=install
TARGET=""
for arg in "$@"; do
    case "$arg" in
        --build-only) MODE=build ;;
        --print-dir) MODE=print ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) TARGET="$arg" ;;
    esac
done

cd "$(dirname "$0")/.."
if [[ -n "$TARGET" ]]; then
    case "$(basename "$TARGET")" in
        pip*) PIP=("$TARGET") ;;
        *) PIP=("$TARGET" -m pip) ;;
    esac
else
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
    fi
    PIP=("$PYTHON" -m pip)
fi
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${FLUXPRM_WHEEL_CACHE:-$HOME/.cache/fluxprm/wheels}"
ARCH="$(uname -m)"
if [[ -z "${CMAKE_ARGS:-}" ]]; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    if [[ "$ARCH" == "x86_64" ]]; then
        CMAKE_ARGS+=" -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
fi
export CMAKE_ARGS
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"

KEY="$(printf '%s|%s|%s' "$VERSION" "$ARCH" "$CMAKE_ARGS" | sha256sum | cut -c1-12)"
DIR="$CACHE/llama-cpp-python-$VERSION-$KEY"
if [[ "$MODE" == print ]]; then echo "$DIR"; exit 0; fi
mkdir -p "$CACHE"

have_wheel() { compgen -G "$DIR/llama_cpp_python-$VERSION-*.whl" >/dev/null; }

if ! have_wheel; then
    # One builder at a time: a second caller waits here, then finds the wheel.
    exec 9>"$CACHE/.llama-cpp-python.lock"
    flock 9
    if ! have_wheel; then
        echo "building llama-cpp-python $VERSION (CMAKE_ARGS: $CMAKE_ARGS) -> $DIR" >&2
        TMP="$(mktemp -d "$CACHE/.build.XXXXXX")"
        trap 'rm -rf "$TMP"' EXIT
        start=$(date +%s)
        # --no-cache-dir: pip's own wheel cache is keyed by URL, not by CMAKE_ARGS, and could hand back
        # a wheel built with other flags (e.g. -march=native).
        "${PIP[@]}" wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -w "$TMP"
        printf '%s\n' "$CMAKE_ARGS" > "$TMP/CMAKE_ARGS"
        rm -rf "$DIR"
        mv "$TMP" "$DIR"          # atomic: readers never see a half-written folder
        trap - EXIT
        echo "built in $(( $(date +%s) - start )) s" >&2
    fi
    flock -u 9
fi
echo "wheel: $(ls "$DIR"/llama_cpp_python-*.whl)" >&2

[[ "$MODE" == build ]] && exit 0

extra=()
[[ "${FLUXPRM_LLAMA_REINSTALL:-0}" == "1" ]] && extra+=(--force-reinstall)
# The wheel itself from the cache only (never a source build) ...
"${PIP[@]}" install "${extra[@]}" --no-index --no-deps --find-links "$DIR" "llama-cpp-python==$VERSION"
# ... then its runtime and [server] dependencies from the index as usual (the wheel is already satisfied).
"${PIP[@]}" install --find-links "$DIR" "llama-cpp-python[server]==$VERSION"
echo "llama-cpp-python $VERSION [server] installed from $DIR" >&2
