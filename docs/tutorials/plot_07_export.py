"""
Exporting a step: ONNX and torch.export with explicit states
============================================================

A graph exported straight from a stateful layer would freeze its hidden state into the graph, so that path raises
``tt.ExportError``. ``tracetorch.export`` exports the step as a function of the states instead,
``(x, *states) -> (y, *next_states)``, with a dynamic batch; here the graph runs in onnxruntime.
"""

# %%
import tempfile
import warnings
from pathlib import Path

import torch

import tracetorch as tt
from tracetorch import snn

torch.manual_seed(0)
model = tt.Model(torch.nn.Linear(6, 16), snn.LIB(16), torch.nn.Linear(16, 3), snn.LI(3))
try:
    torch.export.export(model, (torch.randn(2, 6),))
except tt.ExportError as err:
    print("ExportError:", str(err).split(":")[0])

# %%
path = Path(tempfile.mkdtemp()) / "step.onnx"
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the exporter's own progress notes
    fn = tt.export.to_onnx(model, torch.randn(2, 6), path)
print("inputs:", fn.input_names, " outputs:", fn.output_names)

try:
    import onnxruntime as ort
except ImportError:  # the onnx extra is not installed: the export above is the point
    ort = None
if ort is not None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = torch.randn(20, 5, 6)  # batch 5, although the example had 2
    states = [s.numpy() for s in fn.zero_states(5)]
    outs = []
    for x in xs:
        y, *states = session.run(None, dict(zip(fn.input_names, [x.numpy(), *states], strict=True)))
        outs.append(torch.from_numpy(y))
    with torch.no_grad():
        eager = torch.stack([model(x) for x in xs])
    print("onnxruntime vs eager, max difference:", (torch.stack(outs) - eager).abs().max().item())
