"""LiteLLM proxy in its own venv (`bench/.venv-litellm`, gitignored), for the side-by-side bench.

LiteLLM pins its own versions of fastapi, pydantic, httpx and openai; installing it into the
project venv would change what Signalbox itself runs on, so it lives apart. The install is
stamped with the exact requirement, so later runs reuse it and a changed pin reinstalls.
Run `python -m bench.litellm_env` to install it ahead of a bench run.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENT = "litellm[proxy]==1.106.2"
VENV_DIR = Path(__file__).parent / ".venv-litellm"
_STAMP = VENV_DIR / ".signalbox-requirement"
INSTALL_TIMEOUT_S = 900


def python() -> Path:
    return VENV_DIR / "bin" / "python"


def litellm_cli() -> Path:
    return VENV_DIR / "bin" / "litellm"


def is_installed() -> bool:
    return _STAMP.is_file() and _STAMP.read_text().strip() == REQUIREMENT and litellm_cli().exists()


def ensure() -> Path:
    """Create the venv and install the pinned proxy unless an identical install is there."""
    if is_installed():
        return litellm_cli()
    if not python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV_DIR)
    _STAMP.unlink(missing_ok=True)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=INSTALL_TIMEOUT_S)
    subprocess.run([*pip, REQUIREMENT], check=True, timeout=INSTALL_TIMEOUT_S)
    _STAMP.write_text(REQUIREMENT + "\n")
    return litellm_cli()


def main() -> int:
    try:
        cli = ensure()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"installing {REQUIREMENT} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{REQUIREMENT} ready: {cli}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
