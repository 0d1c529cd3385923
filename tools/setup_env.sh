#!/usr/bin/env bash
# Create or update the project's virtual environment .venv from the pinned requirements.
# A stamp holding the requirements' digest makes this a no-op once done; a failed or killed
# install leaves no stamp, so the next call installs again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${root}/.venv"
stamp="${venv}/.requirements.sha256"
python="${PYTHON:-python3}"

want="$(cat "${root}/requirements.txt" "${root}/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
  exit 0
fi

echo "$(date '+%Y-%m-%dT%H:%M:%S') setting up ${venv} (pinned requirements; torch takes a few minutes)" >&2
if ! "${python}" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "ERROR: ${python} is older than Python 3.10; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
[ -x "${venv}/bin/python" ] || "${python}" -m venv "${venv}"
"${venv}/bin/python" -m pip install --quiet --upgrade pip
"${venv}/bin/python" -m pip install --quiet -r "${root}/requirements-dev.txt"
echo "${want}" > "${stamp}"
echo "$(date '+%Y-%m-%dT%H:%M:%S') ${venv} is ready" >&2
