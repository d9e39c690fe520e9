"""The model server behind `python -m export.serve` (ONNX Runtime, no TensorFlow), one job
per module:

    bodies.py    predict request bodies -> uint8 images, answers -> JSON (in worker threads)
    models.py    load an ONNX version, check its signature, warm it up
    batcher.py   micro-batching: requests within a window share one ONNX Runtime call
    versions.py  the model base path: numbered versions, policy, labels, polling, states
    metrics.py   Prometheus metrics (prometheus-client)
    app.py       the Starlette app: TensorFlow Serving's REST routes, limits, errors
    v2.py        the Open Inference Protocol (KServe, Triton) routes, binary tensors
    grpc_api.py  TensorFlow Serving's gRPC API (messages from protos/)
    lifecycle.py uvicorn with a drain on SIGTERM: not ready, then 503 + close, then exit
    publishing.py  a model into a base path as its next version, atomically
"""
