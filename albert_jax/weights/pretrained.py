"""`from_pretrained`: config, parameters, tokenizer and module, ready to run.

    model = albert_jax.from_pretrained("albert-large-v2", head="sequence_classification",
                                       num_labels=3)
    batch = model.tokenizer(["a text", "another"], padding=True, return_tensors="np")
    logits = model(**batch).logits

`name_or_dir` is a converted directory (`python -m albert_jax.convert`, `save_params`),
anything the converter reads (an HF model directory, a TF checkpoint directory or prefix, a
`.tar.gz`), a training workdir or checkpoint step directory (`albert_jax.weights.runs`), or an
HF hub name, which is converted once into `$ALBERT_JAX_CACHE/<name>` (default
`~/.cache/albert_jax/<name>`) and loaded from there afterwards.

The head asked for may differ from the stored one. Parameters are matched by their place in the
tree, the encoder being `albert/...` in every head: a pretraining checkpoint loaded as
`sequence_classification` keeps the encoder and pooler and initializes `classifier` anew (a
warning names what was initialized, as HF does); loading `base` from any head takes its encoder.

`shardings` places the parameters on a device mesh as they are read: a pytree of
`jax.sharding.Sharding` matching the parameters of the requested head, or a function from their
abstract tree (`jax.ShapeDtypeStruct`s) to one. Converted directories are restored by Orbax into
an abstract target carrying those shardings, so no device ever holds the whole tree unless the
shardings say so; new parameters are initialized by a jitted init with the same shardings.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params, create_module, init_params
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights import converted, runs, sources

log = logging.getLogger(__name__)

Params = dict[str, Any]
Path_ = tuple[str, ...]
Shardings = Any  # a pytree of jax.sharding.Sharding, or a function abstract params -> that
CACHE_ENV = "ALBERT_JAX_CACHE"


@dataclasses.dataclass(frozen=True, eq=False)
class Pretrained:
  """A loaded model. Calling it applies the module: `model(input_ids, attention_mask, ...)`."""

  config: AlbertConfig
  params: Params
  tokenizer: AlbertTokenizer
  module: nn.Module
  head: str
  metadata: Mapping[str, Any]  # the stored albert_jax.json, plus `newly_initialized`

  @property
  def num_labels(self) -> int | None:
    return getattr(self.module, "num_labels", None)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.module.apply({"params": self.params}, *args, **kwargs)


def cache_root() -> Path:
  """Where hub models are converted to: `$ALBERT_JAX_CACHE`, else `~/.cache/albert_jax`."""
  return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "albert_jax")


def from_pretrained(
  name_or_dir: str | os.PathLike,
  head: str | None = None,
  *,
  num_labels: int | None = None,
  shardings: Shardings | Callable[[Params], Shardings] | None = None,
  rng: jax.Array | None = None,
  strict: bool = False,
  ignore_mismatched_sizes: bool = False,
  **model_options: Any,
) -> Pretrained:
  """Loads a model; see the module docstring.

  Args:
    name_or_dir: converted directory, HF model directory, TF checkpoint, `.tar.gz`, hub name.
    head: a key of `albert_jax.heads.HEADS`; None for the stored head.
    num_labels: for the classification heads; default: the stored one for the stored head,
      else the head's default.
    shardings: where to put the parameters (see the module docstring); default: the first
      device.
    rng: seeds parameters the checkpoint does not have (default `jax.random.key(0)`).
    strict: raise instead of initializing parameters the checkpoint does not have.
    ignore_mismatched_sizes: initialize anew a parameter whose stored shape differs (a
      classifier with another number of labels) instead of raising, as HF's flag of that name.
    **model_options: module options (`dtype`, `param_dtype`, `scan_layers`, `remat_policy`,
      `attention_implementation`; `add_pooling_layer` for `base`).
  """
  path = Path(name_or_dir)
  if not converted.is_converted(path) and not _is_local(path):
    path = _cached_conversion(str(name_or_dir))
  if converted.is_converted(path):
    source = _ConvertedDir(path)
  elif converted.is_converted(path / runs.EXPORT_DIR):  # a workdir: the model it exported
    source = _ConvertedDir(path / runs.EXPORT_DIR)
  elif runs.is_run(path):  # a training workdir or step directory (runs without export/)
    start = functools.partial(from_pretrained, head="base", strict=False)  # the run's start
    source = runs.RunCheckpoint(path, start)
  else:
    source = _InMemory(sources.load_source(path))
  return _assemble(
    source,
    str(name_or_dir),
    head,
    num_labels,
    shardings,
    rng,
    strict,
    ignore_mismatched_sizes,
    model_options,
  )


def _is_local(path: Path) -> bool:
  return path.exists() or Path(f"{path}.index").is_file()


def _cached_conversion(name: str) -> Path:
  """Converts hub model `name` into the cache once; later calls find it there."""
  repo_id = sources.hub_repo_id(name)
  if repo_id is None:
    raise FileNotFoundError(f"{name!r} is neither a local path nor an HF hub model name.")
  target = cache_root() / repo_id.replace("/", "--")
  if not converted.is_converted(target):
    try:
      sources.convert(name, target)
    except UserError:  # converted meanwhile by another process? Fine if complete
      if not converted.is_converted(target):
        raise
    log.info("Converted %s into %s", name, target)
  return target


# ---- where stored parameters come from ------------------------------------------------------


class _ConvertedDir:
  """A converted directory (`albert_jax.weights.converted`): parameters restored by Orbax."""

  def __init__(self, path: Path):
    self.path = path
    self.metadata = converted.read_json(path / converted.METADATA_FILE)
    converted.verify_checksums(path, self.metadata)
    self.config = AlbertConfig.from_json_file(path / converted.HF_CONFIG_FILE)
    self.tokenizer = AlbertTokenizer.from_pretrained(path)
    own = self.metadata.get("tokenizer") != "bundled"
    converted.check_vocab(self.tokenizer, self.config, str(path), own=own)
    self.params_dir = (path / converted.PARAMS_DIR).absolute()
    if not self.params_dir.is_dir():
      raise FileNotFoundError(
        f"{path} has no {converted.PARAMS_DIR}/ Orbax checkpoint; convert the weights again."
      )

  def shapes(self) -> dict[Path_, tuple[int, ...]]:
    import orbax.checkpoint as ocp

    try:
      tree = ocp.PyTreeCheckpointer().metadata(self.params_dir).item_metadata.tree
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      raise UserError(
        f"Cannot read the Orbax checkpoint {self.params_dir}: {e}. It is "
        "incomplete or corrupt; convert the weights again."
      ) from None
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(tree).items()}

  def read(self, selection: dict[Path_, jax.ShapeDtypeStruct]) -> dict[Path_, jax.Array]:
    import orbax.checkpoint as ocp

    if not selection:
      return {}
    item = unflatten_dict(selection)
    args = ocp.args.PyTreeRestore(
      item=item,
      partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(item),
    )
    try:
      restored = ocp.PyTreeCheckpointer().restore(self.params_dir, args=args)
    except Exception as e:  # as above
      raise UserError(
        f"Cannot restore the Orbax checkpoint {self.params_dir}: {e}. It is "
        "incomplete or corrupt; convert the weights again."
      ) from None
    return flatten_dict(restored)


class _InMemory:
  """Weights converted in memory (HF or TF sources): numpy arrays placed with device_put."""

  def __init__(self, loaded: converted.Converted):
    self.metadata = loaded.metadata
    self.config = loaded.config
    self.tokenizer = loaded.tokenizer
    self.flat = flatten_dict(loaded.params)

  def shapes(self) -> dict[Path_, tuple[int, ...]]:
    return {path: np.shape(leaf) for path, leaf in self.flat.items()}

  def read(self, selection: dict[Path_, jax.ShapeDtypeStruct]) -> dict[Path_, jax.Array]:
    return {
      path: jax.device_put(np.asarray(self.flat[path], want.dtype), want.sharding)
      for path, want in selection.items()
    }


# ---- matching stored parameters to the requested head ---------------------------------------


def _canonical(head: str, path: Path_) -> Path_:
  """Tree paths with the encoder under `albert/` whatever the head (`base` has it at the root)."""
  return ("albert", *path) if head == "base" else path


def _shardings_for(target: Params, shardings: Any) -> dict[Path_, jax.sharding.Sharding]:
  flat_target = flatten_dict(target)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return dict.fromkeys(flat_target, device)
  if callable(shardings) and not isinstance(shardings, jax.sharding.Sharding):
    shardings = shardings(target)
  if isinstance(shardings, jax.sharding.Sharding):
    return dict.fromkeys(flat_target, shardings)
  flat = flatten_dict(shardings)
  if set(flat) != set(flat_target):
    missing = sorted("/".join(p) for p in set(flat_target) - set(flat))
    extra = sorted("/".join(p) for p in set(flat) - set(flat_target))
    raise ValueError(
      f"shardings do not match the parameters: missing {missing[:5]}, "
      f"unexpected {extra[:5]}; build them from the abstract parameters (pass "
      "a function abstract_params -> shardings)."
    )
  return flat


def _assemble(
  source: _ConvertedDir | _InMemory | runs.RunCheckpoint,
  name: str,
  head: str | None,
  num_labels: int | None,
  shardings: Any,
  rng: jax.Array | None,
  strict: bool,
  ignore_mismatched_sizes: bool,
  model_options: dict[str, Any],
) -> Pretrained:
  meta = source.metadata
  stored_head = meta["head"]
  head = head or stored_head
  if num_labels is None and head == stored_head:
    num_labels = meta.get("num_labels")
  module = create_module(source.config, head, num_labels, **model_options)
  target = abstract_params(module)
  place = _shardings_for(target, shardings)
  shapes = source.shapes()
  stored = {_canonical(stored_head, p): shape for p, shape in shapes.items()}
  original = {_canonical(stored_head, p): p for p in shapes}

  used: dict[Path_, Path_] = {}
  new: list[Path_] = []
  for path, want in flatten_dict(target).items():
    have = stored.get(_canonical(head, path))
    if have is not None and tuple(have) != tuple(want.shape):
      if not ignore_mismatched_sizes:
        raise UserError(
          f"{name}: parameter {'/'.join(path)} is stored with shape {tuple(have)}; head "
          f"{head!r} with num_labels={num_labels} needs {tuple(want.shape)}. Pass the stored "
          "num_labels, or ignore_mismatched_sizes=True to initialize it anew."
        )
      have = None
    if have is None:
      new.append(path)
    else:
      used[path] = _canonical(head, path)
  if new and strict:
    raise UserError(
      f"{name} has no {['/'.join(p) for p in new][:6]} for head {head!r} (it holds "
      f"{', '.join(meta.get('heads_found', []))}; stored head {stored_head!r}). Use a "
      "checkpoint with that head."
    )

  flat_target = flatten_dict(target)
  selection = {
    original[stored_path]: jax.ShapeDtypeStruct(
      flat_target[path].shape, flat_target[path].dtype, sharding=place[path]
    )
    for path, stored_path in used.items()
  }
  restored = source.read(selection)
  flat = {path: restored[original[stored_path]] for path, stored_path in used.items()}
  if not all(isinstance(leaf, jax.Array) for leaf in flat.values()):
    raise UserError(
      f"{name}: the checkpoint did not return every parameter asked for; it is "
      "incomplete. Convert the weights again."
    )
  if new:
    names = ["/".join(p) for p in new]
    log.warning(
      "Some parameters of %s (head %r) are not in %s and are newly initialized: %s. "
      "Train the model before using its predictions.",
      type(module).__name__,
      head,
      name,
      names,
    )
    flat.update(_init_new(module, new, place, rng))
  unused = sorted("/".join(p) for p in set(stored) - set(used.values()))
  if unused:
    log.info("Parameters of %s not used by head %r: %s", name, head, unused)
  metadata = {**meta, "newly_initialized": ["/".join(p) for p in new]}
  return Pretrained(source.config, unflatten_dict(flat), source.tokenizer, module, head, metadata)


def _init_new(
  module: nn.Module, paths: list[Path_], place: dict[Path_, Any], rng: jax.Array | None
) -> dict[Path_, jax.Array]:
  """Initializes only `paths` (XLA drops the rest of the init), placed as `place` says."""

  def init(key):
    flat = flatten_dict(init_params(module, key))
    return {path: flat[path] for path in paths}

  key = jax.random.key(0) if rng is None else rng
  return jax.jit(init, out_shardings={path: place[path] for path in paths})(key)
