"""This project against its peers (PyTorch, OpenVINO, MLServer), whose code runs in a
virtualenv of its own, never the project's (venv.py, from requirements.txt): run.py is
`python -m bench peers`; port_step, torch_step and infer are its child processes;
mlserver_runtime is MLServer's side; report does the arithmetic. airbench94_torch is
airbench94.py's recipe in PyTorch on the CPU, the reference for airbench_tf."""
