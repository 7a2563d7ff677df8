# Sourced by the other scripts: makes `uv` available, installing it from PyPI when missing.
# Python itself comes from the machine (Debian 12 ships 3.11); uv never downloads interpreters here.
export UV_PYTHON_DOWNLOADS=never
export PATH="$HOME/.local/bin:$PATH"

if ! command -v uv >/dev/null 2>&1; then
    echo "==> installing uv from PyPI"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends python3-pip python3-venv >/dev/null
        else
            echo "error: python3 -m pip is missing; install it with: sudo apt-get install python3-pip python3-venv" >&2
            exit 1
        fi
    fi
    python3 -m pip install --user --quiet uv 2>/dev/null \
        || python3 -m pip install --user --quiet --break-system-packages uv
    command -v uv >/dev/null 2>&1 || { echo "error: uv was installed but is not on PATH" >&2; exit 1; }
fi
