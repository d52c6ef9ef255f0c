"""Read a torch.save file without running any code from it: a restricted unpickler.

``torch.load(weights_only=True)`` refuses every pickle that names a class outside its allowlist,
and training checkpoints name many: a Lightning ``.ckpt`` keeps its hyperparameters as omegaconf
objects, old checkpoints an ``argparse.Namespace``, callbacks their own classes. Full unpickling
would import those modules and call those classes, i.e. run the file's code.

This unpickler resolves the globals torch's weights-only reader allows (tensor and parameter
rebuild functions, storages, dtypes, devices, plain containers) to the same objects, and every
other global to an inert :class:`Placeholder` class: its module is never imported, the original
is never looked up, let alone called. What the pickle hands such a global (REDUCE / NEWOBJ
arguments, BUILD state, appended list and dict items) is only recorded on a placeholder
instance. Allowed functions are wrapped so that a pickle cannot set attributes on them.

The module itself is the ``pickle_module`` given to ``torch.load`` (a documented argument), so
torch's own ``persistent_load`` reads the storages of both the zip and the legacy format:
tensors come out bit-exact, as torch would have read them. Storage keys are recorded per
tensor so a writer can put new values back into the same bytes (:class:`StorageRef`).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import functools
import pickle
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

#: the module name placeholders carry, so nothing (inspect, torch) goes looking for the original
_HOME = __name__
_CODECS = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "utf-8", "utf8", "ascii"})


class Placeholder:
    """An object of a class that was not loaded. Subclasses are made per global name.

    ``args``: what REDUCE / NEWOBJ passed; ``state``: what BUILD set; ``items`` / ``entries``:
    what APPEND(S) / SETITEM(S) added. Nothing else happens to it.
    """

    __slots__ = ("args", "entries", "items", "state")
    args: tuple[Any, ...]
    state: Any
    items: list[Any]
    entries: dict[Any, Any]
    #: "module.name" of the global this stands for
    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = object.__new__(cls)
        self.args = args + ((kwargs,) if kwargs else ())
        self.state = None
        self.items = []
        self.entries = {}
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args)
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def add(self, item: Any) -> None:  # ADDITEMS (sets, protocol 4)
        self.items.append(item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        # a REDUCE whose callable is a placeholder instance: one more inert record
        return type(self)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.global_name}, not loaded>"


@dataclass(frozen=True)
class StorageRef:
    """Where a tensor's elements live in the file: storage ``key`` (the zip member
    ``data/<key>``, or the legacy storage of that key), and the view into it (in elements)."""

    key: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Allowed:
    """An allowed function, callable as itself, but with no attributes a pickle could set."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("a pickle may not change a function")


def _encode(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; no other codec is looked up."""
    if (
        not isinstance(text, str)
        or not isinstance(encoding, str)
        or encoding.lower() not in _CODECS
    ):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not read")
    return text.encode(encoding.lower())


def _bytearray(*args: Any) -> bytearray:
    """``bytearray`` from bytes or (str, encoding) only: never a size to allocate."""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str):
        return bytearray(_encode(args[0], args[1]))
    if not args:
        return bytearray()
    raise pickle.UnpicklingError("bytearray from anything but bytes is not read")


@functools.lru_cache(maxsize=1)
def _allowed() -> dict[str, Any]:
    """ "module.name" -> object for every global torch's weights-only reader allows."""
    import torch
    from torch import _weights_only_unpickler

    allowed: dict[str, Any] = {}
    for name, obj in _weights_only_unpickler._get_allowed_globals().items():
        if name == "_codecs.encode":
            obj = _encode
        elif name == "builtins.bytearray":
            obj = _bytearray
        if isinstance(obj, types.FunctionType | types.BuiltinFunctionType):
            obj = _Allowed(obj)
        allowed[name] = obj
    allowed["builtins.frozenset"] = frozenset
    allowed["torch._tensor._rebuild_from_type_v2"] = _Allowed(_rebuild_from_type_v2)
    allowed["torch.nn.parameter.Parameter"] = torch.nn.Parameter
    return allowed


# --- per-load state: the storage keys torch's persistent_load hands out, and what was replaced --


class _Record(threading.local):
    def __init__(self) -> None:
        self.active = False
        self.storage_keys: dict[int, str] = {}  # storage data pointer -> key in the file
        self.storage_sizes: dict[str, int] = {}  # key in the file -> bytes
        self.replaced: dict[str, type[Placeholder]] = {}  # global name -> its placeholder class


_RECORD = _Record()


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """A tensor of a subclass that was not loaded comes back as a plain tensor."""
    import torch

    if isinstance(new_type, type) and issubclass(new_type, Placeholder):
        result = func(*args)
        if isinstance(result, torch.Tensor):
            return result
        new_type = type(result)
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


class Unpickler(pickle.Unpickler):
    """pickle's unpickler with every global resolved as the module docstring says."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol-2 pickles write __builtin__.set), renamed as pickle does;
        # no Python 3 module has those names, so the rename is safe at any protocol
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        allowed = _allowed().get(full)
        if allowed is not None:
            return allowed
        cls = _RECORD.replaced.get(full)
        if cls is None:
            cls = type("Placeholder", (Placeholder,), {"__slots__": (), "global_name": full})
            cls.__module__ = _HOME
            _RECORD.replaced[full] = cls
        return cls

    # torch assigns its persistent_load after construction; the C unpickler looked the
    # attribute up at construction, so it calls this wrapper, which records storage keys and
    # keeps the legacy format's "module" ids (source checks of nn.Module classes) from torch.
    _torch_persistent_load: Callable[[Any], Any] | None = None

    @property
    def persistent_load(self) -> Callable[[Any], Any]:
        return self._persistent_load

    @persistent_load.setter
    def persistent_load(self, function: Callable[[Any], Any]) -> None:
        self._torch_persistent_load = function

    def _persistent_load(self, saved_id: Any) -> Any:
        if self._torch_persistent_load is None:
            raise pickle.UnpicklingError("a persistent id outside a torch file")
        kind = saved_id[0] if isinstance(saved_id, tuple) and saved_id else None
        if isinstance(kind, bytes):
            kind = kind.decode("ascii", "replace")
        if kind == "module":
            return saved_id[1] if len(saved_id) > 1 else None
        if kind != "storage" and not isinstance(saved_id, int | str):
            raise pickle.UnpicklingError(f"persistent id of kind {kind!r} is not read")
        storage = self._torch_persistent_load(saved_id)
        key = saved_id[2] if kind == "storage" and len(saved_id) > 2 else saved_id
        untyped = getattr(storage, "_untyped_storage", storage)
        with contextlib.suppress(AttributeError, RuntimeError):  # not a storage: nothing to write
            _RECORD.storage_sizes.setdefault(str(key), int(untyped.nbytes()))
            if untyped.nbytes():  # empty storages share the null pointer
                _RECORD.storage_keys.setdefault(untyped.data_ptr(), str(key))
        return storage


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with this module's Unpickler (torch.load reads the legacy headers so)."""
    return Unpickler(file, **kwargs).load()


@dataclass(frozen=True)
class Restricted:
    """What a restricted read gave: the object, the globals replaced by placeholders, and the
    file's key of each storage (by data pointer), to tell where a tensor is stored."""

    obj: Any
    replaced: tuple[str, ...]
    storage_keys: dict[int, str]
    storage_sizes: dict[str, int]

    def where(self, tensor: Any) -> StorageRef | None:
        """The storage key and view of a tensor read from this file (None if not found)."""
        storage = tensor.untyped_storage()
        key = self.storage_keys.get(storage.data_ptr()) if storage.nbytes() else None
        if key is None:
            return None
        return StorageRef(
            key, int(tensor.storage_offset()), tuple(tensor.shape), tuple(tensor.stride())
        )


@contextlib.contextmanager
def _recording() -> Iterator[_Record]:
    if _RECORD.active:
        raise RuntimeError("restricted reads do not nest")
    _RECORD.__init__()  # type: ignore[misc]
    _RECORD.active = True
    try:
        yield _RECORD
    finally:
        _RECORD.active = False


def restricted_load(path: Any) -> Restricted:
    """``torch.load`` of ``path`` through this unpickler, on the CPU, with nothing executed.

    torch.load's ``weights_only=False`` only means "unpickle with ``pickle_module``"; the
    safety is this module's ``find_class``. Raises what torch.load raises on a bad file.
    """
    import sys

    import torch

    current = sys.modules[__name__]
    with _recording() as record, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about legacy files; a reader stays quiet
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=current)
        return Restricted(
            obj,
            tuple(sorted(record.replaced)),
            dict(record.storage_keys),
            dict(record.storage_sizes),
        )


def is_placeholder(obj: Any) -> bool:
    return isinstance(obj, Placeholder) or (isinstance(obj, type) and issubclass(obj, Placeholder))


__all__ = ["Placeholder", "Restricted", "StorageRef", "Unpickler", "is_placeholder", "load"]
