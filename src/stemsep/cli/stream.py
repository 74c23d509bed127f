"""``stemsep stream``: separate block by block, as live, and report latency, compute per block and
under-runs (:func:`stemsep.inference.live.stream_audio`).

    stemsep stream song.wav --model hstasnet.ckpt -o streamed/ --realtime
    ffmpeg -i song.mp3 -f f32le -ac 2 -ar 44100 - | \\
        stemsep stream - --rate 44100 --channels 2 --model hstasnet.ckpt --stdout --stems vocals | \\
        ffplay -f f32le -ac 2 -ar 44100 -
    stemsep stream --input-device 1 --output-device 0 --model hstasnet.ckpt --stems vocals
"""

from __future__ import annotations

import argparse
import sys

from stemsep.cli.common import add_output, weight_rows
from stemsep.inference.devices import list_devices
from stemsep.inference.live import RAW_DTYPES, stream_audio
from stemsep.inference.separate import BITS, CLIP_MODES, DEFAULT_FILENAME, FORMATS

HELP = "Separate audio block by block as a live stream (files, raw PCM pipes, sound cards)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", default=[],
                        help="audio files or folders (as for separate), or '-': raw interleaved little-endian PCM "
                             "on stdin (give --rate, --channels, --dtype)")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", action="append", metavar="CKPT",
                        help="stemsep checkpoint (path or URL; int8 from `stemsep quantize`); repeat for a bag")
    models.add_argument("--models", dest="model", action="extend", nargs="+", metavar="CKPT",
                        help="several checkpoints at once: a bag")
    parser.add_argument("--weights", nargs="+", type=weight_rows, metavar="W,W,...",
                        help="per-source weights of each model (one comma-separated list per --model)")
    add_output(parser, "out", help="output directory (one file per stem, laid out as separate does, aligned to "
                                   "the input), or '-' for raw PCM on stdout")
    parser.add_argument("--stdout", dest="out", action="store_const", const="-",
                        help="raw PCM on stdout (= -o -): per frame, sources x channels samples in --dtype")
    parser.add_argument("--rate", metavar="HZ", help="sample rate of raw PCM on stdin (must be the model's)")
    parser.add_argument("--channels", metavar="N", help="channels of raw PCM on stdin, or to capture from "
                                                        "--input-device")
    parser.add_argument("--dtype", default="float32", choices=list(RAW_DTYPES),
                        help="raw PCM sample type on stdin and stdout, little-endian (default float32)")
    parser.add_argument("--block", metavar="N", help="samples per push (default: the network's hop for causal "
                                                     "networks, e.g. 512 for HS-TasNet; else the chunk stride)")
    parser.add_argument("--segment", type=float, help="chunk length in seconds (windowed geometry; default the "
                                                      "model's). With --segment or --overlap a causal network is "
                                                      "streamed windowed too")
    parser.add_argument("--overlap", type=float, help="chunk overlap fraction (windowed geometry; default 0.25)")
    parser.add_argument("--batch-size", type=int, default=None, help="chunks per network call (windowed)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--realtime", action="store_true",
                        help="read one block per block duration of wall-clock time; count blocks whose output "
                             "is late (under-runs)")
    parser.add_argument("--align", action="store_true",
                        help="stdout: drop the first latency samples (the output lines up with the input); "
                             "default: the live signal, latency samples late")
    parser.add_argument("--input-device", metavar="NAME|INDEX", help="capture from a sound card (needs stemsep[live])")
    parser.add_argument("--output-device", metavar="NAME|INDEX",
                        help="play the selected stems (summed) on a sound card (needs stemsep[live])")
    parser.add_argument("--seconds", type=float, help="with --input-device: stop after this long (default: Ctrl-C)")
    parser.add_argument("--list-devices", action=_ListDevices, nargs=0, help="list the sound cards and exit")
    parser.add_argument("--format", choices=FORMATS, default="wav", help="output file format (default wav)")
    parser.add_argument("--bits", type=int, choices=BITS, default=24, help="WAV/FLAC bit depth (32: float WAV)")
    parser.add_argument("--clip-mode", choices=CLIP_MODES, default="rescale", help="as for separate")
    parser.add_argument("--filename", default=DEFAULT_FILENAME, metavar="TEMPLATE",
                        help="output path under -o, as for separate".replace("%", "%%"))
    stems = parser.add_mutually_exclusive_group()
    stems.add_argument("--two-stems", metavar="SOURCE", help="SOURCE and no_SOURCE")
    stems.add_argument("--stems", metavar="A,B", help="only these sources (files, stdout, playback)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs of another input")


class _ListDevices(argparse.Action):
    """``--list-devices``: print the sound cards PortAudio sees and exit, as ``--help`` does (a
    missing PortAudio or sounddevice is a one-line error)."""

    def __call__(self, parser, namespace, values, option_string=None):
        devices = list_devices()
        print("\n".join(map(str, devices)) if devices else "no audio devices found")
        parser.exit()


def run(args: argparse.Namespace) -> int:
    report = stream_audio(args.inputs, models=args.model or [], out=args.out, rate=args.rate,
                          channels=args.channels, dtype=args.dtype, block=args.block, segment=args.segment,
                          overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                          weights=args.weights, realtime=args.realtime, align=args.align,
                          input_device=args.input_device, output_device=args.output_device, seconds=args.seconds,
                          format=args.format, bits=args.bits, clip_mode=args.clip_mode, filename=args.filename,
                          two_stems=args.two_stems, stems=args.stems, overwrite=args.overwrite)
    print(report.summary(), file=sys.stderr)
    return 0
