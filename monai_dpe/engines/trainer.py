"""SupervisedAdversarialTrainer: the DPE training step (generator + discriminator) on MONAI engines."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

from monai_dpe.losses.adversarial import DiscriminatorLoss

__all__ = ["SupervisedAdversarialTrainer", "PrepareImageTarget", "prepare_with_level"]


class PrepareImageTarget(PrepareBatch):
    """Take ``(image, target)`` from a dictionary batch (the degraded input and its clean truth).

    ``extra_keys`` maps network keyword arguments to batch keys (``{"modality": "modality"}``):
    their values are passed to the network as they are, as MONAI's ``PrepareBatchExtraInput``
    does, so a :class:`monai_dpe.networks.ModalityRouter` learns each image's modality.
    """

    def __init__(self, image_key: str = "image", target_key: str = "target", extra_keys: dict[str, str] | None = None) -> None:
        self.image_key, self.target_key = image_key, target_key
        self.extra_keys = dict(extra_keys or {})

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs: Any):
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        target = batchdata.get(self.target_key)
        if target is not None:
            target = target.to(device=device, non_blocking=non_blocking, **kwargs)
        if not self.extra_keys:
            return image, target
        return image, target, (), {arg: batchdata.get(key) for arg, key in self.extra_keys.items()}


def prepare_with_level(level_channels: int, extra_keys: Mapping[str, str] | None = None) -> PrepareImageTarget:
    """A :class:`PrepareImageTarget` that also hands each image's ``level`` to a network that takes one.

    Only a network with ``level_channels`` (0 before 0.6.0) has level inputs, so the bundle's configs
    pass theirs here instead of spelling out the condition. ``extra_keys`` come first, as given.
    """
    keys = {**(extra_keys or {}), **({"level": "level"} if level_channels else {})}
    return PrepareImageTarget(extra_keys=keys or None)


class SupervisedAdversarialTrainer(SupervisedTrainer):
    """Train a generator with a multi-term loss and, when that loss is adversarial, a discriminator.

    Unlike MONAI's ``AdversarialTrainer`` (which treats the input as real), the discriminator
    here sees the clean *target* as real and the generator's output as fake, which is what a
    supervised enhancement GAN needs. Each iteration: generator forward; discriminator step on
    (target, detached output) with ``disc_loss_function``; generator step with
    ``loss_function(pred, target, disc(pred))`` (a :class:`monai_dpe.losses.DPELoss`).

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function, epoch_length,
        prepare_batch, train_handlers, key_train_metric, ...: as MONAI's ``SupervisedTrainer``.
        disc_network: the discriminator (``DPEDiscriminator`` or MONAI ``PatchDiscriminator``); ``None``
            trains the generator alone.
        disc_optimizer: the discriminator's optimiser.
        disc_loss_function: loss of (real_output, fake_output); default noisy-label BCE.
        autocast_dtype: run forward passes under ``torch.autocast`` with this dtype (``"bfloat16"``
            helps on CPUs with AMX and on GPUs); ``None`` keeps fp32.
        channels_last: feed channels-last tensors to the networks.
        grad_clip: clip gradient norms of both networks to this value (``None``: no clipping).

    The iteration output holds ``image``, ``label`` (the target), ``pred``, ``loss`` (generator
    total), ``disc_loss`` and each loss term, so MONAI's ``StatsHandler`` and TensorBoard
    handlers can log them with ``output_transform=lambda x: x["loss"]``-style selectors.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        disc_network: torch.nn.Module | None = None,
        disc_optimizer: torch.optim.Optimizer | None = None,
        disc_loss_function: Callable | None = None,
        epoch_length: int | None = None,
        prepare_batch: Callable | None = None,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        autocast_dtype: str | torch.dtype | None = None,
        channels_last: bool = False,
        grad_clip: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            prepare_batch=prepare_batch or PrepareImageTarget(),
            train_handlers=train_handlers,
            key_train_metric=key_train_metric,
            **kwargs,
        )
        if disc_network is not None and disc_optimizer is None:
            raise ValueError("disc_network needs a disc_optimizer.")
        self.disc_network = disc_network
        self.disc_optimizer = disc_optimizer
        self.disc_loss_function = disc_loss_function or DiscriminatorLoss()
        self.autocast_dtype = getattr(torch, autocast_dtype) if isinstance(autocast_dtype, str) else autocast_dtype
        self.channels_last = channels_last
        self.grad_clip = grad_clip

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.state.device).type, dtype=self.autocast_dtype)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, network: torch.nn.Module) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), self.grad_clip)
        optimizer.step()

    def _iteration(self, engine: SupervisedAdversarialTrainer, batchdata: dict) -> dict:
        image, target, *extra = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        args, kwargs = extra if extra else ((), {})
        if target is None:
            raise ValueError("SupervisedAdversarialTrainer needs a target (clean image) in every batch.")
        image, target = self._layout(image.float()), self._layout(target.float())
        engine.network.train()
        with self._autocast():
            pred = engine.network(image, *args, **kwargs)
        output: dict[str, Any] = {CommonKeys.IMAGE: image, CommonKeys.LABEL: target, CommonKeys.PRED: pred}
        use_disc = self.disc_network is not None and getattr(engine.loss_function, "needs_discriminator", True)
        if use_disc:
            self.disc_network.train()
            with self._autocast():
                d_loss = self.disc_loss_function(self.disc_network(target), self.disc_network(pred.detach()))
            self._step(self.disc_optimizer, d_loss, self.disc_network)
            output["disc_loss"] = d_loss.detach()
            self.disc_network.requires_grad_(False)  # the generator step must not train D
        try:
            with self._autocast():
                fake = self.disc_network(pred) if use_disc else None
            total, terms = engine.loss_function(pred.float(), target, fake)
            self._step(engine.optimizer, total, engine.network)
        finally:
            if use_disc:
                self.disc_network.requires_grad_(True)
        output[CommonKeys.LOSS] = total.detach()
        output.update({f"loss_{name}": value for name, value in terms.items()})
        output[CommonKeys.PRED] = pred.detach()
        return output
