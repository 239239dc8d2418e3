"""``tt.Model``: an ``nn.Module`` that manages the hidden states of everything inside it.

Use it as a base class (define ``forward``) or as a chain (``tt.Model(nn.Linear(...), snn.LIB(...), ...)``,
which runs its modules in order like ``nn.Sequential``). Either way the model can ``zero_states()``,
``detach_states()``, ``save_states(path)`` / ``load_states(path)``, ``TTcompile()`` / ``TTdecompile()`` and
``scan(x_seq)``: every operation walks this model's own tree only.
"""

from __future__ import annotations

from torch import Tensor, nn

from .scan import scan_chain, scan_steps
from .state import Stateful

__all__ = ["Model"]


class Model(Stateful):
    """Base class (or chain) of stateful models.

    Args:
        *modules: optional; when given, the model is a chain that applies them in order, and ``scan`` runs
            it layer by layer over the whole sequence (stateless modules see all steps at once).

    Subclasses that define their own ``forward`` get a ``scan`` that calls the model once per step.
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Module):
                raise TypeError(f"tt.Model(*modules): argument {i} is a {type(m).__name__}, not an nn.Module")
            self.add_module(str(i), m)

    @property
    def is_chain(self) -> bool:
        """True when the model uses the chain ``forward`` (its modules applied in order)."""
        return type(self).forward is Model.forward

    def forward(self, x: Tensor) -> Tensor:
        """One time step through the chain of modules."""
        if not self._modules:
            raise NotImplementedError(
                "tt.Model has no modules: pass them to tt.Model(...) to build a chain, or define forward()"
            )
        for m in self._modules.values():
            x = m(x)
        return x

    def scan(self, x_seq: Tensor) -> Tensor:
        """Run a whole sequence ``[T, *step_shape]`` (time first); same numbers as stepping the model.

        A chain is scanned module by module; a model with a custom ``forward`` is called once per step.
        Continues from the current hidden states and leaves the final ones in the model.
        """
        if self.is_chain:
            return scan_chain(self._modules.values(), x_seq)
        return scan_steps(self, x_seq)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> nn.Module:
        return list(self._modules.values())[index]
