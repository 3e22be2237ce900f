"""An offline Presidio ``AnalyzerEngine`` for Chinese text.

No model is downloaded: the NLP engine is ``spacy.blank("zh")`` with jieba word segmentation,
saved once to ``<SHUYU_HOME>/models/spacy-zh-jieba`` (Presidio's spaCy engine loads a model
from a path without trying to download it). A blank pipeline has no lemmatizer, so the engine
below uses each token's text as its lemma; that is what lets Presidio's context enhancer see
context words such as 出生 or 手机 next to a match.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from spacy.tokens import Doc

from privacy.pii import segmenter
from privacy.pii.recognizers import LANGUAGE, all_recognizers
from shuyu_core.home import Home

MODEL_NAME = "spacy-zh-jieba"
SCORE_THRESHOLD = 0.4
_lock = threading.Lock()
_engines: dict[str, AnalyzerEngine] = {}


def model_dir(home: Home | None = None) -> Path:
    return (home or Home.from_env()).root / "models" / MODEL_NAME


def ensure_blank_model(path: Path) -> Path:
    """Save ``spacy.blank("zh")`` with the jieba segmenter to ``path`` unless it is there."""
    if (path / "config.cfg").exists():
        return path
    import spacy

    segmenter.jieba()  # spaCy's tokenizer would import jieba the slow way

    nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        nlp.to_disk(stage)
        try:
            os.rename(stage, path)
        except OSError:
            # Another process saved it first; theirs is as good as ours.
            if not (path / "config.cfg").exists():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(stage)
    return path


class ChineseNlpEngine(SpacyNlpEngine):
    """spaCy engine over a blank Chinese pipeline; token text stands in for the lemma."""

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        return NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.text.lower() for t in doc],
            nlp_engine=self,
            language=language,
            scores=[],
        )


def build_analyzer(path: Path) -> AnalyzerEngine:
    segmenter.posseg()  # before spaCy's tokenizer imports jieba the slow way
    ensure_blank_model(path)
    nlp_engine = ChineseNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": str(path)}])
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in all_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=[LANGUAGE],
        default_score_threshold=SCORE_THRESHOLD,
    )


def analyzer(home: Home | None = None) -> AnalyzerEngine:
    """The process-wide analyzer, its model saved inside ``home`` (built once per process:
    loading takes seconds). Every home holds the same blank pipeline, so the engine built
    for the first home serves the others; each home still gets its own saved copy, so a
    later process finds the model there without building anything from the network."""
    path = model_dir(home)
    with _lock:
        ensure_blank_model(path)
        engine = _engines.get(MODEL_NAME)
        if engine is None:
            engine = build_analyzer(path)
            _engines[MODEL_NAME] = engine
    return engine
