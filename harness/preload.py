"""The imports every local worker needs, done once in `harness.parallel`'s fork server before it forks
the workers: torch and the pipeline (scikit-learn), `torch._dynamo` (every torch optimiser imports it
when it is built) and pytorch-adapt's validators (label-free selection); about 10 s of CPU on a 2-core
machine that each spawned worker used to pay. Imports only: a process that forks must not have started
thread pools."""

from harness import quiet_import_warnings

quiet_import_warnings()

import pytorch_adapt.validators  # noqa: F401
import torch._dynamo  # noqa: F401

import harness.pipeline
import harness.stages  # noqa: F401
