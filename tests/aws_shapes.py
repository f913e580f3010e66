"""Check a document against a SageMaker output shape from botocore's service model.

botocore.validate.ParamValidator walks input shapes, and works on output
shapes too (required members, unknown members, types, lengths, ranges,
timestamps given as ISO strings or epoch numbers), but it checks neither
enums nor patterns. This adds those two on top, so a status outside
ProcessingJobStatus's enum or an ARN outside its pattern fails too.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import botocore.loaders
import botocore.model
from botocore.validate import ParamValidator


@cache
def sagemaker_model() -> botocore.model.ServiceModel:
    return botocore.model.ServiceModel(botocore.loaders.Loader().load_service_model("sagemaker", "service-2"))


def _enums_and_patterns(value: Any, shape: botocore.model.Shape, where: str) -> list[str]:
    problems: list[str] = []
    if isinstance(shape, botocore.model.StructureShape) and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                problems += _enums_and_patterns(value[key], member, f"{where}.{key}")
    elif isinstance(shape, botocore.model.ListShape) and isinstance(value, list):
        for i, item in enumerate(value):
            problems += _enums_and_patterns(item, shape.member, f"{where}[{i}]")
    elif isinstance(shape, botocore.model.MapShape) and isinstance(value, dict):
        for key, item in value.items():
            problems += _enums_and_patterns(key, shape.key, f"{where} key {key!r}")
            problems += _enums_and_patterns(item, shape.value, f"{where}.{key}")
    elif isinstance(shape, botocore.model.StringShape) and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of {shape.enum}")
        pattern = shape.metadata.get("pattern")
        if pattern and re.fullmatch(pattern, value) is None:
            problems.append(f"{where}: {value!r} does not match {pattern!r}")
    return problems


def shape_problems(document: dict[str, Any], shape_name: str) -> list[str]:
    """Every way `document` differs from the shape (empty: it validates)."""
    shape = sagemaker_model().shape_for(shape_name)
    report = ParamValidator().validate(document, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    return problems + _enums_and_patterns(document, shape, shape_name)
