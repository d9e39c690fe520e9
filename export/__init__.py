"""From a training run to serving: SavedModel (`savedmodel`), ONNX with a parity check
(`onnx`), and an ONNX Runtime command line that never imports TensorFlow (`predict`).
`export` depends on a run folder written by `legacy_eager.train`, never the reverse."""
