"""jieba, imported quickly and quietly.

jieba ships its HMM tables twice: as Python source (``prob_emit.py`` and friends, about
6 MB of dict literals) and as pickles (``*.p``, which it reads only on Jython). Without
cached bytecode (an install without ``--compile-bytecode``, or ``PYTHONDONTWRITEBYTECODE``)
every process compiles the source, about four seconds on a loaded two-core machine; the
pickles load in a few hundred milliseconds. So the table modules are registered from the
pickles before jieba imports them. The data are identical (the tests compare them).
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any

_TABLES = {
    "finalseg": ("prob_start", "prob_trans", "prob_emit"),
    "posseg": ("char_state_tab", "prob_start", "prob_trans", "prob_emit"),
}
_lock = threading.Lock()


def package_dir() -> Path | None:
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _preload_tables() -> None:
    root = package_dir()
    if root is None:
        return
    for package, names in _TABLES.items():
        for name in names:
            module_name = f"jieba.{package}.{name}"
            path = root / package / f"{name}.p"
            if module_name in sys.modules or not path.is_file():
                continue
            module = types.ModuleType(module_name)
            with path.open("rb") as fh:
                module.P = pickle.load(fh)  # type: ignore[attr-defined]
            module.__file__ = str(path)
            sys.modules[module_name] = module


def jieba() -> Any:
    """The ``jieba`` module, its dictionary-loading chatter silenced."""
    with _lock:
        if "jieba" not in sys.modules:
            _preload_tables()
        with warnings.catch_warnings():
            # jieba 0.42 has regex literals with invalid escapes (harmless warnings).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            import jieba as module
        module.setLogLevel(60)
    return module


def posseg() -> Any:
    """``jieba.posseg`` (part-of-speech tagging: ``nr`` marks person names)."""
    jieba()
    with _lock:
        if "jieba.posseg" not in sys.modules:
            _preload_tables()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            import jieba.posseg as module
    return module
