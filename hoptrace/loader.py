"""Importing a user's pipeline from ``MODULE:ATTR``, from the current directory as ``celery -A`` does."""

from __future__ import annotations

import importlib
import os
import sys

from hoptrace.errors import CommandError
from hoptrace.pipeline.stages import Pipeline, PipelineError, Stage


class LoadError(ValueError):
    """MODULE:ATTR does not name a pipeline; the message says what to fix."""


def load_pipeline(spec: str, namespace: str = "") -> Pipeline:
    """The checked pipeline SPEC names, its destinations prefixed with NAMESPACE."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise LoadError(f"{spec!r} is not MODULE:ATTR (for example hoptrace.examples.orders:pipeline)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise LoadError(f"cannot import {module_name!r} ({error}); run from the folder that holds it") from error
    if not hasattr(module, attribute):
        raise LoadError(f"module {module_name!r} has no {attribute!r}; name the Pipeline object, e.g. {module_name}:pipeline")
    found = getattr(module, attribute)
    if not isinstance(found, Pipeline):
        raise LoadError(f"{module_name}.{attribute} is {type(found).__name__}, not a hoptrace Pipeline")
    found.check()
    return found.namespaced(namespace) if namespace else found


def load_stages(spec: str, namespace: str, names: list[str]) -> tuple[Pipeline, list[Stage]]:
    """For a command: the pipeline SPEC names and its stages NAMES (all when empty); a mistake is a usage error (exit 2)."""
    try:
        pipeline = load_pipeline(spec, namespace)
        return pipeline, [pipeline[name] for name in names] if names else list(pipeline)
    except (LoadError, PipelineError) as error:
        raise CommandError(error, 2) from error
