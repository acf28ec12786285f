#!/usr/bin/env bash
# The one-command set-up of the README (and of CI): the Debian programs the audio-visual data needs
# (ffmpeg for `python -m pdmp_lightning.prepare`, espeak-ng for AVDigitsDataModule), a virtual
# environment in .venv, and the library with the pinned, tested torch stack and every extra.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "Please install ${missing[*]} with your system's package manager (used by the audio-visual data)." >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install -q -c requirements/ci.txt -e ".[all]"
echo "Set up: .venv holds pdmp-lightning $(.venv/bin/python -c 'import pdmp_lightning; print(pdmp_lightning.__version__)')."
