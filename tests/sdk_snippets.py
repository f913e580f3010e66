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


# AWS's "Run Scripts with Your Own Processing Container" (SageMaker developer guide, steps 3
# and 4; doc_source/processing-container-run-scripts.md in github.com/awsdocs/
# amazon-sagemaker-developer-guide, the same in its last two versions), as published there.
SCRIPT_SNIPPET_SETUP = """\
from sagemaker.processing import ScriptProcessor, ProcessingInput, ProcessingOutput

script_processor = ScriptProcessor(command=['python3'],
                image_uri='<image_uri>',
                role='<role_arn>',
                instance_count=1,
                instance_type='ml.m5.xlarge')
"""
# As published, the run(...) call has no closing parenthesis: the page's code does not
# compile as printed. script_snippet() adds the one ")" (and says so); nothing else changes.
SCRIPT_SNIPPET_RUN = """\
script_processor.run(code='preprocessing.py',
                     inputs=[ProcessingInput(
                        source='s3://path/to/my/input-data.csv',
                        destination='/opt/ml/processing/input')],
                      outputs=[ProcessingOutput(source='/opt/ml/processing/output/train'),
                               ProcessingOutput(source='/opt/ml/processing/output/validation'),
                               ProcessingOutput(source='/opt/ml/processing/output/test')]
"""
SCRIPT_IMPORT = "from sagemaker.processing import ScriptProcessor, ProcessingInput, ProcessingOutput"
OUR_SCRIPT_IMPORT = "from distproc import ScriptProcessor, ProcessingInput, ProcessingOutput"


def published_script_snippet_compiles() -> bool:
    """Whether the page's two blocks, as printed, are valid Python (they are not: a ")" is missing)."""
    try:
        compile(SCRIPT_SNIPPET_SETUP + "\n" + SCRIPT_SNIPPET_RUN, "published", "exec")
    except SyntaxError:
        return False
    return True


def script_snippet(image: str, role: str, source: Path) -> str:
    """The page's snippet with the import changed, its placeholders filled and the missing ")" added."""
    assert SCRIPT_SNIPPET_SETUP.count(SCRIPT_IMPORT) == 1
    code = SCRIPT_SNIPPET_SETUP.replace(SCRIPT_IMPORT, OUR_SCRIPT_IMPORT)
    code = code.replace("'<image_uri>'", repr(image)).replace("'<role_arn>'", repr(role))
    run = SCRIPT_SNIPPET_RUN.replace("s3://path/to/my/input-data.csv", str(source))
    return code + "\n" + run.rstrip("\n") + ")\n"
