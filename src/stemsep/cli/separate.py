"""``stemsep separate``: split audio files into stems with one or several trained models.

    stemsep separate song.wav other.flac --model htdemucs.ckpt -o separated/
    stemsep separate musdb/test --model a.ckpt --model b.ckpt --weights 1,0,1,1 0,1,0,0 -o out/
    stemsep separate song.m4a --model m.ckpt -o karaoke/ --two-stems vocals --format mp3 --keep-rate
    stemsep separate music/ --models a.ckpt b.ckpt -o stems/ --filename '{folder}/{track}/{stem}.{ext}' --skip-errors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stemsep.cli.common import add_ensemble_options, add_output, weight_rows
from stemsep.inference.separate import (
    BACKENDS,
    BITS,
    CLIP_MODES,
    DEFAULT_FILENAME,
    FORMATS,
    MP3_BITRATES,
    separate_files,
)

HELP = "Separate audio files into stems with trained models."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, help="audio files (WAV, FLAC, AIFF, OGG, Opus, MP3, M4A/AAC, MP4, WebM, ALAC, "
                             "MUSDB18 .stem.mp4; any sample rate and channel count), or folders searched for them")
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--model", action="append", metavar="CKPT",
                        help="stemsep checkpoint (a path or an http(s)://, s3://... URL) or a released model's name "
                             "(`stemsep models list`: htdemucs_ft, ...); repeat for a bag of models")
    models.add_argument("--models", dest="model", action="extend", nargs="+", metavar="CKPT",
                        help="several checkpoints at once: a bag (as in `stemsep bag`)")
    parser.add_argument("--weights", nargs="+", type=weight_rows, metavar="W,W,...",
                        help="per-source weights of each model (one comma-separated list per --model)")
    add_ensemble_options(parser)
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average with the channel-swapped and polarity-inverted "
                             "passes (3x the work; combines with --shifts)")
    add_output(parser, "out", required=True, type=Path, help="output directory")
    parser.add_argument("--shifts", type=int, default=1, help="random-shift averaging passes (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the --shifts offsets: the same seed gives the same stems (default 0)")
    parser.add_argument("--overlap", type=float, default=0.25, help="chunk overlap fraction (default 0.25)")
    parser.add_argument("--segment", type=float, help="chunk length in seconds (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per network call (default: 1 on CPU, where batching does not pay, 8 on GPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--format", choices=FORMATS, default="wav", help="output format (default wav)")
    parser.add_argument("--bits", type=int, choices=BITS, default=24,
                        help="WAV/FLAC bit depth (default 24; 32: float WAV)")
    parser.add_argument("--mp3-bitrate", type=int, choices=MP3_BITRATES, default=320, metavar="KBPS",
                        help="constant MP3 bitrate in kbit/s (default 320)")
    parser.add_argument("--clip-mode", choices=CLIP_MODES, default="rescale",
                        help="rescale: divide a track's stems by max(1, 1.01 * peak) so nothing clips (default); "
                             "clamp: clip at +-0.99; none")
    parser.add_argument("--filename", default=DEFAULT_FILENAME, metavar="TEMPLATE",
                        help="output path under -o, with {track}, {trackext}, {folder} (the input's folder under "
                             "the folder given; for a file given directly, its folder's name), {stem}, {ext} "
                             f"(default {DEFAULT_FILENAME!r})".replace("%", "%%"))
    stems = parser.add_mutually_exclusive_group()
    stems.add_argument("--two-stems", metavar="SOURCE",
                       help="write SOURCE and no_SOURCE (the sum of all other sources), e.g. --two-stems vocals")
    stems.add_argument("--stems", metavar="A,B", help="write only these sources, e.g. --stems drums,vocals")
    parser.add_argument("--keep-rate", action="store_true",
                        help="write stems at the input's sample rate (default: the model's)")
    parser.add_argument("--jobs", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every track, replacing existing outputs (also those of another input)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="report a file that cannot be separated (e.g. does not decode) and go on with the "
                             "others; exit status 1 if any failed")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch: --model is a checkpoint (default); onnxruntime / torchscript: --model "
                             "is a `stemsep export` file (CPU)")


def run(args: argparse.Namespace) -> int:
    result = separate_files(args.inputs, args.out, models=args.model, weights=args.weights, shifts=args.shifts,
                            seed=args.seed, overlap=args.overlap, segment=args.segment,
                            batch_size=args.batch_size,
                            device=args.device, format=args.format, bits=args.bits, mp3_bitrate=args.mp3_bitrate,
                            clip_mode=args.clip_mode, filename=args.filename, two_stems=args.two_stems,
                            stems=args.stems, keep_rate=args.keep_rate, jobs=args.jobs,
                            overwrite=args.overwrite, backend=args.backend, skip_errors=args.skip_errors,
                            ensemble=args.ensemble, pick=args.pick, derive=args.derive, tta=args.tta)
    print(f"separated {result.done} file(s) into {args.out}"
          + (f", skipped {result.skipped} already done" if result.skipped else ""))
    if result.failed:
        print(f"stemsep: {len(result.failed)} file(s) failed:", file=sys.stderr)
        for path, reason in result.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
