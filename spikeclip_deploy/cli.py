"""The ``spikeclip-deploy`` command line. Thin: each command builds a config, calls one library
function and prints its summary. Every SpikeClipError becomes a clean one-line error here."""
from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .backends.lava_chip import CHIP_ENV, CHIPS
from .cli_types import FiniteFloatRange
from .errors import SpikeClipError
from .targets import ATTENTION_FORMS, CURRENT_POOL_FORMS, RESIDUAL_FORMS, target_names
from .training.recipe import AUGMENTATIONS, Recipe


class CleanErrors(click.Group):
    """One place where errors become messages. Exit codes: 2 for usage errors (click's own:
    unknown option, bad option value), 1 for user errors (every :class:`SpikeClipError`, and
    operating-system errors such as permission denied, no space left or file too large, which
    name the path), each a one-line ``Error: ...`` with no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpikeClipError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(os_error_message(exc)) from None


def os_error_message(exc: OSError) -> str:
    """``PATH: reason`` for an operating-system error (the path is what the user can fix)."""
    reason = exc.strerror or str(exc)
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(map(str, paths))}: {reason}" if paths else reason


def _command_line() -> str:
    return "spikeclip-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


EPOCHS = click.IntRange(min=0)
POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, 2**32 - 1)
FRACTION = FiniteFloatRange(0, 1, min_open=True, max_open=True)
LEARNING_RATE = FiniteFloatRange(0, min_open=True)

DATA_HELP = ("ImageFolder dir, tarball of one, or torchvision:NAME[:SPLIT]:ROOT (NAME: cifar10, "
             "cifar100, stl10, caltech101, flowers102, oxford_pets, imagenet1k; SPLIT defaults "
             "to the training split, e.g. torchvision:cifar10:test:data/cifar)")
DOWNLOAD = click.option("--download", is_flag=True,
                        help="Let torchvision fetch a torchvision:NAME:ROOT dataset that is not "
                             "under ROOT yet (needs network; off by default).")


@click.group(cls=CleanErrors)
@click.version_option(__version__, "--version", prog_name="spikeclip-deploy")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars and warnings only (bars are off anyway when stdout is "
                   "not a terminal).")
def main(verbose: int, quiet: bool) -> None:
    """Deploy spiking CLIP models to Loihi (Lava) and a CPU reference."""
    from .progress import set_quiet

    set_quiet(quiet)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command("train-teacher")
@click.option("--data", required=True, type=click.Path(), help=DATA_HELP + ".")
@DOWNLOAD
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Tower .safetensors.")
@click.option("--epochs", default=4, show_default=True, type=EPOCHS)
@click.option("--batch-size", default=128, show_default=True, type=POSITIVE)
@click.option("--lr", default=0.05, show_default=True, type=LEARNING_RATE)
@click.option("--width", default=48, show_default=True, type=POSITIVE, help="Tower base width.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--val-fraction", default=0.1, show_default=True, type=FRACTION)
def train_teacher(data: str, download: bool, out: str, epochs: int, batch_size: int, lr: float,
                  width: int, seed: int, val_fraction: float) -> None:
    """Train the offline teacher's image tower against frozen MiniLM prompt embeddings."""
    from .data import load_dataset, stratified_split
    from .training.teacher_tower import TowerRecipe, train_tower

    ds = load_dataset(data, download=download)
    tr, va = stratified_split(ds.labels, val_fraction, seed)
    meta = train_tower(ds.subset(tr), ds.subset(va), Path(out),
                       TowerRecipe(epochs=epochs, batch_size=batch_size, lr=lr, width=width,
                                           seed=seed),
                       _command_line())
    click.echo(f"teacher tower -> {out}: validation zero-shot top-1 {meta['val_zero_shot_top1']:.4f}")


def _load_config_file(ctx: click.Context, _param, value: str | None) -> str | None:
    """``--config FILE`` (JSON or TOML): its keys become the command's defaults, so flags given
    on the command line still override them."""
    if value:
        from .config import read_option_file

        values = read_option_file(Path(value))
        known = {p.name for p in ctx.command.params if p.name != "config"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise click.BadParameter(f"unknown keys {unknown} in {value}; known: "
                                     f"{', '.join(sorted(known))}", param_hint="--config")
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _lr_pair(ctx, param, text: str) -> tuple[float, float]:
    """``START,END`` -> two positive, finite learning rates."""
    values = str(text).split(",")
    if len(values) != 2:
        raise click.BadParameter(f"expected START,END learning rates, got {text!r}")
    start, end = (LEARNING_RATE.convert(v, param, ctx) for v in values)
    return start, end


@main.command("train")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config_file,
              help="JSON or TOML file of option values (keys as the long flags, - or _); "
                   "flags given here override it.")
@click.option("--model", default="spikeclip-tiny", show_default=True,
              help="Registered model config.")
@click.option("--teacher", default="offline-minilm", show_default=True,
              help="offline-minilm[:TOWER.safetensors], clip:DIR (a transformers CLIP) "
                   "or open_clip:DIR (an open_clip model directory).")
@click.option("--data", required=True, type=click.Path(), help=DATA_HELP + ".")
@DOWNLOAD
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint .safetensors.")
@click.option("--resume", type=click.Path(dir_okay=False),
              help="A .train-state.pt to continue (a finished run reopens at the first stage "
                   "given more epochs).")
@click.option("--init-text-from", help="A checkpoint (name in models/ or path) with the same text "
              "encoder config: start from its text encoder and tokenizer (with --text-epochs 0 "
              "the teacher's text tower is needed only for its class weights, cached on disk).")
@click.option("--init-image-from", help="A checkpoint (name in models/ or path) whose image "
              "encoder has the same weights' names and shapes (e.g. a Spikingformer for its "
              "spike_pool rewrite): start from its image encoder, then distil and fine-tune.")
@click.option("--seed", default=Recipe.seed, show_default=True, type=SEED)
@click.option("--val-fraction", default=0.1, show_default=True, type=FRACTION)
@click.option("--text-epochs", default=Recipe.text_epochs, show_default=True, type=EPOCHS)
@click.option("--distill-epochs", default=Recipe.distill_epochs, show_default=True, type=EPOCHS,
              help="Image distillation epochs (0 = the no-pre-training ablation).")
@click.option("--finetune-epochs", default=Recipe.finetune_epochs, show_default=True, type=EPOCHS)
@click.option("--qat-epochs", default=Recipe.qat_epochs, show_default=True, type=EPOCHS,
              help="Quantization-aware fine-tuning epochs on the --hardware grid, after "
                   "fine-tuning; the checkpoint then holds the quantized values.")
@click.option("--batch-size", default=Recipe.batch_size, show_default=True, type=POSITIVE,
              help="Image batch (distillation and fine-tuning).")
@click.option("--text-batch-size", default=Recipe.text_batch_size, show_default=True,
              type=POSITIVE)
@click.option("--distill-lr", default=",".join(map(str, Recipe.distill_lr)), show_default=True,
              callback=_lr_pair, help="Cosine schedule START,END for both distillation stages.")
@click.option("--finetune-lr", default=",".join(map(str, Recipe.finetune_lr)), show_default=True,
              callback=_lr_pair)
@click.option("--qat-lr", default=",".join(map(str, Recipe.qat_lr)), show_default=True,
              callback=_lr_pair)
@click.option("--kl-weight", default=Recipe.kl_weight, show_default=True,
              type=FiniteFloatRange(min=0),
              help="lambda of the KL term (0 = the no-KL ablation).")
@click.option("--kd-temperature", default=Recipe.kd_temperature, show_default=True,
              type=FiniteFloatRange(0, min_open=True),
              help="Temperature tau of every KL term (tau^2 KL of the softened logits).")
@click.option("--logit-distill-weight", default=Recipe.logit_distill_weight, show_default=True,
              type=FiniteFloatRange(min=0),
              help="Add this times the KL of the zero-shot logits to the image distillation "
                   "loss (feature + logit distillation; 0 = features only, the paper's).")
@click.option("--label-smoothing", default=Recipe.label_smoothing, show_default=True,
              type=FiniteFloatRange(0, 1, max_open=True),
              help="Label smoothing of the fine-tuning cross-entropy.")
@click.option("--augment", default=Recipe.augment, show_default=True,
              type=click.Choice(AUGMENTATIONS),
              help="Image augmentation: random flips, or pad-4 random crops too (the teacher "
                   "then runs on each augmented view instead of cached features).")
@click.option("--hardware", default=Recipe.hardware, show_default=True,
              help="Hardware profile (hardware/NAME.json) for --qat-epochs.")
@click.option("--bf16/--no-bf16", default=Recipe.bf16, show_default=True,
              help="bf16 autocast for the image forward pass, where the device supports it "
                   "(quantization-aware epochs run in float32).")
@click.option("--channels-last/--no-channels-last", default=Recipe.channels_last,
              show_default=True, help="Train the image encoder in the channels-last memory "
              "layout (faster convolutions; the checkpoint is saved in the default layout).")
@click.option("--device", default=Recipe.device, show_default=True,
              help="auto (this process's GPU under torchrun, else cpu), cpu, cuda or cuda:N.")
@click.option("--text-datasets", default=",".join(Recipe.text_datasets), show_default=True,
              help="Label sets whose labels x templates form the text-distillation set "
                   "(cifar10, cifar100, stl10, caltech101, flowers102, oxford_pets, imagenet1k).")
@click.option("--max-steps-per-epoch", type=POSITIVE, help="Cap steps per epoch (smoke runs).")
@click.option("--checkpoint-every", default=Recipe.checkpoint_every, show_default=True,
              type=click.IntRange(min=0),
              help="Save the training state every N steps within an epoch too (0: per epoch).")
@click.option("--limit", type=POSITIVE, help="Use only the first N training images (smoke runs).")
def train(model: str, teacher: str, data: str, download: bool, out: str, resume: str | None,
          init_text_from: str | None, init_image_from: str | None, val_fraction: float,
          limit: int | None,
          text_datasets: str, **recipe) -> None:
    """Distil a SpikeCLIP from a teacher, then dual-loss fine-tune it (CE + lambda KL against the
    teacher, text encoder frozen), then
    optionally fine-tune it quantization-aware on a chip's grid (--qat-epochs)."""
    from .training.run import TrainConfig, run_training

    result = run_training(TrainConfig(
        model=model, teacher=teacher, data=Path(data), download=download, out=Path(out),
        resume=Path(resume) if resume else None, val_fraction=val_fraction, limit=limit,
        init_text_from=init_text_from, init_image_from=init_image_from,
        recipe=Recipe(**recipe,
                      text_datasets=tuple(d.strip() for d in text_datasets.split(",") if d.strip())),
        command=_command_line()))
    m = result.meta["metrics"]
    click.echo(f"checkpoint -> {out}\nvalidation zero-shot top-1 (n={m['n_val']}): student "
               f"{m['val_zero_shot_top1_student']:.4f}, teacher {m['val_zero_shot_top1_teacher']:.4f}")


TARGET = click.option("--target", default="loihi", show_default=True,
                      type=click.Choice(target_names()),
                      help="loihi (Lava fixed point), loihi-emu (a loihi export, Lava's "
                           "arithmetic emulated in torch) or cpu (float reference).")
MODEL = click.option("--model", "model", default=None,
                     help="Checkpoint name in models/ or path to a .safetensors [default: shipped].")
CHIP = click.option("--chip", type=click.Choice(CHIPS), default="auto", show_default=True,
                    envvar=CHIP_ENV,
                    help=f"Where Lava runs (the loihi backend): hw = Loihi 2 hardware "
                         f"(Loihi2HwCfg; needs lava-loihi and a reachable board), sim = Lava's "
                         f"bit-accurate simulator, auto = hw when there is one, else sim "
                         f"[env {CHIP_ENV}].")
def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int:
    from .machine import set_threads
    return set_threads(value)


THREADS = click.option("--threads", type=POSITIVE, callback=_set_threads, expose_value=False,
                       help="Threads for torch and the emulator [the cores other work leaves "
                            "idle, measured at start, at least 1].")
PLOTS = click.option("--plots", type=click.Path(file_okay=False),
                     help="Write PNG figures to this folder: firing rate per LIF layer (float "
                          "model vs chip), synaptic ops and energy per layer, a spike raster of "
                          "one image, the per-layer divergence when backends disagree.")


def _model(name: str | None) -> str:
    from .checkpoint import default_checkpoint_name
    return name or default_checkpoint_name()


INIT = click.option("--init", type=click.Choice(["checkpoint", "random"]), default="checkpoint",
                    show_default=True,
                    help="random: a seeded random initialisation (batch norm calibrated) of the "
                         "registered config --model, no checkpoint needed: to check an "
                         "architecture's deployability and cost.")
INIT_SEED = click.option("--seed", default=0, show_default=True, type=SEED,
                         help="Seed of --init random.")


def _check_init(init: str, model: str | None) -> None:
    if init == "random" and model is None:
        raise click.UsageError("--init random needs --model CONFIG (see `spikeclip-deploy models`)")


@main.command("export")
@TARGET
@MODEL
@click.option("--out", type=click.Path(file_okay=False),
              help="Export directory [exports/NAME-TARGET under the working directory].")
@click.option("--force", is_flag=True, help="Replace an existing export directory.")
@click.option("--format", "fmt", type=click.Choice(["nir", "netx"]), default="nir",
              show_default=True,
              help="netx (--target loihi): also write the chip graphs' chains as lava-dl netx "
                   "networks (netx/*.net), every LIF bias on netx's grid (exponent 6).")
@click.option("--residual", type=click.Choice(RESIDUAL_FORMS), default="graded",
              show_default=True,
              help="How a residual stream reaches its readers on chip: graded relays (each "
                   "synapse once; copies kept where they cost no more energy on the chip or "
                   "where relays would not fit a core's input axons), or a synapse copy per "
                   "reader.")
@click.option("--attention", type=click.Choice(ATTENTION_FORMS), default="chip",
              show_default=True,
              help="Where spiking self-attention (Q K^T V) runs: on neuro-cores (product "
                   "neurons and graded sums, exact integer counts), or on the host between chip "
                   "subgraphs.")
@click.option("--current-pool", type=click.Choice(CURRENT_POOL_FORMS), default="chip",
              show_default=True,
              help="Where max pools of currents before a LIF (Spikingformer's tokenizer) run: on "
                   "neuro-cores (levels of graded ReLU neurons, exact integer maxima), or on the "
                   "host between chip subgraphs.")
@INIT
@INIT_SEED
def export_cmd(target: str, model: str | None, out: str | None, force: bool, fmt: str,
               residual: str, attention: str, current_pool: str, init: str, seed: int) -> None:
    """Quantize and lower a checkpoint to NIR (chip) + ONNX (host) with a manifest."""
    from .export import ExportConfig, export_model
    from .report import export_summary

    _check_init(init, model)
    path, manifest = export_model(ExportConfig(model=_model(model), target=target,
                                               out=Path(out) if out else None, force=force,
                                               init=init, seed=seed, format=fmt,
                                               residual=residual, attention=attention,
                                               current_pool=current_pool))
    click.echo(export_summary(path, manifest))


@main.command("run")
@TARGET
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Export directory [exports/<default model>-TARGET under the working "
                   "directory, created if missing].")
@click.option("--image", "images", required=True, multiple=True, type=click.Path(),
              help="A single-frame PNG/JPEG (any size: resized and centre-cropped to the "
                   "model's; animated or multi-frame files are refused); repeat for a batch.")
@click.option("--labels", required=True, help='Comma-separated labels, e.g. "cat,dog,ship".')
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@CHIP
@THREADS
def run_cmd(target: str, export_dir: str | None, images: tuple[str, ...], labels: str,
            as_json: bool, chip: str) -> None:
    """Zero-shot classify images on a backend; prints each prediction and its scores."""
    from .export import default_export
    from .inference import classify_images
    from .report import run_summary

    result = classify_images(target, Path(export_dir) if export_dir else default_export(target),
                             [Path(p) for p in images], labels, chip=chip)
    click.echo(json.dumps(result, indent=1) if as_json else run_summary(result))


EXPORT = click.option("--export", "export_dir", type=click.Path(file_okay=False),
                      help="An existing export of --model (`spikeclip-deploy export`; the "
                           "chip part runs on it as it is) [one is made first, in a temp dir, "
                           "saying so].")
SYSTEM = click.option("--system", default="kapoho-point", show_default=True,
                      help="The board to map onto, a name in the hardware profile's "
                           "cores.systems (loihi2: oheo-gulch, kapoho-point, hala-point).")
ASSUME = click.option("--assume", "assumptions", multiple=True, metavar="KEY=VALUE",
                      help="What if a core held this much: replace one of the hardware "
                           "profile's per-core figures (e.g. input_axons_per_core=65536); "
                           "repeatable. Printed and written in the JSON as an assumption.")
DATA = click.option("--data", type=click.Path(), help=DATA_HELP + ".")
SPLIT = click.option("--split", type=click.Choice(("all", "val", "train")), default="all",
                     show_default=True,
                     help="all: every image of --data; val/train: the stratified validation or "
                          "training split that `train` holds out (--val-fraction, --split-seed).")
VAL_FRACTION = click.option("--val-fraction", default=0.1, show_default=True, type=FRACTION)
SPLIT_SEED = click.option("--split-seed", default=0, show_default=True, type=SEED,
                          help="Seed of the split and of the image order (--limit takes the "
                               "first N of it).")
LIMIT = click.option("--limit", default=None, type=POSITIVE,
                     help="Only the first N images of the split, in a seeded order [all].")
BATCH = click.option("--batch-size", default=64, show_default=True, type=POSITIVE,
                     help="Images per step through every backend (bounds memory; one Lava "
                          "simulation per step).")


def _images(f):
    """The options that choose a verification's images."""
    for option in reversed((DATA, DOWNLOAD, SPLIT, VAL_FRACTION, SPLIT_SEED, LIMIT, BATCH)):
        f = option(f)
    return f


def _data(data: str | None) -> Path:
    """``--data``, which the commands that read images need (it has no default)."""
    if not data:
        raise click.UsageError("Missing option '--data'.")
    return Path(data)


def _verify_config(model: str | None, data: str | None, export: str | None, **options):
    """A verification of ``model`` on ``data`` over the export ``export``, or, without one, an
    export this command makes first."""
    from .export import scratch_export
    from .verify.harness import VerifyConfig

    return VerifyConfig(model=_model(model), data=_data(data),
                        export=Path(export) if export else None, make_export=scratch_export,
                        **options)


def _figures(plots: str | None):
    """``--plots DIR``: what draws a verification's figures into DIR (matplotlib loaded only
    then), or None."""
    if not plots:
        return None
    from .plots import write_plots

    return lambda result, raster: write_plots(result, raster, Path(plots))


def _figures_written(plots: str | None) -> None:
    if plots:
        click.echo(f"figures -> {plots}")


@main.group("verify", invoke_without_command=True)
@TARGET
@MODEL
@_images
@click.option("--backends", default=None,
              help="Backends run on every image, comma-separated: loihi-emu, cpu, loihi (Lava) "
                   "[loihi-emu for a loihi export, cpu for a cpu one].")
@click.option("--lava-limit", default=16, show_default=True, type=click.IntRange(min=0),
              help="Lava confirms the emulator on the first N images, spike for spike "
                   "(loihi exports; 0: no Lava).")
@click.option("--labels", default=None,
              help="Class names in --data's class order: a label set name (cifar10, cifar100, "
                   "stl10, ...), a text file (one per line) or a comma list [the folder names].")
@click.option("--templates", default="cifar", show_default=True,
              help="Prompt templates: a template set name (cifar, imagenet, single) or a text "
                   "file (one template with {} per line).")
@click.option("--shard", default=None,
              help="I/N: evaluate shard I of N (every N-th image) and write its partial result "
                   "to --json, for `verify merge` (torchrun: one shard per rank by itself).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--energy-json", type=click.Path(dir_okay=False),
              help="Also write the energy report, both models with their citations (from the "
                   "emulator's spikes; Lava's without it).")
@EXPORT
@click.option("--noisy-labels", default=1, show_default=True, type=POSITIVE,
              help="Robustness: extend the label set x N with unrelated labels (2, 5, 8).")
@click.option("--synonyms", default=0.0, show_default=True, type=FiniteFloatRange(0, 1),
              help="Robustness: replace this fraction of label names by synonyms (0.2 .. 1).")
@SYSTEM
@ASSUME
@INIT
@INIT_SEED
@CHIP
@THREADS
@PLOTS
@click.pass_context
def verify_cmd(ctx: click.Context, target: str, model: str | None, data: str | None,
               download: bool, split: str, val_fraction: float, split_seed: int,
               limit: int | None, batch_size: int, backends: str | None, lava_limit: int,
               labels: str | None, templates: str, shard: str | None, json_path: str | None,
               energy_json: str | None, export_dir: str | None, noisy_labels: int,
               synonyms: float, system: str, assumptions: tuple[str, ...], init: str,
               seed: int, chip: str, plots: str | None) -> None:
    """Zero-shot accuracy of the float model and the backends on the same images (the emulator
    on all, Lava confirming a sample), agreement, spike divergence, firing rates and energy.
    `verify merge` combines shards."""
    if ctx.invoked_subcommand is not None:
        return
    from .report import energy_summary, verify_summary
    from .verify.harness import verify
    from .verify.selection import Shard

    _check_init(init, model)
    cfg = _verify_config(
        model, data, export_dir, target=target, download=download, split=split,
        val_fraction=val_fraction, seed=split_seed, limit=limit, batch_size=batch_size,
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else None,
        lava_limit=lava_limit, labels=labels, templates=templates,
        shard=Shard.parse(shard) if shard else Shard(), noisy_factor=noisy_labels,
        synonym_fraction=synonyms, system=system, assumptions=assumptions, init=init,
        init_seed=seed, chip=chip)
    result = verify(cfg, Path(json_path) if json_path else None,
                    Path(energy_json) if energy_json else None, _figures(plots))
    if result is not None:
        click.echo(verify_summary(result))
        if "energy" in result:
            click.echo(energy_summary(result["energy"]))
        _figures_written(plots)


@verify_cmd.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--energy-json", type=click.Path(dir_okay=False), help="Write the energy report.")
@PLOTS
def verify_merge_cmd(parts: tuple[str, ...], json_path: str | None,
                     energy_json: str | None, plots: str | None) -> None:
    """Combine the partial results of `verify --shard I/N --json PART` runs (every shard once)
    into the result of one run."""
    from .report import energy_summary, verify_summary
    from .verify.harness import merge

    result = merge([Path(p) for p in parts], Path(json_path) if json_path else None,
                   Path(energy_json) if energy_json else None, _figures(plots))
    click.echo(verify_summary(result))
    if "energy" in result:
        click.echo(energy_summary(result["energy"]))
    _figures_written(plots)


@main.command("energy")
@MODEL
@_images
@click.option("--lava", "lava_images", default=0, type=click.IntRange(min=0),
              help="Count Lava's spikes on the first N images instead of the emulator's on all.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report here.")
@EXPORT
@SYSTEM
@ASSUME
@CHIP
@THREADS
@PLOTS
def energy_cmd(model: str | None, data: str | None, download: bool, split: str,
               val_fraction: float, split_seed: int, limit: int | None, batch_size: int,
               lava_images: int, json_path: str | None, export_dir: str | None, system: str,
               assumptions: tuple[str, ...], chip: str, plots: str | None) -> None:
    """Synaptic operations from the chip's spikes (the emulator's, bit-exact with Lava) and
    energy per inference, per layer and in total, under two models side by side: the paper's
    45 nm compute-only model (E_AC 0.9 pJ per synaptic op, E_MAC 4.6 pJ per MAC; with its 95 %
    interval and the ANN comparison) and the chip's own (Loihi's published energies per
    synaptic op, neuron update and spike message, with the mapper's placement); chip and host
    apart. --json writes both, with their citations."""
    from .report import energy_summary
    from .verify.harness import verify

    cfg = _verify_config(model, data, export_dir, download=download, split=split,
                         val_fraction=val_fraction,
                         seed=split_seed, limit=limit, batch_size=batch_size,
                         backends=() if lava_images else ("loihi-emu",), lava_limit=lava_images,
                         system=system, assumptions=assumptions, chip=chip)
    result = verify(cfg, energy_json=Path(json_path) if json_path else None,
                    figures=_figures(plots))
    if result is not None:
        click.echo(energy_summary(result["energy"]))
        _figures_written(plots)


@main.command("report")
@click.option("--verify-json", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The spiking model's `verify --json` (with its energy report).")
@click.option("--twin-json", type=click.Path(dir_okay=False, exists=True),
              help="The ANN twin's `verify --json` on the same images [without: the SNN graph's "
                   "ANN counterpart, no accuracy].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the table here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write the table as Markdown here.")
def report_cmd(verify_json: str, twin_json: str | None, json_path: str | None,
               markdown_path: str | None) -> None:
    """SNN against its ANN twin (the SpikeCLIP paper's Table 7): parameters, time steps,
    zero-shot accuracy, SOPs and MACs, energy per inference and the energy reduction, from
    measured verify results. Prints the Markdown table."""
    from .comparison import markdown, write_report

    table = write_report(Path(verify_json), Path(twin_json) if twin_json else None,
                         Path(json_path) if json_path else None,
                         Path(markdown_path) if markdown_path else None)
    click.echo(markdown(table), nl=False)


@main.command("map")
@click.argument("export_arg", required=False, metavar="[EXPORT_DIR]",
                type=click.Path(file_okay=False))
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="The --target loihi export to map (or give it as EXPORT_DIR).")
@SYSTEM
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the mapping here.")
@ASSUME
def map_cmd(export_arg: str | None, export_dir: str | None, system: str, json_path: str | None,
            assumptions: tuple[str, ...]) -> None:
    """Map a --target loihi export onto neuro-cores and chips: per layer neurons, synapses,
    synaptic memory, cores and chips; fails naming the layer and resource that do not fit."""
    from .mapping import map_export
    from .report import mapping_summary

    if export_arg and export_dir and Path(export_arg) != Path(export_dir):
        raise click.UsageError(f"EXPORT_DIR {export_arg} and --export {export_dir} differ; "
                               f"give the export once")
    export_dir = export_dir or export_arg
    if not export_dir:
        raise click.UsageError("Missing option '--export' (the export to map).")
    click.echo(mapping_summary(map_export(Path(export_dir), system,
                                          Path(json_path) if json_path else None,
                                          assumptions)))


@main.command("robustness")
@MODEL
@_images
@click.option("--teacher", default="offline-minilm", show_default=True,
              help="The teacher to compare: offline-minilm[:TOWER.safetensors], clip:DIR or "
                   "open_clip:DIR.")
@click.option("--distractors", "distractor_set", default="cifar100", show_default=True,
              help="Label set whose labels join the class names as distractors (cifar100, "
                   "stl10, caltech101, ...).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the table here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write the table as Markdown here.")
@EXPORT
def robustness_cmd(model: str | None, data: str | None, download: bool, split: str,
                   val_fraction: float, split_seed: int, limit: int | None, batch_size: int,
                   teacher: str, distractor_set: str, json_path: str | None,
                   markdown_path: str | None, export_dir: str | None) -> None:
    """The SpikeCLIP paper's robustness protocols (distractor labels, synonyms, one template
    against the 18 CIFAR templates): zero-shot top-1 with 95 % intervals of the student's float
    model, the student on the chip (emulator) and the teacher, on the images verify selects.
    Prints the Markdown table."""
    from .export import scratch_export
    from .verify.robustness_table import RobustnessConfig, markdown, write_table

    table = write_table(RobustnessConfig(
        model=_model(model), data=_data(data), teacher=teacher, split=split,
        val_fraction=val_fraction, seed=split_seed, limit=limit, batch_size=batch_size,
        download=download, distractor_set=distractor_set,
        export=Path(export_dir) if export_dir else None, make_export=scratch_export),
        Path(json_path) if json_path else None, Path(markdown_path) if markdown_path else None)
    click.echo(markdown(table), nl=False)


@main.command("upgrade-checkpoint")
@click.argument("checkpoint")
def upgrade_checkpoint_cmd(checkpoint: str) -> None:
    """Store the input grids of a quantization-aware checkpoint of an earlier version in its
    card (.json), as that version recomputed them at every load; the weights are untouched."""
    from .lowering.qat import upgrade_checkpoint

    card = upgrade_checkpoint(checkpoint)
    click.echo(f"input grids -> {card}" if card else f"{checkpoint} already stores its input "
                                                     f"grids; nothing to do")


@main.command("models")
@click.option("--json", "as_json", is_flag=True)
@click.option("--params", is_flag=True,
              help="Also count each config's parameters (builds it on the meta device: seconds).")
@click.option("--deployability", is_flag=True,
              help="Also say whether each config deploys to Loihi (chip, partitioned or no) and "
                   "the chip's share of the operations at full activity (lowers a random "
                   "initialisation: seconds per config on first use, then cached).")
def models_cmd(as_json: bool, params: bool, deployability: bool) -> None:
    """List registered model configs and the shipped checkpoints with their measured accuracy."""
    from .catalog import catalog
    from .report import models_summary

    found = catalog(params, deployability)
    click.echo(json.dumps(found, indent=1) if as_json else models_summary(found))


if __name__ == "__main__":
    main()
