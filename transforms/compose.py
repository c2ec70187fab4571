"""A MONAI ``Compose`` that lets medseg's own errors through unwrapped.

MONAI wraps every exception raised inside a transform in ``RuntimeError("applying transform ...")``, which
would hide a :class:`medseg.errors.MedsegError` (a problem the user can fix, exit code 2) behind a generic
error. :class:`PresetCompose` re-raises the original medseg error instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose

from medseg.errors import MedsegError


def find_medseg_error(exc: BaseException) -> MedsegError | None:
    """The first :class:`MedsegError` in an exception's chain of causes (itself included), if any.

    Args:
        exc: an exception, e.g. the ``RuntimeError`` raised by MONAI's ``apply_transform`` or ``Dataset``.

    Returns:
        The medseg error, or ``None`` when the chain holds none.
    """
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MedsegError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class PresetCompose(Compose):
    """``monai.transforms.Compose`` that raises medseg errors from its transforms as themselves.

    Args:
        transforms: the transforms, applied in order.
        map_items: apply to each item of list outputs (MONAI's meaning).
        **kwargs: other ``Compose`` options (``unpack_items``, ``lazy``).
    """

    def __init__(self, transforms: Sequence, map_items: bool = True, **kwargs: object) -> None:
        # log_stats=False: a user error is reported once, by its message, not with a dump of the data.
        super().__init__(transforms, map_items=map_items, log_stats=False, **kwargs)

    def __call__(self, input_: object, *args: object, **kwargs: object) -> object:
        """Apply the transforms; a medseg error raised by any of them propagates unwrapped."""
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as exc:
            error = find_medseg_error(exc)
            if error is None:
                raise
            raise error from error.__cause__
