"""Command-line workflows of aae_tract, in the DIPY family.

One :class:`dipy.workflows.workflow.Workflow` subclass per command; the
``run()`` docstring of each is its ``--help``. The console scripts
(``aae_tract_fetch``, ``aae_tract_train``, ``aae_tract_generate``,
``aae_tract_evaluate``, ``aae_tract_render``, ``aae_tract_label``) all point at
:func:`aae_tract.workflows.cli.run`, which picks the workflow from the script
name and runs it through DIPY's ``run_flow``.

Importing this package does not import Keras: the workflows select the Keras
backend (``--backend``) before they load the model code.
"""

from .evaluate import EvaluateFlow
from .fetch import FetchFlow
from .generate import GenerateFlow
from .render import RenderFlow
from .train import TrainFlow

__all__ = ["EvaluateFlow", "FetchFlow", "GenerateFlow", "RenderFlow", "TrainFlow"]
