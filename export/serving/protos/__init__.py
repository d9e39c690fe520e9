"""TensorFlow Serving's gRPC messages and services, for the fields this server uses: our own
.proto files, wire-compatible with TensorFlow Serving's (the same packages, message names and
field numbers), and the Python modules grpcio-tools generates from them (committed). After
editing a .proto, regenerate from the repository root with

    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. export/serving/protos/*.proto
    python -m grpc_tools.protoc -I . --grpc_python_out=. export/serving/protos/tf_serving.proto

(tests/test_serve_grpc.py checks that the committed modules match their .proto files).
Import these modules only in a process that has not loaded `tensorflow` or
`tensorflow_serving.apis`: protobuf refuses a second definition of the same message names.
"""
