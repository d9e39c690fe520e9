"""airbench94 (Keller Jordan, KellerJordan/cifar10-airbench, `airbench94.py`) in TensorFlow 2
/ tf_keras: a 2M-parameter network that reaches a mean of 94.01% on CIFAR-10 (1,000 runs,
with its test-time augmentation) in 9.9 epochs. It runs through the same run folder,
exports and server as the seed's DavidNet (`./run.sh --recipe airbench94`).

Modules, lower to higher: hyp (its hyperparameters with their units, the step-size
formulas, the schedule, the lookahead-EMA decay, the TTA views; framework-free), whitening
(the 2x2 patch-whitening filters; numpy), model (the network and its TTA; TensorFlow),
augment (alternating flip and reflect-padded translation, whole batches), optim (decoupled
Nesterov SGD and the lookahead EMA), trainer (what legacy_eager.loop.fit drives).
"""
