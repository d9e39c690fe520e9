"""From a training run to serving: SavedModel (`savedmodel`), ONNX with a parity check
(`onnx`), an ONNX Runtime command line that never imports TensorFlow (`predict`), and the
model server (`serve` over `serving/`, `publish`), which never imports it either.
`export` depends on a run folder written by `legacy_eager.train`, never the reverse."""
