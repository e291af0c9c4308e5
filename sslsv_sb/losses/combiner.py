"""Combiner: weighted sum of SSL losses on Y and Z (arXiv 2207.05506).

Lepage & Dehak combine an information-maximisation term (VICReg / Barlow Twins style)
and a contrastive term (InfoNCE), each applied either to the encoder representations
``Y`` or to the projector outputs ``Z``. The component losses are *modules passed in
from the yaml*, so this file imports none of them::

    loss: !new:sslsv_sb.losses.combiner.CombinerLoss
        terms:
            - [1.0, !new:sslsv_sb.losses.infonce.InfoNCELoss {temperature: 0.2},
               encoder]
            - [1.0, !new:sslsv_sb.losses.vicreg.VICRegLoss {}, projector]

Each term may also be a dict ``{weight: 1.0, loss: <module>, on: encoder, name: ...}``.
"""

from torch import nn

SPACES = {"encoder": "Y", "projector": "Z"}


class CombinerLoss(nn.Module):
    """Weighted sum of component losses (arXiv 2207.05506).

    Arguments
    ---------
    terms : list
        Items ``(weight, loss_module, space)`` or dicts with keys ``weight``, ``loss``,
        ``on`` and optional ``name``; ``space`` is ``"encoder"`` (applied to ``Y``) or
        ``"projector"`` (applied to ``Z``). A component loss is called as
        ``loss(view1, view2)`` and returns a scalar tensor or a dict with ``"loss"``
        (other dict entries are reported as metrics).

    Example
    -------
    >>> import torch
    >>> from sslsv_sb.losses.infonce import InfoNCELoss
    >>> terms = [(1.0, InfoNCELoss(), "encoder"), (0.5, InfoNCELoss(), "projector")]
    >>> loss = CombinerLoss(terms)
    >>> y1, y2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    >>> out = loss(y1, y2, z1, z2)
    >>> sorted(out)[:3]
    ['Y/infonce/accuracy', 'Y/infonce/loss', 'Y_loss']
    """

    def __init__(self, terms):
        super().__init__()
        if not terms:
            raise ValueError(
                "CombinerLoss needs at least one (weight, loss, space) term"
            )
        self.weights, self.spaces, self.names = [], [], []
        modules = []
        for i, term in enumerate(terms):
            if isinstance(term, dict):
                unknown = set(term) - {"weight", "loss", "on", "name"}
                if unknown or "loss" not in term:
                    raise ValueError(f"CombinerLoss term {i}: bad keys {sorted(term)}")
                weight, module = term.get("weight", 1.0), term["loss"]
                space, name = term.get("on", "projector"), term.get("name")
            else:
                if len(term) != 3:
                    raise ValueError(
                        f"CombinerLoss term {i}: expected (weight, loss, space), "
                        f"got {term!r}"
                    )
                (weight, module, space), name = term, None
            if space not in SPACES:
                raise ValueError(
                    f"CombinerLoss term {i}: space must be 'encoder' or 'projector', "
                    f"got {space!r}"
                )
            if not isinstance(module, nn.Module):
                raise ValueError(
                    f"CombinerLoss term {i}: loss must be an nn.Module, "
                    f"got {type(module)}"
                )
            base = name or type(module).__name__.lower().removesuffix("loss")
            # unique names per space: infonce, infonce_1, ...
            name, j = base, 1
            while (SPACES[space], name) in zip(self.spaces, self.names):
                name, j = f"{base}_{j}", j + 1
            self.weights.append(float(weight))
            self.spaces.append(SPACES[space])
            self.names.append(name)
            modules.append(module)
        self.losses = nn.ModuleList(modules)

    def forward(self, y1, y2, z1=None, z2=None):
        """Compute the weighted sum.

        Arguments
        ---------
        y1, y2 : torch.Tensor
            ``(N, D_enc)`` encoder outputs of the two views.
        z1, z2 : torch.Tensor, optional
            ``(N, D_proj)`` projector outputs; required if a term is on ``"projector"``.

        Returns
        -------
        dict
            ``"loss"`` (total), ``"Y_loss"`` / ``"Z_loss"`` (weighted per-space sums,
            detached) and per term ``"<Y|Z>/<name>/loss"`` (unweighted, detached) plus
            any metric the component returns as ``"<Y|Z>/<name>/<key>"``.
        """
        views = {"Y": (y1, y2), "Z": (z1, z2)}
        total = 0.0
        metrics = {}
        for weight, space, name, module in zip(
            self.weights, self.spaces, self.names, self.losses
        ):
            a, b = views[space]
            if a is None or b is None:
                raise ValueError(
                    f"CombinerLoss term '{name}' is on the projector "
                    "but z1/z2 were not given"
                )
            out = module(a, b)
            value = out["loss"] if isinstance(out, dict) else out
            total = total + weight * value
            metrics[f"{space}_loss"] = (
                metrics.get(f"{space}_loss", 0.0) + weight * value.detach()
            )
            metrics[f"{space}/{name}/loss"] = value.detach()
            if isinstance(out, dict):
                for key, val in out.items():
                    if key != "loss":
                        metrics[f"{space}/{name}/{key}"] = (
                            val.detach() if hasattr(val, "detach") else val
                        )
        metrics["loss"] = total
        return metrics
