"""The SageMaker Python SDK's processing API, over distproc: Processor,
ScriptProcessor, ProcessingInput/Output (processing), the request they make
(request) and the handle of a job they started (handle).
"""
