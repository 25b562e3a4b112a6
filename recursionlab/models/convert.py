"""Convert HRM / TRM checkpoints between the official code's format and the library's models.

The official implementations (sapientinc/HRM and SamsungSAILMontreal/TinyRecursiveModels, which share their
parameter names) save a plain ``state_dict`` whose keys start with ``inner.``; their trainers add wrapper
prefixes: ``_orig_mod.`` (``torch.compile``), ``model.`` (the loss-head wrapper), ``module.`` (DDP) or an EMA
copy's prefix. The puzzle-embedding table is the buffer ``inner.puzzle_emb.weights`` of shape
(num_puzzle_identifiers, puzzle_emb_ndim).

Name map (official -> library; TRM's single network is stored as ``L_level`` and is the library's ``net``)::

    inner.embed_tokens.embedding_weight              embed_tokens.weight
    inner.embed_pos.embedding_weight                 embed_pos                     (learned positions only)
    inner.puzzle_emb.weights                         puzzle_emb
    inner.lm_head.weight, inner.q_head.{weight,bias} lm_head.weight, q_head.{weight,bias}
    inner.H_init, inner.L_init                       H_init, L_init
    inner.X_level.layers.i.self_attn.qkv_proj        X_level.blocks.i.mixer.qkv    (TRM: net.blocks.i...)
    inner.X_level.layers.i.self_attn.o_proj          X_level.blocks.i.mixer.out
    inner.X_level.layers.i.mlp_t.{gate_up,down}_proj X_level.blocks.i.mixer.{gate_up,down}  (TRM-MLP mixer)
    inner.X_level.layers.i.mlp.{gate_up,down}_proj   X_level.blocks.i.mlp.{gate_up,down}

Shapes give the vocabulary, width, depth, number of puzzles, the mixer and (with an MLP mixer or learned
positions) the sequence length. The recursion schedule (``H_cycles``, ``L_cycles``, ``halt_max_steps``), the
number of heads and the position encoding are not stored in the weights: they come from the official run's
``all_config.yaml`` (its ``arch`` section) or from explicit values, under the official names.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from recursionlab.models.hrm import HRM, HRMConfig, RecursiveReasoningModel
from recursionlab.models.trm import TRM, TRMConfig

MODEL_KINDS = ("hrm", "trm")
OFFICIAL_ROOT = "inner."
# Wrapper prefixes the official trainers (or a user's script) put before ``inner.``.
WRAPPER_PREFIXES = ("_orig_mod.", "model.", "module.", "ema.", "ema_model.", "shadow.")
OFFICIAL_CHECKPOINT_PREFIX = "_orig_mod.model."  # what the official pretrain.py writes (compiled loss head)
CONVERTED_FORMAT = "recursionlab-converted-model"

_LEAF_NAMES = {  # library name -> official name (without "inner.")
    "embed_tokens.weight": "embed_tokens.embedding_weight",
    "embed_pos": "embed_pos.embedding_weight",
    "puzzle_emb": "puzzle_emb.weights",
    "lm_head.weight": "lm_head.weight",
    "q_head.weight": "q_head.weight",
    "q_head.bias": "q_head.bias",
    "H_init": "H_init",
    "L_init": "L_init",
}
_BLOCK_PARTS = {  # library "part.sub" -> official "part.sub"
    "mixer.qkv": "self_attn.qkv_proj",
    "mixer.out": "self_attn.o_proj",
    "mixer.gate_up": "mlp_t.gate_up_proj",
    "mixer.down": "mlp_t.down_proj",
    "mlp.gate_up": "mlp.gate_up_proj",
    "mlp.down": "mlp.down_proj",
}
_LIB_BLOCK = re.compile(r"^(net|H_level|L_level)\.blocks\.(\d+)\.(mixer|mlp)\.(qkv|out|gate_up|down)\.weight$")
_OFF_BLOCK = re.compile(r"^(H_level|L_level)\.layers\.(\d+)\.(self_attn|mlp_t|mlp)\.(\w+)\.weight$")

# Official config fields the weights cannot tell, with the official default where one is safe to assume.
_SCHEDULE_FIELDS = ("H_cycles", "L_cycles", "halt_max_steps")
_DEFAULTS = {"halt_exploration_prob": 0.1, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "expansion": 4.0}


class ConversionError(ValueError):
    """The file or state dict is not a (complete) official HRM/TRM checkpoint, or the config is ambiguous."""


@dataclass
class ConvertedModel:
    """A library model built from an official checkpoint.

    model: :class:`HRM` or :class:`TRM` holding the weights; kind: "hrm" or "trm"; official_config: the
    official arch fields (inferred + given) that reproduce the checkpoint on export.
    """

    model: RecursiveReasoningModel
    kind: str
    official_config: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Reading an official file / state dict
# ----------------------------------------------------------------------------------------------------------


def read_official_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load an official checkpoint file and return its bare state dict (keys starting with ``inner.``).

    Accepts a raw ``state_dict`` (what the official ``pretrain.py`` saves) or a dict holding one under
    ``state_dict`` / ``model``. Raises :class:`ConversionError` for a missing, truncated or foreign file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"no such file: {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        raise ConversionError(
            f"{path!r} is not a readable PyTorch checkpoint (truncated or not a torch.save file): {err}"
        ) from err
    return strip_official_prefixes(_find_state_dict(payload, path))


def _find_state_dict(payload: Any, where: str) -> Mapping[str, torch.Tensor]:
    if isinstance(payload, Mapping):
        if any(isinstance(k, str) and OFFICIAL_ROOT in k for k in payload):
            return payload
        for key in ("state_dict", "model", "model_state_dict", "ema"):
            if isinstance(payload.get(key), Mapping):
                return _find_state_dict(payload[key], where)
    raise ConversionError(
        f"{where!r} holds no official HRM/TRM state dict: expected tensor names containing {OFFICIAL_ROOT!r} "
        f"(e.g. '_orig_mod.model.inner.lm_head.weight'); found top-level keys {_preview(payload)}"
    )


def _preview(payload: Any) -> str:
    if isinstance(payload, Mapping):
        keys = [str(k) for k in list(payload)[:6]]
        return "[" + ", ".join(keys) + (", ..." if len(payload) > 6 else "") + "]"
    return f"a {type(payload).__name__}"


def strip_official_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Remove the trainers' wrapper prefixes (``_orig_mod.``, ``model.``, ``module.``, EMA) from every key.

    Returns a dict whose keys start with ``inner.``; raises :class:`ConversionError` on a key with another
    prefix or a non-tensor value.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = str(key)
        stripped = True
        while not name.startswith(OFFICIAL_ROOT) and stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
                    break
        if not name.startswith(OFFICIAL_ROOT):
            raise ConversionError(
                f"unexpected key {key!r}: official HRM/TRM names start with {OFFICIAL_ROOT!r}, optionally after "
                f"the prefixes {', '.join(WRAPPER_PREFIXES)}"
            )
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{key!r} is a {type(value).__name__}, expected a tensor")
        if name in out:
            raise ConversionError(f"two keys map to {name!r} after removing wrapper prefixes")
        out[name] = value
    return out


def detect_kind(state: Mapping[str, torch.Tensor]) -> str:
    """"hrm" if the state has a high-level module ``inner.H_level``, else "trm" (one network, ``L_level``)."""
    return "hrm" if any(k.startswith(OFFICIAL_ROOT + "H_level.") for k in state) else "trm"


# ----------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------


def official_name(library_name: str, kind: str) -> str:
    """The official key (``inner.…``) of a library parameter/buffer name."""
    if library_name in _LEAF_NAMES:
        return OFFICIAL_ROOT + _LEAF_NAMES[library_name]
    m = _LIB_BLOCK.match(library_name)
    if m is None:
        raise ConversionError(f"library tensor {library_name!r} has no official counterpart")
    level, idx, part, sub = m.groups()
    if level == "net":
        if kind != "trm":
            raise ConversionError(f"{library_name!r} belongs to a TRM, not an {kind.upper()}")
        level = "L_level"
    return f"{OFFICIAL_ROOT}{level}.layers.{idx}.{_BLOCK_PARTS[part + '.' + sub]}.weight"


def library_name(official: str, kind: str) -> str:
    """The library name of an official key (``inner.…``, wrapper prefixes already removed)."""
    if not official.startswith(OFFICIAL_ROOT):
        raise ConversionError(f"official key {official!r} does not start with {OFFICIAL_ROOT!r}")
    rest = official[len(OFFICIAL_ROOT) :]
    for lib, off in _LEAF_NAMES.items():
        if rest == off:
            return lib
    m = _OFF_BLOCK.match(rest)
    reverse = {v: k for k, v in _BLOCK_PARTS.items()}
    if m is None or f"{m.group(3)}.{m.group(4)}" not in reverse:
        raise ConversionError(f"unknown official {kind.upper()} tensor {official!r}")
    level, idx = m.group(1), m.group(2)
    if kind == "trm":
        if level != "L_level":
            raise ConversionError(f"{official!r}: a TRM has a single network, stored as 'inner.L_level'")
        level = "net"
    return f"{level}.blocks.{idx}.{reverse[m.group(3) + '.' + m.group(4)]}.weight"


# ----------------------------------------------------------------------------------------------------------
# Config inference
# ----------------------------------------------------------------------------------------------------------


def _arch(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The official arch fields from a constructor config, an ``all_config.yaml`` dict or ``{"arch": ...}``."""
    if not config:
        return {}
    cfg = dict(config)
    if isinstance(cfg.get("arch"), Mapping):
        cfg = {**cfg, **cfg["arch"]}
    return cfg


def _layer_count(state: Mapping[str, torch.Tensor], level: str) -> int:
    idx = {int(m.group(2)) for k in state if (m := _OFF_BLOCK.match(k[len(OFFICIAL_ROOT) :])) and m.group(1) == level}
    if idx and idx != set(range(max(idx) + 1)):
        raise ConversionError(f"inner.{level} has blocks {sorted(idx)}: some blocks are missing (truncated file?)")
    return len(idx)


def infer_config(
    state: Mapping[str, torch.Tensor], kind: str | None = None, config: Mapping[str, Any] | None = None
) -> tuple[HRMConfig, dict[str, Any]]:
    """Build the library config of an official state dict (``inner.`` keys).

    ``config``: official arch fields (``num_heads``, ``H_cycles``, ``L_cycles``, ``halt_max_steps``,
    ``pos_encodings``, ``seq_len`` or ``puzzle_emb_len`` where the shapes do not fix it, ...). Returns the
    library config and the complete official arch dict. Raises :class:`ConversionError` naming every field that
    is missing or contradicts the shapes.
    """
    detected = detect_kind(state)
    kind = detected if kind is None else kind.lower()
    if kind not in MODEL_KINDS:
        raise ConversionError(f"unknown model kind {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    if kind != detected:
        raise ConversionError(
            f"the checkpoint looks like an official {detected.upper()} "
            f"({'has' if detected == 'hrm' else 'has no'} inner.H_level), not a {kind.upper()}"
        )
    arch = _arch(config)
    R = OFFICIAL_ROOT
    for required in (R + "embed_tokens.embedding_weight", R + "lm_head.weight", R + "q_head.weight", R + "H_init"):
        if required not in state:
            raise ConversionError(f"the state dict lacks {required!r} (truncated or not an official checkpoint)")
    V, D = state[R + "embed_tokens.embedding_weight"].shape
    table = state.get(R + "puzzle_emb.weights")
    N, E = (0, 0) if table is None else tuple(table.shape)
    H_layers, L_layers = _layer_count(state, "H_level"), _layer_count(state, "L_level")
    if L_layers == 0 or (kind == "hrm" and H_layers == 0):
        raise ConversionError(f"found {H_layers} H_level and {L_layers} L_level blocks: not a complete {kind.upper()}")
    mlp_t = any(".mlp_t." in k for k in state)
    problems: list[str] = []

    def given(name: str, inferred: Any = None, default: Any = None) -> Any:
        """The value of an official field: inferred from shapes (checked against a given one) or given."""
        value = arch.get(name)
        if inferred is not None:
            if value is not None and value != inferred:
                problems.append(f"{name}={value!r} contradicts the weights, which say {inferred!r}")
            return inferred
        if value is None:
            return default
        return value

    given("hidden_size", D)
    given("vocab_size", V)
    if E and E != D:
        problems.append(
            f"puzzle_emb_ndim={E} differs from hidden_size={D}: the library's puzzle embedding is one "
            f"hidden-size vector on the first prefix position (as in the released HRM/TRM checkpoints)"
        )
    if table is not None:
        given("num_puzzle_identifiers", N)
        given("puzzle_emb_ndim", E)
    # prefix length P: HRM ceil(E/D); TRM puzzle_emb_len if nonzero, else ceil(E/D)
    auto_prefix = -(E // -D) if E else 0
    prefix = auto_prefix
    if kind == "trm":
        prefix = int(arch.get("puzzle_emb_len") or 0) or None  # None: not given, infer below
    # total length S from a tensor that has it
    total = None
    if mlp_t:
        total = int(state[R + "L_level.layers.0.mlp_t.down_proj.weight"].shape[0])
    elif R + "embed_pos.embedding_weight" in state:
        total = int(state[R + "embed_pos.embedding_weight"].shape[0])
    seq_len = arch.get("seq_len")
    if prefix is None:
        if total is not None and seq_len is not None:
            prefix = total - int(seq_len)
        elif "puzzle_emb_len" in arch:  # given as 0 -> official rule
            prefix = auto_prefix
        else:
            problems.append(
                "puzzle_emb_len is not stored in the weights (TRM default 16): give puzzle_emb_len or seq_len"
            )
            prefix = 0
    if total is not None:
        seq_len = given("seq_len", total - prefix)
    elif seq_len is None:
        problems.append("seq_len (the puzzle length) is not stored in rope/none-position weights: give seq_len")
        seq_len = 1
    if prefix and table is None:
        problems.append(f"the model has {prefix} prefix positions but no puzzle table inner.puzzle_emb.weights")
    pos = "learned" if R + "embed_pos.embedding_weight" in state else arch.get("pos_encodings")
    if pos is None:
        problems.append("pos_encodings ('rope' or 'none') is not stored in the weights: give pos_encodings")
        pos = "rope"
    elif pos == "learned" and R + "embed_pos.embedding_weight" not in state:
        problems.append("pos_encodings='learned' but the weights have no inner.embed_pos.embedding_weight")
    heads = arch.get("num_heads")
    if heads is None:
        if mlp_t and pos != "rope":
            heads = 2 if D % 4 == 0 else 1  # unused by an MLP-mixer model without RoPE; any valid split
        else:
            problems.append("num_heads is not stored in the weights (the fused qkv is 3D x D): give num_heads")
            heads = 1
    schedule = {}
    for name in _SCHEDULE_FIELDS:
        if arch.get(name) is None:
            problems.append(f"{name} (the recursion schedule) is not stored in the weights: give {name}")
        schedule[name] = int(arch.get(name) or 1)
    expansion = float(given("expansion", default=_DEFAULTS["expansion"]))
    inner_width = int(state[R + "L_level.layers.0.mlp.down_proj.weight"].shape[1])
    want = 2 * inner_width
    if int(state[R + "L_level.layers.0.mlp.gate_up_proj.weight"].shape[0]) != want:
        problems.append("inner.L_level.layers.0.mlp: gate_up_proj is not twice down_proj's inner width")
    multiple_of = 256
    expected_width = math.ceil(round(expansion * D * 2 / 3) / multiple_of) * multiple_of
    if expected_width != inner_width:
        problems.append(
            f"expansion={expansion} gives a SwiGLU width of {expected_width} at hidden_size={D}, but the weights "
            f"have {inner_width}: give the run's expansion"
        )
    no_act_continue = bool(given("no_ACT_continue", default=True)) if kind == "trm" else False
    if problems:
        raise ConversionError(
            f"cannot build the library {kind.upper()} from this checkpoint:\n  - " + "\n  - ".join(problems)
            + "\nPass the official run's all_config.yaml (its 'arch' section) or these fields explicitly."
        )
    common = dict(
        vocab_size=int(V),
        seq_len=int(seq_len),
        num_puzzle_ids=int(N) if N else 1,
        hidden=int(D),
        n_heads=int(heads),
        expansion=expansion,
        L_layers=L_layers,
        H_cycles=schedule["H_cycles"],
        L_cycles=schedule["L_cycles"],
        halt_max_steps=schedule["halt_max_steps"],
        halt_exploration_prob=float(given("halt_exploration_prob", default=_DEFAULTS["halt_exploration_prob"])),
        puzzle_emb_len=int(prefix),
        pos_encoding=str(pos),
        rope_base=float(given("rope_theta", default=_DEFAULTS["rope_theta"])),
        mixer="mlp" if mlp_t else "attention",
        rms_eps=float(given("rms_norm_eps", default=_DEFAULTS["rms_norm_eps"])),
        ffn_multiple_of=multiple_of,
    )
    if kind == "hrm":
        lib_cfg: HRMConfig = HRMConfig(H_layers=H_layers, **common)
    else:
        lib_cfg = TRMConfig(H_layers=0, q_continue_loss=not no_act_continue, **common)
    try:
        lib_cfg.validate()
    except ValueError as err:
        raise ConversionError(f"the inferred config is invalid: {err}") from err
    return lib_cfg, official_config_of(lib_cfg, kind, base=arch)


def official_config_of(cfg: HRMConfig, kind: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The official constructor fields of a library config (``base``: extra official fields to keep)."""
    out = {k: v for k, v in dict(base or {}).items() if k != "arch"}
    P = cfg.puzzle_emb_len
    out.update(
        vocab_size=cfg.vocab_size,
        seq_len=cfg.seq_len,
        num_puzzle_identifiers=cfg.num_puzzle_ids if P else 1,
        hidden_size=cfg.hidden,
        num_heads=cfg.n_heads,
        expansion=cfg.expansion,
        puzzle_emb_ndim=cfg.hidden if P else 0,
        H_cycles=cfg.H_cycles,
        L_cycles=cfg.L_cycles,
        H_layers=cfg.H_layers if kind == "hrm" else out.get("H_layers", 0),
        L_layers=cfg.L_layers,
        halt_max_steps=cfg.halt_max_steps,
        halt_exploration_prob=cfg.halt_exploration_prob,
        pos_encodings=cfg.pos_encoding,
        rope_theta=cfg.rope_base,
        rms_norm_eps=cfg.rms_eps,
    )
    if kind == "trm":
        out.update(puzzle_emb_len=P, mlp_t=cfg.mixer == "mlp", no_ACT_continue=not cfg.q_continue_loss)
    return out


# ----------------------------------------------------------------------------------------------------------
# official -> library
# ----------------------------------------------------------------------------------------------------------


def official_to_library_state(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Rename an official state dict (``inner.`` keys) to library names; values are the same tensors."""
    return {library_name(k, kind): v for k, v in state.items()}


def load_official_state(
    state: Mapping[str, Any], kind: str | None = None, config: Mapping[str, Any] | None = None
) -> ConvertedModel:
    """Build a library :class:`HRM`/:class:`TRM` holding an official state dict's weights.

    state: official names, with or without wrapper prefixes; kind: "hrm", "trm" or None (detect);
    config: official arch fields for what the weights do not tell (see :func:`infer_config`).
    The model takes the dtype of the official weights (float32 for released checkpoints).
    """
    bare = strip_official_prefixes(state)
    cfg, official_cfg = infer_config(bare, kind, config)
    kind = "hrm" if isinstance(cfg, HRMConfig) and not isinstance(cfg, TRMConfig) else "trm"
    model: RecursiveReasoningModel = HRM(cfg) if kind == "hrm" else TRM(cfg)
    lib_state = official_to_library_state(bare, kind)
    expected = {k for k in model.state_dict() if k != "_extra_state"}
    missing, unexpected = sorted(expected - set(lib_state)), sorted(set(lib_state) - expected)
    if missing or unexpected:
        raise ConversionError(
            "the official state dict does not match the inferred model: "
            f"missing {[official_name(k, kind) for k in missing][:8]}, unexpected {unexpected[:8]}"
        )
    own = model.state_dict()
    for name, value in lib_state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise ConversionError(
                f"{official_name(name, kind)} has shape {tuple(value.shape)}, the inferred model needs "
                f"{tuple(own[name].shape)}"
            )
    dtype = bare[OFFICIAL_ROOT + "embed_tokens.embedding_weight"].dtype
    if dtype.is_floating_point:
        model = model.to(dtype)
    own = model.state_dict()  # again: .to() gave the parameters new storage
    with torch.no_grad():
        for name, value in lib_state.items():
            own[name].copy_(value.to(own[name].dtype))
    official_cfg.setdefault("forward_dtype", str(bare[OFFICIAL_ROOT + "H_init"].dtype).replace("torch.", ""))
    return ConvertedModel(model, kind, official_cfg)


def load_official(
    path: str | os.PathLike, kind: str | None = None, config: Mapping[str, Any] | str | os.PathLike | None = None
) -> ConvertedModel:
    """Read an official checkpoint file into a library model (see :func:`load_official_state`).

    ``config`` may be a dict of official fields or the path of the official run's ``all_config.yaml``.
    """
    if isinstance(config, (str, os.PathLike)):
        config = read_official_config(config)
    return load_official_state(read_official_file(path), kind, config)


def read_official_config(path: str | os.PathLike) -> dict[str, Any]:
    """The arch fields of an official ``all_config.yaml`` (its ``arch`` section merged over the top level)."""
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as err:
        raise ConversionError(f"cannot read the official config {os.fspath(path)!r}: {err}") from err
    if not isinstance(data, Mapping):
        raise ConversionError(f"{os.fspath(path)!r} is not a YAML mapping of official config fields")
    return _arch(data)


# ----------------------------------------------------------------------------------------------------------
# library -> official
# ----------------------------------------------------------------------------------------------------------


def model_kind(model: RecursiveReasoningModel) -> str:
    """"hrm" or "trm" for a library model; raises for anything else."""
    if isinstance(model, TRM):
        return "trm"
    if isinstance(model, HRM):
        return "hrm"
    raise ConversionError(f"only HRM and TRM models convert to the official format, got {type(model).__name__}")


def library_to_official_state(
    state: Mapping[str, torch.Tensor],
    kind: str,
    prefix: str = "",
    forward_dtype: torch.dtype | str | None = None,
) -> dict[str, torch.Tensor]:
    """Rename a library state dict to official names (``prefix`` + ``inner.…``).

    ``forward_dtype``: dtype of ``H_init``/``L_init`` in the official model (bfloat16 in the official runs; None
    keeps the library's). The training carry (``_extra_state``) is dropped.
    """
    if isinstance(forward_dtype, str):
        forward_dtype = getattr(torch, forward_dtype)
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name == "_extra_state":
            continue
        tensor = value.detach()
        if forward_dtype is not None and name in ("H_init", "L_init"):
            tensor = tensor.to(forward_dtype)
        out[prefix + official_name(name, kind)] = tensor
    return out


def export_official(
    model: RecursiveReasoningModel, prefix: str = OFFICIAL_CHECKPOINT_PREFIX, forward_dtype: str | None = None
) -> dict[str, torch.Tensor]:
    """The official ``state_dict`` of a library HRM/TRM (``prefix``: what the official loader expects; the
    official ``pretrain.py`` writes and reads ``_orig_mod.model.``)."""
    return library_to_official_state(model.state_dict(), model_kind(model), prefix, forward_dtype)


def save_converted(converted: ConvertedModel, path: str | os.PathLike) -> None:
    """Write a converted model as a library payload (read it back with :func:`load_converted`)."""
    cfg = converted.model.config
    payload = {
        "format": CONVERTED_FORMAT,
        "kind": converted.kind,
        "config": cfg.to_dict(),
        "official_config": dict(converted.official_config),
        "model": {k: v for k, v in converted.model.state_dict().items() if k != "_extra_state"},
    }
    torch.save(payload, os.fspath(path))


def load_converted(path: str | os.PathLike) -> ConvertedModel:
    """Read a file written by :func:`save_converted` (or the ``convert`` CLI verb) back into a model."""
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConversionError(f"{os.fspath(path)!r} is not a readable PyTorch file: {err}") from err
    if not isinstance(payload, Mapping) or payload.get("format") != CONVERTED_FORMAT:
        raise ConversionError(f"{os.fspath(path)!r} is not a converted recursionlab HRM/TRM model")
    kind = payload["kind"]
    cfg = (HRMConfig if kind == "hrm" else TRMConfig)(**payload["config"])
    model: RecursiveReasoningModel = HRM(cfg) if kind == "hrm" else TRM(cfg)
    state = payload["model"]
    dtype = state["embed_tokens.weight"].dtype
    model = model.to(dtype)
    model.load_state_dict({**state, "_extra_state": {}})
    return ConvertedModel(model, kind, dict(payload.get("official_config", {})))


# ----------------------------------------------------------------------------------------------------------
# Files (what the ``python -m recursionlab convert`` verb calls)
# ----------------------------------------------------------------------------------------------------------


def detect_library_kind(state: Mapping[str, torch.Tensor]) -> str:
    """"trm" for a library state dict with a single network ``net``, "hrm" for one with ``H_level``."""
    if any(k.startswith("net.blocks.") for k in state):
        return "trm"
    if any(k.startswith("H_level.blocks.") for k in state):
        return "hrm"
    raise ConversionError("the state dict has neither 'net.blocks' (TRM) nor 'H_level.blocks' (HRM): not an HRM/TRM")


def read_library_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str | None, dict[str, Any]]:
    """The library HRM/TRM weights of a converted file, a shipped asset or a training checkpoint (the EMA
    weights where the run kept an EMA). Returns (state, kind or None, official config or {})."""
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConversionError(f"{os.fspath(path)!r} is not a readable PyTorch file (truncated?): {err}") from err
    if not isinstance(payload, Mapping) or not isinstance(payload.get("model"), Mapping):
        raise ConversionError(f"{os.fspath(path)!r} is not a recursionlab model file (no 'model' state dict)")
    state = {k: v for k, v in payload["model"].items() if k != "_extra_state"}
    ema = payload.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("shadow"), Mapping):
        for name, shadow in ema["shadow"].items():
            if name in state and name != "puzzle_emb":
                state[name] = shadow.to(state[name].dtype)
    kind = payload.get("kind") if payload.get("format") == CONVERTED_FORMAT else None
    return state, kind, dict(payload.get("official_config") or {})


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    kind: str | None = None,
    config: Mapping[str, Any] | None = None,
    export: bool = False,
    prefix: str = OFFICIAL_CHECKPOINT_PREFIX,
) -> str:
    """official -> library (default) or library -> official (``export``) file conversion; returns a summary.

    Import writes a :func:`save_converted` payload; export writes a bare official state dict under ``prefix``
    (the official ``pretrain.py`` loads ``_orig_mod.model.``-prefixed keys).
    """
    if not export:
        converted = load_official(src, kind, config)
        save_converted(converted, dst)
        cfg = converted.model.config
        return (
            f"converted official {converted.kind.upper()} -> {os.fspath(dst)}: hidden {cfg.hidden}, "
            f"{cfg.L_layers} L / {cfg.H_layers} H blocks, {cfg.num_puzzle_ids:,} puzzle ids, "
            f"{converted.model.num_parameters():,} parameters (+ puzzle table)"
        )
    state, stored_kind, official_cfg = read_library_state(src)
    kind = (kind or stored_kind or detect_library_kind(state)).lower()
    if kind not in MODEL_KINDS:
        raise ConversionError(f"unknown model kind {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    forward_dtype = dict(config or {}).get("forward_dtype") or official_cfg.get("forward_dtype")
    official = library_to_official_state(state, kind, prefix, forward_dtype)
    torch.save(official, os.fspath(dst))
    return f"exported {kind.upper()} -> {os.fspath(dst)}: {len(official)} official tensors under {prefix!r}"
