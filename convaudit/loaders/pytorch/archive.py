"""Open PyTorch files safely: tell the container kinds apart and read their tensors.

Container kinds (the ``container`` entry of every PyTorch provenance):
``zip`` / ``legacy`` (``torch.save`` of a state_dict or training dict, new zip or pre-1.6 format),
``safetensors``, ``torchscript``, ``pt2`` (``torch.export.save``) and ``pickled-module`` (a full
``nn.Module`` pickle, read only with ``trust_pickle``).

A torch.save pickle is read in one of three ways (the ``unpickled`` provenance entry):
``torch.load(weights_only=True)`` first; when that refuses the file (a global outside torch's
allowlist, e.g. a Lightning checkpoint's omegaconf hyperparameters, or pickle protocol 4+), the
restricted reader of :mod:`.unpickler` ("restricted": the same tensors, every other object an
inert placeholder, no code run); full unpickling ("full") only with ``trust_pickle``.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convaudit.errors import ModelFileError, UntrustedPickleError
from convaudit.loaders.pytorch.unpickler import Restricted, is_placeholder, restricted_load
from convaudit.loaders.safety import check_declared_bytes, open_zip

#: torch.save's legacy format: pickle protocol 2, then the pickled long 0x1950a86a20f9469cfc6c
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_MAGIC_LONG = LEGACY_MAGIC[2:]
#: keys under which training scripts nest the model's state_dict, in order of preference
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network")


def is_legacy(head: bytes) -> bool:
    """Legacy torch.save: PROTO n (2 to 5), an optional FRAME (protocol 4+), the magic long."""
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    rest = head[2:]
    if rest[:1] == b"\x95":  # FRAME opcode + 8-byte length
        rest = rest[9:]
    return rest.startswith(_MAGIC_LONG)


def is_safetensors(head: bytes, file_size: int) -> bool:
    """safetensors: u64 little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= file_size - 8 and head[8:9] == b"{"


def zip_kind(names: list[str]) -> str | None:
    """'pt2', 'torchscript', 'zip' (torch.save), or None for a zip that is not PyTorch's."""
    if any(n.rsplit("/", 1)[-1] == "serialized_exported_program.json" for n in names):
        return "pt2"  # the torch 2.1-2.5 torch.export.save layout
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(roots) != 1:
        return None
    rels = {n.split("/", 1)[1] for n in names if "/" in n}
    if "archive_format" in rels or any(
        r.startswith("models/") and r.endswith(".json") for r in rels
    ):
        return "pt2"
    if "data.pkl" not in rels:
        return None
    if "constants.pkl" in rels or any(r.startswith("code/") for r in rels):
        return "torchscript"
    return "zip"


def sniff_kind(path: Path, head: bytes) -> str | None:
    """The container kind of ``path`` from its content, or None if it is not a PyTorch file."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                return zip_kind(zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            # A torch zip too damaged to list: claim it only if torch's layout shows in the head.
            return "zip" if b"/data.pkl" in head or b"archive/" in head else None
    if is_legacy(head):
        return "legacy"
    try:
        size = path.stat().st_size
    except OSError:
        return None
    return "safetensors" if is_safetensors(head, size) else None


def reason(exc: BaseException) -> str:
    """The informative line of a torch error message (torch wraps the cause in boilerplate)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the rest of the message is advice about weights_only
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif "TorchScript interpreter" in text and "Error:" in text:  # the cause comes last
        text = text.rsplit("Error:", 1)[1]
    text = text.split("(Could this error message be improved?", 1)[0]  # c10 boilerplate
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def bad_file(
    path: Path, exc: BaseException, what: str = "not a readable PyTorch file"
) -> ModelFileError:
    return ModelFileError(f"cannot read {path}: {what} ({reason(exc)})")


def untrusted(path: Path, *, holds: str = "") -> UntrustedPickleError:
    what = (
        f"its tensors are inside a pickled object ({holds}), not in a plain state_dict"
        if holds
        else "it is a full pickled object (e.g. an nn.Module), not plain tensors"
    )
    return UntrustedPickleError(
        f"cannot read {path}: {what}; unpickling runs arbitrary code from the file, so "
        "convaudit refuses it by default",
        hint="pass --trust-pickle only if you trust where the file came from, or save "
        "model.state_dict() instead (then use --arch module:callable for the geometry)",
    )


def check_zip_file(path: Path) -> None:
    """Refuse zip bombs and truncated members before torch extracts anything."""
    with open_zip(path) as zf:  # also refuses zip bombs and member names that are not UTF-8
        size = path.stat().st_size
        for info in zf.infolist():
            check_declared_bytes(
                path, f"archive member {info.filename!r}", info.compress_size, size
            )


@dataclass(frozen=True)
class Loaded:
    """A torch.load result: the object, how it was read ("weights-only", "restricted" or
    "full"), and for a restricted read its record (placeholders, storage keys)."""

    obj: Any
    how: str
    restricted: Restricted | None = None


def torch_load(path: Path, *, trust_pickle: bool) -> Loaded:
    """``torch.load`` with ``weights_only=True``; when torch refuses the file's globals (or its
    pickle protocol), the restricted reader, or full unpickling when trusted."""
    import torch

    try:
        with warnings.catch_warnings():  # e.g. on pickle protocol 4+; a reader stays quiet
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
        return Loaded(obj, "weights-only")
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        needs_globals = "Unsupported global" in str(exc)
        # torch's weights_only unpickler knows protocol 2 only; FRAME (opcode 149) means 4+
        new_protocol = "Unsupported operand 149" in str(exc)
        if not needs_globals and not new_protocol:
            raise bad_file(path, exc) from None
    if trust_pickle:
        try:
            return Loaded(torch.load(path, map_location="cpu", weights_only=False), "full")
        except Exception as exc:
            raise bad_file(path, exc, "unpickling failed") from None
    try:
        record = restricted_load(path)
    except Exception as exc:  # a pickle the restricted reader cannot rebuild: never run it
        raise bad_file(path, exc, "not readable without running its code") from None
    return Loaded(record.obj, "restricted", record)


def is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


@dataclass(frozen=True)
class StateDict:
    """The tensors found in a torch.save / safetensors file and where they sit in it."""

    tensors: Mapping[str, Any]  # key -> torch.Tensor, in file order
    container: str  # zip | legacy | safetensors
    nesting: tuple[str, ...] = ()  # path of keys from the top object to the state_dict
    metadata: Mapping[str, str] = field(default_factory=dict)  # safetensors metadata
    unpickled: str = "weights-only"  # how the pickle was read (see the module docstring)
    notes: tuple[str, ...] = ()  # what the model's notes must say about the reading

    def provenance_extra(self) -> dict[str, str]:
        """Entries every layer's provenance carries, for the writer."""
        extra = {"nesting": ".".join(self.nesting)} if self.nesting else {}
        if self.unpickled in ("full", "restricted"):
            extra["unpickled"] = self.unpickled
        return extra


def _tensors(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """The tensor entries (by string key) of a state_dict; anything else is no weight."""
    import torch

    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def find_state_dict(
    path: Path, obj: Any, container: str, unpickled: str = "weights-only"
) -> StateDict:
    """The state_dict in ``obj``: the object itself, or nested in a training dict."""
    if is_tensor_dict(obj) and not any(is_tensor_dict(obj.get(k)) for k in NESTING_KEYS):
        return StateDict(_tensors(obj), container, unpickled=unpickled)
    if isinstance(obj, Mapping):
        for key in NESTING_KEYS:
            inner = obj.get(key)
            if inner is not None and is_tensor_dict(inner):
                return StateDict(_tensors(inner), container, (key,), unpickled=unpickled)
        listed = ", ".join(repr(k) for k in list(obj)[:12])
        raise ModelFileError(
            f"cannot read {path}: "
            + (f"no state_dict in this dict (keys: {listed})" if obj else "the dict is empty"),
            hint=f"convaudit looks for tensors at the top level or under {', '.join(NESTING_KEYS)}",
        )
    raise ModelFileError(
        f"cannot read {path}: the file holds a {type(obj).__name__}, not a state_dict"
    )


def read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise bad_file(path, exc, "corrupt safetensors file") from None
    return StateDict(tensors, "safetensors", metadata=metadata)


def read_state_dict(path: Path, kind: str, *, trust_pickle: bool) -> StateDict | Any:
    """A StateDict for tensor files; the unpickled object itself for a trusted full pickle."""
    import torch

    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "zip":
        check_zip_file(path)
    loaded = torch_load(path, trust_pickle=trust_pickle)
    obj = loaded.obj
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, Mapping) and not is_tensor_dict(obj):
        for key in NESTING_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                return obj[key]
    if loaded.restricted is None:
        return find_state_dict(path, obj, kind, loaded.how)
    if is_placeholder(obj):
        raise untrusted(path, holds=f"a {obj.global_name}")
    try:
        found = find_state_dict(path, obj, kind, loaded.how)
    except ModelFileError:
        values = obj.values() if isinstance(obj, Mapping) else ()
        held = sorted({v.global_name for v in values if is_placeholder(v)})
        if not held:
            raise
        raise untrusted(path, holds=", ".join(held[:3])) from None
    # the classes of other packages say what the file holds; the standard library's follow
    replaced = sorted(
        loaded.restricted.replaced,
        key=lambda name: (name.split(".")[0] in sys.stdlib_module_names, name),
    )
    shown = ", ".join(replaced[:4]) + (
        f" and {len(replaced) - 4} more" if len(replaced) > 4 else ""
    )
    classes = "class" if len(replaced) == 1 else "classes"
    note = (
        f"read without running code from the file: objects of {len(replaced)} {classes} it "
        f"names were left unloaded ({shown}); only its tensors were read"
    )
    return dataclasses.replace(found, notes=(note,))
