"""Point `huggingface_hub` and `datasets` at a FakeHub, in this process or in a subprocess.

Both libraries read HF_ENDPOINT (and their cache paths, offline flags and token paths) once, at
import time, into module constants. So:

- a subprocess gets `subprocess_env(hub, home)` as its environment: it must not have imported
  huggingface_hub before, and it sees only the fake (HF_HUB_OFFLINE/HF_TOKEN are removed);
- this process uses `patch_in_process(hub, home)`, which rewrites those module constants (and
  restores them on exit). Setting os.environ["HF_ENDPOINT"] after the import does nothing.

    with fake_hub_session(tmp_path) as session:
        HfApi(token=session.hub.token).whoami()                    # default endpoint is the fake
        datasets.load_dataset("tester/ds", split="train", token=session.hub.token)
        subprocess.run([...], env=session.env)                     # the same, for a child process

or, in pytest, the `fake_hub` fixture (import `fake_hub_fixture` from here), which yields that session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hub_server import FakeHub

# Variables a subprocess must not inherit: they would send it elsewhere, log it in, or make it offline.
_DROPPED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING", "HF_TOKEN_PATH")


def hub_env_vars(hub: FakeHub, home: Path) -> dict[str, str]:
    """The variables that point huggingface_hub/datasets at `hub`, with every cache under `home`."""
    home = Path(home)
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_DATASETS_OFFLINE": "0",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # else datasets HEADs an S3 URL on every load
        "DO_NOT_TRACK": "1",
    }


def subprocess_env(hub: FakeHub, home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """A full environment for a child process talking to `hub` (base defaults to os.environ)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROPPED}
    env.update(hub_env_vars(hub, home))
    return env


class _Patcher:
    def __init__(self) -> None:
        self._undo: list[Any] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        missing = object()
        old = getattr(obj, name, missing)
        self._undo.append(lambda: delattr(obj, name) if old is missing else setattr(obj, name, old))
        setattr(obj, name, value)

    def setenv(self, name: str, value: str | None) -> None:
        old = os.environ.get(name)
        self._undo.append(lambda: os.environ.pop(name, None) if old is None else os.environ.__setitem__(name, old))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def defer(self, fn: Any, *args: Any) -> None:
        self._undo.append(lambda: fn(*args))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def patch_in_process(hub: FakeHub, home: Path) -> Iterator[None]:
    """Rewrite the import-time constants of huggingface_hub and datasets to use `hub` and `home`."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http
    from huggingface_hub.utils import tqdm as hf_tqdm

    home = Path(home)
    patch = _Patcher()
    try:
        for name, value in hub_env_vars(hub, home).items():
            patch.setenv(name, value)
        for name in _DROPPED:
            patch.setenv(name, None)
        url = hub.url
        patch.setattr(constants, "ENDPOINT", url)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HOME", str(home))
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HF_ASSETS_CACHE", str(home / "assets"))
        patch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        patch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        patch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        patch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        patch.setattr(hf_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # Redirects are followed with the auth header only to these origins (computed at import).
        patch.setattr(_http, "_HUB_ORIGINS", frozenset({*_http._HUB_ORIGINS, _http._url_origin(url)}))
        if "datasets" in sys.modules or _importable("datasets"):
            from datasets import config

            patch.setattr(config, "HF_ENDPOINT", url)
            patch.setattr(config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
            patch.setattr(config, "HF_HUB_OFFLINE", False)
            patch.setattr(config, "HF_DATASETS_OFFLINE", False)
            patch.setattr(config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
            patch.setattr(config, "USE_PARQUET_EXPORT", False)  # no datasets-server host to ask
            patch.setattr(config, "HF_CACHE_HOME", str(home))
            patch.setattr(config, "HF_DATASETS_CACHE", home / "datasets")
            patch.setattr(config, "HF_MODULES_CACHE", home / "modules")
            patch.setattr(config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / config.DOWNLOADED_DATASETS_DIR)
            patch.setattr(
                config, "EXTRACTED_DATASETS_PATH", home / "datasets" / config.DOWNLOADED_DATASETS_DIR / config.EXTRACTED_DATASETS_DIR
            )
            from datasets.utils import tqdm as ds_tqdm

            patch.setattr(ds_tqdm, "_hf_datasets_progress_bars_disabled", True)
            ds_logger = logging.getLogger("datasets")
            patch.defer(ds_logger.setLevel, ds_logger.level)
            ds_logger.setLevel(logging.ERROR)
        yield
    finally:
        patch.undo()
        _clear_fsspec_instances()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _clear_fsspec_instances() -> None:
    """HfFileSystem instances (and their directory listings) are cached per process: drop them."""
    with contextlib.suppress(ImportError):
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()


@dataclass
class HubSession:
    hub: FakeHub
    home: Path
    env: dict[str, str]  # the environment for a subprocess

    @property
    def url(self) -> str:
        return self.hub.url

    @property
    def token(self) -> str:
        return self.hub.token


@contextlib.contextmanager
def fake_hub_session(tmp_path: Path, **hub_kwargs: Any) -> Iterator[HubSession]:
    """Start a FakeHub, patch this process to use it (caches under tmp_path/hf_home), stop after."""
    home = Path(tmp_path) / "hf_home"
    home.mkdir(parents=True, exist_ok=True)
    with FakeHub(**hub_kwargs) as hub, patch_in_process(hub, home):
        yield HubSession(hub=hub, home=home, env=subprocess_env(hub, home))


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(tmp_path: Path) -> Iterator[HubSession]:
    """A started FakeHub with this process patched to use it; fails the test if the fake itself broke.

    Import it into a test module (or conftest) to use it: `from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401`.
    """
    with fake_hub_session(tmp_path) as session:
        yield session
        assert not session.hub.internal_errors, "FakeHub internal errors:\n" + "\n".join(session.hub.internal_errors)
