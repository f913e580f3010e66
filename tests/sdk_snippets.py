"""SageMaker SDK snippets, as their documents print them, for the tests that run them with
only the import line changed (tests/test_sdk_session_unit.py, tests/test_processing_api.py)."""

from __future__ import annotations

from pathlib import Path

# The seed documents' snippet (AWS's "Run Your Processing Container Using the SageMaker
# Python SDK"), as written there. Only the import line is changed to run it; the
# placeholders are filled as a user would fill them.
SEED_SNIPPET = """\
from sagemaker.processing import Processor, ProcessingInput, ProcessingOutput

processor = Processor(image_uri='<your_ecr_image_uri>',
                     role=role,
                     instance_count=1,
                     instance_type="ml.m5.xlarge")

processor.run(inputs=[ProcessingInput(
                        source='<s3_uri or local path>',
                        destination='/opt/ml/processing/input_data')],
                    outputs=[ProcessingOutput(
                        source='/opt/ml/processing/processed_data',
                        destination='<s3_uri>')],
                    )
"""
SDK_IMPORT = "from sagemaker.processing import Processor, ProcessingInput, ProcessingOutput"
OUR_IMPORT = "from distproc import Processor, ProcessingInput, ProcessingOutput"


def seed_snippet(image: str, source: Path, destination: Path) -> str:
    """The snippet with only the import changed, and its placeholders filled."""
    assert SEED_SNIPPET.count(SDK_IMPORT) == 1
    code = SEED_SNIPPET.replace(SDK_IMPORT, OUR_IMPORT)
    code = code.replace("<your_ecr_image_uri>", image).replace("<s3_uri or local path>", str(source))
    return code.replace("<s3_uri>", str(destination))
