"""The network registry: names, variants (argument sets) and one ``create`` that builds them all.

A network module registers its builder with :func:`register_network`; a variant is only a dict of keyword
arguments for that builder. Every variant set must contain ``"default"``; the contract tests
(``tests/networks/test_contract.py``) build each network's ``"tiny"`` variant, so every network shipped
with medseg declares one. Builders take ``spatial_dims``, ``in_channels``, ``out_channels`` and keyword
arguments, and return a :class:`medseg.networks.base.SegmentationNetwork`.

Example:
    >>> from medseg.networks import create
    >>> net = create("unet", spatial_dims=3, in_channels=4, out_channels=3, variant="small")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from medseg.errors import ConfigError, unknown_choice

_RESERVED = ("spatial_dims", "in_channels", "out_channels")


@dataclass(frozen=True)
class NetworkInfo:
    """What the registry knows about one network.

    Attributes:
        name: registry name, e.g. ``"unet"``.
        builder: callable ``builder(spatial_dims, in_channels, out_channels, **kwargs) -> nn.Module``.
        spatial_dims: the supported spatial dimensions, e.g. ``(2, 3)``.
        variants: variant name -> keyword arguments for the builder; contains ``"default"``.
        paper: reference of the paper the network follows.
        description: one line for listings.
    """

    name: str
    builder: Callable[..., nn.Module]
    spatial_dims: tuple[int, ...]
    variants: Mapping[str, Mapping[str, Any]]
    paper: str
    description: str


_REGISTRY: dict[str, NetworkInfo] = {}


def register_network(
    name: str,
    *,
    spatial_dims: tuple[int, ...] | list[int],
    variants: Mapping[str, Mapping[str, Any]],
    paper: str = "",
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a network builder under ``name``.

    Args:
        name: the registry name (lower case, e.g. ``"swin_unetr"``).
        spatial_dims: the spatial dimensions the builder supports, e.g. ``(2, 3)``.
        variants: variant name -> builder keyword arguments; must contain ``"default"``.
        paper: the paper the implementation follows (shown by ``medseg models``).
        description: one line describing the network.

    Returns:
        A decorator that records the builder and returns it unchanged.

    Raises:
        ConfigError: if ``name`` is already registered, ``"default"`` is missing, or a variant sets one of
            ``spatial_dims``, ``in_channels`` or ``out_channels`` (those are arguments of :func:`create`).
    """
    if not name or name != name.strip():
        raise ConfigError(f"invalid network name {name!r}")
    dims = tuple(sorted(int(d) for d in spatial_dims))
    if not dims or any(d not in (1, 2, 3) for d in dims):
        raise ConfigError(f"network {name!r}: spatial_dims must be a non-empty subset of (1, 2, 3), got {dims}")
    if "default" not in variants:
        raise ConfigError(f"network {name!r}: variants must include 'default'; got {sorted(variants)}")
    for variant, kwargs in variants.items():
        clash = [key for key in _RESERVED if key in kwargs]
        if clash:
            raise ConfigError(f"network {name!r} variant {variant!r} must not set {clash}; pass them to create()")
    frozen = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in variants.items()})

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ConfigError(f"network {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        _REGISTRY[name] = NetworkInfo(
            name=name, builder=builder, spatial_dims=dims, variants=frozen, paper=paper, description=description
        )
        return builder

    return decorate


def list_networks() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def get_info(name: str) -> NetworkInfo:
    """The :class:`NetworkInfo` of a registered network.

    Args:
        name: registry name.

    Raises:
        ConfigError: if ``name`` is not registered (the message lists the valid names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("network", name, list_networks()) from None


def resolve_kwargs(name: str, variant: str = "default", **overrides: Any) -> dict[str, Any]:
    """The builder keyword arguments a variant plus overrides resolve to (what :func:`create` passes).

    Args:
        name: registry name.
        variant: variant name.
        **overrides: keyword arguments that replace the variant's.

    Returns:
        A new dict of keyword arguments.

    Raises:
        ConfigError: unknown network or variant, or an override the builder does not accept.
    """
    info = get_info(name)
    if variant not in info.variants:
        raise unknown_choice(f"{name} variant", variant, info.variants)
    clash = [key for key in _RESERVED if key in overrides]
    if clash:
        raise ConfigError(f"pass {clash} as arguments of create(), not as network options")
    kwargs = {**info.variants[variant], **overrides}
    accepted = _accepted_kwargs(info.builder)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(
                f"network {name!r} does not accept option(s) {unknown}; valid: {', '.join(sorted(accepted))}"
            )
    return kwargs


def create(
    name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    variant: str = "default",
    **kwargs: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: registry name, e.g. ``"unet"`` (see :func:`list_networks`).
        spatial_dims: 2 or 3 (must be one of the network's supported dimensions).
        in_channels: channels of the input image.
        out_channels: channels of the output logits.
        variant: which argument set to start from (see ``get_info(name).variants``).
        **kwargs: builder options that override the variant's.

    Returns:
        The network, a :class:`medseg.networks.base.SegmentationNetwork`, in training mode.

    Raises:
        ConfigError: unknown name, variant or option, or unsupported ``spatial_dims``.
    """
    info = get_info(name)
    if spatial_dims not in info.spatial_dims:
        supported = ", ".join(str(d) for d in info.spatial_dims)
        raise ConfigError(f"network {name!r} supports spatial_dims {supported}; got {spatial_dims}")
    resolved = resolve_kwargs(name, variant, **kwargs)
    return info.builder(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **resolved)


def _accepted_kwargs(builder: Callable[..., Any]) -> set[str] | None:
    """Keyword names the builder accepts, or ``None`` if it takes ``**kwargs``."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in _RESERVED
    }
