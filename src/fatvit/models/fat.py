"""FAT: the Fully Adaptive Transformer family.

"Lightweight Vision Transformer with Bidirectional Interaction" (NeurIPS 2023).

Layout of this file (as in timm's model files): the block, the stage, the
model, then the size configurations (data) and their timm registration.

The state-dict layout is the authors' (``patch_embed``, ``layers.{i}.blocks.{j}``,
``norm``, ``head``), so their checkpoints load with ``strict=True``.
"""

import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, GroupNorm1, calculate_drop_path_rates, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from torch import nn

from ..checkpoint import interaction_record, load_finetune, recorded_interaction, safetensors_record
from ..errors import FatvitError
from ..layers import (
    FASA,
    ConvFFN,
    ConvStem,
    CrossShapedWindowAttention,
    DownsampleShortcut,
    PartitionAttention,
    SpatialReductionAttention,
)
from ..layers.dwconv import DepthwiseConv2d

__all__ = [
    "FAT",
    "FATBlock",
    "FATStage",
    "FATConfig",
    "MODEL_CONFIGS",
    "ATTENTIONS",
    "HEAD_INITS",
    "InteractionMismatchWarning",
    "checkpoint_filter_fn",
    "model_names",
    "token_mixer",
]

#: Token mixers of the FAT block: FASA, and the attentions the paper compares it with.
ATTENTIONS = ("fasa", "maxvit", "swin", "pvt", "twins", "cswin")

#: Initialisations of the classifier: timm's truncated normal (std 0.02), or PyTorch's default (the released code).
HEAD_INITS = ("trunc_normal", "default")

#: CSWin-T's stripe widths per stage (its last stage attends over the whole map).
CSWIN_SPLIT_SIZES = (1, 2, 7, 7)


def token_mixer(
    attention: str,
    dim: int,
    num_heads: int,
    kernel_size: int,
    window_size: int,
    stage: int,
    block: int,
    last_stage: bool,
    interaction: str = "bidirectional",
    kv_downsample: str = "refined",
) -> nn.Module:
    """The token mixer of block ``block`` of stage ``stage``: FASA, or a compared attention.

    Alternating mechanisms change on every other block of a stage, as in their
    papers: Swin's shifted windows, MaxViT's block then grid attention, Twins'
    LSA then GSA. Reduction ratios of SRA/GSA are the stage's FASA window size
    (8, 4, 2, 1), which are also PVT's and Twins' own at these resolutions.
    """
    odd = block % 2 == 1
    if attention == "fasa":
        return FASA(dim, num_heads, kernel_size, window_size, interaction=interaction, kv_downsample=kv_downsample)
    if attention == "swin":
        return PartitionAttention(dim, num_heads, 7, "window", shift=3 if odd else 0)
    if attention == "maxvit":
        return PartitionAttention(dim, num_heads, 7, "grid" if odd else "window")
    if attention == "pvt":
        return SpatialReductionAttention(dim, num_heads, window_size)
    if attention == "twins":
        if odd:
            return SpatialReductionAttention(dim, num_heads, window_size)
        return PartitionAttention(dim, num_heads, 7, "window", rel_pos=False)
    if attention == "cswin":
        return CrossShapedWindowAttention(dim, num_heads, CSWIN_SPLIT_SIZES[min(stage, 3)], full=last_stage)
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")


class FATBlock(nn.Module):
    """One FAT block (paper, "Overall Architecture")::

        X = CPE(X_in) + X_in
        Y = FASA(LN(X)) + X
        Z = ConvFFN(LN(Y)) + ShortCut(Y)

    ``LN`` is GroupNorm(1, C) over the channels-first map. With ``out_dim``
    set, the block ends its stage: its ConvFFN and shortcut downsample by 2
    and widen to ``out_dim``. ``attn`` is FASA unless another token mixer is
    given (the paper's attention comparison); ``cpe=False`` drops the
    conditional positional encoding (an ablation).
    """

    __constants__ = ["use_cpe"]  # for TorchScript, which then compiles only the branch taken

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        window_size: int,
        mlp_kernel_size: int = 5,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
        drop_path: float = 0.0,
        attn: nn.Module | None = None,
        cpe: bool = True,
    ) -> None:
        super().__init__()
        stride = 1 if out_dim is None else 2
        out_dim = dim if out_dim is None else out_dim
        self.use_cpe = cpe
        # x + CPE(x); False once the residual is folded into the CPE's conv (reparameterize)
        self.cpe_residual = True
        self.cpe = DepthwiseConv2d(dim, kernel_size, padding=kernel_size // 2) if cpe else nn.Identity()
        self.norm1 = GroupNorm1(dim)
        self.attn = attn if attn is not None else FASA(dim, num_heads, kernel_size, window_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        # no parameters: names the token mixer's output, a stage's feature point, for FX and hooks
        self.mixer_out = nn.Identity()
        self.norm2 = GroupNorm1(dim)
        self.downsample = DownsampleShortcut(dim, out_dim) if stride == 2 else nn.Identity()
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), out_dim, mlp_kernel_size, stride=stride)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """Token mixing at the block's input resolution: CPE and FASA."""
        if self.use_cpe:  # x + CPE(x), as one convolution
            x = self.cpe(x, residual=self.cpe_residual)
        return self.mixer_out(x + self.drop_path1(self.attn(self.norm1(x))))

    def forward_ffn(self, x: torch.Tensor) -> torch.Tensor:
        """Channel mixing, and the downsampling of a stage's last block."""
        return self.downsample(x) + self.drop_path2(self.ffn(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_ffn(self.forward_mixer(x))

    def reparameterize(self, pointwise_linear: bool = True) -> None:
        """The inference form, in place: the CPE's residual folded into its conv, no drop paths.

        Its parts have their own ``reparameterize`` (see :func:`fatvit.deploy`);
        the block computes ``X = CPE'(X_in)`` with ``CPE' = CPE + identity``.
        """
        if self.use_cpe and self.cpe_residual:
            self.cpe.fold_residual()
            self.cpe_residual = False
        self.drop_path1 = nn.Identity()
        self.drop_path2 = nn.Identity()


class FATStage(nn.Module):
    """``depth`` blocks at one width; the last downsamples when ``out_dim`` is set."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        kernel_size: int,
        window_size: int,
        mlp_kernel_size: int,
        mlp_ratio: float,
        out_dim: int | None,
        drop_path: Sequence[float],
        interaction: str = "bidirectional",
        attention: str = "fasa",
        kv_downsample: str = "refined",
        cpe: bool = True,
        stage: int = 0,
        last_stage: bool = False,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsamples = out_dim is not None
        self.blocks = nn.Sequential(
            *[
                FATBlock(
                    dim,
                    num_heads,
                    kernel_size,
                    window_size,
                    mlp_kernel_size,
                    mlp_ratio,
                    out_dim=out_dim if j == depth - 1 else None,
                    drop_path=drop_path[j],
                    attn=token_mixer(
                        attention,
                        dim,
                        num_heads,
                        kernel_size,
                        window_size,
                        stage,
                        j,
                        last_stage,
                        interaction=interaction,
                        kv_downsample=kv_downsample,
                    ),  # fmt: skip
                    cpe=cpe,
                )
                for j in range(depth)
            ]
        )

    def forward_to_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's feature map: its output, or, in a stage that downsamples, the point before that.

        In a stage whose last block downsamples, that is every block but the
        last, then the last block's token mixer: the deepest point of the stage
        at its own resolution and width. The last stage does not downsample,
        so its feature is its whole output.
        """
        last = len(self.blocks) - 1 if self.downsamples else len(self.blocks)
        for j, block in enumerate(self.blocks):
            # `not torch.jit.is_scripting()` must stay inline: TorchScript skips such branches
            if self.grad_checkpointing and not torch.jit.is_scripting():
                fn = block if j < last else block.forward_mixer
                x = torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)
            elif j < last:
                x = block(x)
            else:
                x = block.forward_mixer(x)
        return x

    def forward_from_feature(self, x: torch.Tensor) -> torch.Tensor:
        """From the stage's feature to its output: the last block's downsampling ConvFFN (if it has one)."""
        if not self.downsamples:
            return x
        block = self.blocks[-1]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(block.forward_ffn, x, use_reentrant=False)
        return block.forward_ffn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_feature(self.forward_to_feature(x))


class FAT(nn.Module):
    """Fully Adaptive Transformer.

    The constructor takes the authors' configuration keys (``embed_dims``,
    ``depths``, ``num_heads``, ``kernel_sizes``, ``window_sizes``,
    ``mlp_kernel_sizes``, ``mlp_ratios``, ``num_classes``) so that
    ``FAT(**manifest["config"], interaction="reference")`` rebuilds one of
    their models, plus the usual timm arguments.

    Args:
        interaction: FASA's combination of its branches: ``"bidirectional"``
            (the paper's equations) or ``"reference"`` (the released code);
            the fusion ablations ``"add"``, ``"cat"``, ``"mul"``.
        kv_downsample: FASA's key/value downsampling: ``"refined"`` (the
            paper), or the ablations ``"pool"``, ``"conv"``, ``"conv_overlap"``.
        cpe: the conditional positional encoding of every block (ablation: False).
        attention: the token mixer: ``"fasa"``, or a mechanism the paper
            compares with (``"maxvit"``, ``"swin"``, ``"pvt"``, ``"twins"``, ``"cswin"``).
        in_chans: input image channels.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        head_init: the classifier's initialisation: ``"trunc_normal"`` (std
            0.02, timm's convention) or ``"default"`` (PyTorch's, as in the
            released code).
        global_pool: ``"avg"`` or ``""`` (no pooling: ``forward_head``
            returns the map).
    """

    #: its state dicts record the FASA interaction, checked on load (see :func:`fatvit.checkpoint.records_interaction`)
    records_interaction = True

    def __init__(
        self,
        embed_dims: Sequence[int] = (32, 80, 160, 256),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 5, 10, 16),
        kernel_sizes: Sequence[int] = (3, 5, 7, 9),
        window_sizes: Sequence[int] = (8, 4, 2, 1),
        mlp_kernel_sizes: Sequence[int] = (5, 5, 5, 5),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        num_classes: int = 1000,
        interaction: str = "bidirectional",
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        kv_downsample: str = "refined",
        cpe: bool = True,
        attention: str = "fasa",
        head_init: str = "trunc_normal",
    ) -> None:
        super().__init__()
        lengths = {
            len(v) for v in (embed_dims, depths, num_heads, kernel_sizes, window_sizes, mlp_kernel_sizes, mlp_ratios)
        }
        if len(lengths) != 1:
            raise ValueError(
                "embed_dims, depths, num_heads, kernel_sizes, window_sizes, "
                "mlp_kernel_sizes and mlp_ratios must have one entry per stage"
            )
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        num_stages = len(depths)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        # recorded in every state dict, checked when one is loaded (see _record_build, _check_build)
        self.interaction = interaction if attention == "fasa" else ""

        self.patch_embed = ConvStem(in_chans, embed_dims[0])
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.feature_info: List[Dict[str, Any]] = []
        start = 0
        for i in range(num_stages):
            self.layers.append(
                FATStage(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    kernel_sizes[i],
                    window_sizes[i],
                    mlp_kernel_sizes[i],
                    mlp_ratios[i],
                    out_dim=embed_dims[i + 1] if i < num_stages - 1 else None,
                    drop_path=dpr[start : start + depths[i]],
                    interaction=interaction,
                    attention=attention,
                    kv_downsample=kv_downsample,
                    cpe=cpe,
                    stage=i,
                    last_stage=i == num_stages - 1,
                )
            )
            start += depths[i]
            # the module whose output is the stage's feature (see FATStage.forward_to_feature)
            point = f"layers.{i}.blocks.{depths[i] - 1}.mixer_out" if i < num_stages - 1 else f"layers.{i}"
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=point))
        self.norm = GroupNorm1(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        if head_init == "trunc_normal":
            self.apply(self._init_weights)
        self.register_state_dict_post_hook(_record_build)
        self.register_load_state_dict_pre_hook(_check_build)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ----- timm model interface -----------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Relative position bias tables of the compared attentions (2-D, so not caught as biases)."""
        return {name for name, _ in self.named_parameters() if name.endswith("rel_pos.table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^layers\.(\d+)" if coarse else [(r"^layers\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.export
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Union[int, List[int]] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the stage feature maps (strides 4, 8, 16, 32).

        A stage's feature is taken after the token mixer (CPE + FASA) of its
        last block, before that block's ConvFFN downsamples; the last stage,
        which does not downsample, gives its whole output (see
        ``FATStage.forward_to_feature``).

        Args:
            indices: take the last n stages if int, all if None, these if a list.
            norm: apply the final norm to the last stage's feature.
            stop_early: stop after the last requested feature.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the features.
        """
        assert output_fmt == "NCHW", "Output format must be NCHW."
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        intermediates: List[torch.Tensor] = []
        last_idx = len(self.layers) - 1
        stop = stop_early or intermediates_only
        done = False  # TorchScript unrolls ModuleList loops and allows no `break` in them
        x = self.patch_embed(x)
        for i, stage in enumerate(self.layers):
            if not done:
                x = stage.forward_to_feature(x)
                if i in take_indices:
                    intermediates.append(self.norm(x) if norm and i == last_idx else x)
                if stop and i >= max_index and (intermediates_only or i < last_idx):
                    done = True
                else:
                    x = stage.forward_from_feature(x)
        if intermediates_only:
            return intermediates
        if not done:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages, norm and head that the given features do not need."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        self.layers = self.layers[: max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    @torch.jit.ignore
    def load_pretrained(self, path: str) -> None:
        """Load the weights of a file (timm's ``pretrained_cfg_overlay=dict(file=path)``): a fatvit checkpoint
        (its model weights), a ``.safetensors`` file or the authors' ``.pth``, read with fatvit's safe reader. The
        file's recorded interaction is checked against this model's; a classifier for another number of
        classes is left at its new values.

        Raises:
            fatvit.checkpoint.CheckpointError: the file cannot be read, or keys other than the classifier's
                do not fit.
        """
        load_finetune(self, path, self.pretrained_cfg.get("architecture", type(self).__name__),
                      [self.pretrained_cfg.get("classifier", "head") + "."])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class InteractionMismatchWarning(UserWarning):
    """Weights that record no FASA interaction are loaded into a model with the paper's (bidirectional) one."""


def _record_build(module: FAT, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any]) -> None:
    """State-dict hook: record the FASA interaction in the state dict's ``_metadata`` (saved by ``torch.save``)."""
    local_metadata.update(interaction_record(module.interaction))


def _check_build(
    module: FAT,
    state_dict: Dict[str, Any],
    prefix: str,
    local_metadata: Dict[str, Any],
    strict: bool,
    missing_keys: List[str],
    unexpected_keys: List[str],
    error_msgs: List[str],
) -> None:
    """Load hook: weights recorded with another interaction are an error; unrecorded ones warn.

    The authors' released weights have exactly our keys but were trained with
    the reference interaction, and record nothing: loading them into a
    bidirectional model works, silently wrong, hence the warning.
    """
    problem = check_interaction(module.interaction, recorded_interaction(local_metadata))
    if problem:
        error_msgs.append(problem)


def check_interaction(model_interaction: str, recorded: Optional[str]) -> str:
    """An error message if weights recorded with ``recorded`` do not fit a model with ``model_interaction``.

    Returns "" when they fit. Weights that record no interaction (the authors'
    files, bare state dicts) loaded into a bidirectional model raise one
    :class:`InteractionMismatchWarning`.
    """
    if not model_interaction:  # not a FASA model
        return ""
    if recorded is None:
        if model_interaction == "bidirectional":
            warnings.warn(
                "these weights record no FASA interaction and are loaded into a model with the paper's "
                "bidirectional one; the authors' released weights were trained with interaction='reference': "
                'build the model with interaction="reference" to use them as trained',
                InteractionMismatchWarning,
                stacklevel=3,
            )
        return ""
    if recorded != model_interaction:
        return (
            f"these weights were trained with interaction={recorded!r}, the model is built with "
            f"interaction={model_interaction!r}: build it with interaction={recorded!r}"
        )
    return ""


# ----- configurations --------------------------------------------------------


@dataclass(frozen=True)
class FATConfig:
    """One FAT size: the constructor arguments, and what the paper reports for it.

    The paper's parameters (M) and FLOPs (G) are kept as printed (``"29"``,
    ``"2.0"``) because their precision matters when comparing with them.

    ``paper_gflops_convention`` says which count the paper's figure matches:
    ``"conv_linear"`` (multiply-accumulates of convolutions and linear layers,
    the convention of the released code) or ``"full"`` (attention matmuls and
    norms included).
    """

    embed_dims: Tuple[int, ...]
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    drop_path_rate: float
    paper_params_m: str
    paper_gflops: str
    paper_top1: float
    paper_gflops_convention: str = "conv_linear"
    kernel_sizes: Tuple[int, ...] = (3, 5, 7, 9)
    window_sizes: Tuple[int, ...] = (8, 4, 2, 1)
    mlp_kernel_sizes: Tuple[int, ...] = (5, 5, 5, 5)
    mlp_ratios: Tuple[float, ...] = (4, 4, 4, 4)
    extra: Dict[str, Any] = field(default_factory=dict)

    def model_args(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`FAT` for this size."""
        args = asdict(self)
        for key in ("paper_params_m", "paper_gflops", "paper_top1", "paper_gflops_convention", "extra"):
            args.pop(key)
        args.update(self.extra)
        return args


MODEL_CONFIGS: Dict[str, FATConfig] = {
    "fat_b0": FATConfig((32, 80, 160, 256), (2, 2, 6, 2), (2, 5, 10, 16), 0.05, "4.5", "0.7", 77.6),
    "fat_b1": FATConfig((48, 96, 192, 384), (2, 2, 6, 2), (3, 6, 12, 24), 0.1, "7.8", "1.2", 80.1),
    "fat_b2": FATConfig((64, 128, 256, 512), (2, 2, 6, 2), (2, 4, 8, 16), 0.1, "13.5", "2.0", 81.9),
    "fat_b3": FATConfig((64, 128, 256, 512), (4, 4, 16, 4), (2, 4, 8, 16), 0.15, "29", "4.4", 83.6),
    # No released configuration for B4 and B5: head width 32, doubling widths, depths fitted to
    # the paper's size. ARCHITECTURE.md's B4 depths (4, 4, 17, 2) give 51.21M (-1.5% from the
    # paper's 52M); moving one block from stage 0 to stage 1 gives 51.58M and 9.29 GMACs.
    "fat_b4": FATConfig((96, 192, 384, 768), (3, 5, 17, 2), (3, 6, 12, 24), 0.3, "52", "9.3", 84.8),
    "fat_b5": FATConfig((128, 256, 512, 1024), (3, 3, 17, 2), (4, 8, 16, 32), 0.4, "88", "15.1", 85.2),
    # the Swin-T layout; the paper's 4.7G is the full count
    "fat_b3_st": FATConfig(
        (96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), 0.15, "29", "4.7", 83.0, paper_gflops_convention="full"
    ),
}


def model_names() -> List[str]:
    """Names of the registered FAT sizes."""
    return list(MODEL_CONFIGS)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.conv1.conv.0",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2306.00396",
        "paper_name": "Lightweight Vision Transformer with Bidirectional Interaction",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in MODEL_CONFIGS})


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """The model weights in what timm read from a file (a ``local-dir:`` folder's ``model.safetensors``, a
    ``state_dict`` overlay): a fatvit checkpoint's or the authors' ``model``/``state_dict`` entry, without the
    prefixes of DistributedDataParallel (``module.``) and ``torch.compile`` (``_orig_mod.``). From a fatvit
    folder, the FASA interaction its ``model.safetensors`` records goes with the weights, to be checked."""
    for entry in ("model", "state_dict"):
        if isinstance(state_dict.get(entry), Mapping):
            state_dict = state_dict[entry]
    out: Dict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            key = key[len(prefix) :] if key.startswith(prefix) else key
        out[key] = value
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("source") == "local-dir" and cfg.get("file"):
        # timm read the folder's model.safetensors: the interaction fatvit recorded in it is checked on load
        record = interaction_record(safetensors_record(Path(cfg["file"]) / "model.safetensors").get("interaction"))
        if record:
            out._metadata = OrderedDict({"": record})  # type: ignore[attr-defined]
    return out


def _check_pretrained_source(name: str, kwargs: Mapping[str, Any]) -> None:
    """With ``pretrained=True``, a source must be given: no FAT weights can be downloaded."""
    cfg = resolve_pretrained_cfg(name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
    if not (cfg.file or cfg.state_dict or cfg.source == "local-dir" or cfg.url or cfg.hf_hub_id):
        raise FatvitError(
            f"{name}: no weights can be downloaded (none are published on a hub); give a file: "
            f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file=PATH)) with a fatvit "
            "checkpoint, a .safetensors file or the authors' .pth, or timm.create_model('local-dir:RUN_FOLDER', "
            "pretrained=True) for a fatvit run folder"
        )


def _create_fat(size: str, pretrained: bool = False, variant: str | None = None, **kwargs: Any) -> FAT:
    """Build FAT size ``size``; ``variant`` names a registered variant of it (its pretrained_cfg)."""
    if pretrained:
        _check_pretrained_source(variant or size, kwargs)
        overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
        if overlay.get("file"):  # read by FAT.load_pretrained (timm resets custom_load for a given file)
            overlay.setdefault("custom_load", True)
            kwargs["pretrained_cfg_overlay"] = overlay
    model_args = MODEL_CONFIGS[size].model_args()
    model_args.update(kwargs)
    return build_model_with_cfg(
        FAT,
        variant or size,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **model_args,
    )


@register_model
def fat_b0(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b0", pretrained, **kwargs)


@register_model
def fat_b1(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b1", pretrained, **kwargs)


@register_model
def fat_b2(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b2", pretrained, **kwargs)


@register_model
def fat_b3(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b3", pretrained, **kwargs)


@register_model
def fat_b4(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b4", pretrained, **kwargs)


@register_model
def fat_b5(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b5", pretrained, **kwargs)


@register_model
def fat_b3_st(pretrained: bool = False, **kwargs: Any) -> FAT:
    return _create_fat("fat_b3_st", pretrained, **kwargs)
