"""MLServer's side of `python -m bench peers`: a custom runtime (MLServer has no ONNX runtime
of its own) serving the project's ONNX export with the project's server's ONNX Runtime
session options, and the model folder and settings MLServer is started with.

Runs inside MLServer, in the peers' virtualenv: it imports mlserver and onnxruntime only.
The model takes the v2 input `images` (UINT8 [N, 32, 32, 3]) and answers `logits` and
`probabilities` (FP32 [N, 10]), as the project's server does. The session runs in a worker
thread so that the event loop keeps reading requests, and MLServer's adaptive batching is
given the project's batcher's settings (up to 256 images, a 2 ms window), so that the two
servers differ in their serving code, not in their engine or batching policy.
"""
import asyncio
import json
import os

MODEL_NAME = "davidnet"


def write_repository(folder, model_path, threads, http_port, grpc_port, metrics_port,
                     max_batch_size=256, max_batch_time_s=0.002):
    """settings.json and davidnet/model-settings.json under `folder`, for `mlserver start
    folder`. parallel_workers 0: MLServer's worker pool stops here with "There is no
    current event loop", so the model runs in the server's own process."""
    with open(os.path.join(folder, "settings.json"), "w") as f:
        json.dump({"debug": False, "parallel_workers": 0, "host": "127.0.0.1",
                   "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
                   "load_models_at_startup": True}, f)
    model_dir = os.path.join(folder, MODEL_NAME)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "model-settings.json"), "w") as f:
        json.dump({"name": MODEL_NAME, "implementation": f"{__name__}.OnnxDavidNet",
                   "max_batch_size": max_batch_size, "max_batch_time": max_batch_time_s,
                   "parameters": {"uri": os.path.abspath(model_path),
                                  "extra": {"threads": threads}}}, f)


try:
    from mlserver import MLModel
except ImportError:  # the project's environment writes the settings but never serves
    MLModel = object


class OnnxDavidNet(MLModel):
    async def load(self):
        import onnxruntime

        extra = self.settings.parameters.extra or {}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(extra.get("threads", 0))
        options.enable_cpu_mem_arena = False  # as the project's server (export/serving/models.py)
        self.session = onnxruntime.InferenceSession(self.settings.parameters.uri, options,
                                                    providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    async def predict(self, payload):
        from mlserver.codecs import NumpyCodec
        from mlserver.types import InferenceResponse

        images = NumpyCodec.decode_input(payload.inputs[0])
        logits, probabilities = await asyncio.get_running_loop().run_in_executor(
            None, self.session.run, ["logits", "probabilities"], {"images": images})
        return InferenceResponse(
            model_name=self.name, id=payload.id,
            outputs=[NumpyCodec.encode_output("logits", logits),
                     NumpyCodec.encode_output("probabilities", probabilities)])
