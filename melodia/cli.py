"""The ``melodia`` command: one entry point, one subcommand per pipeline stage.

``melodia corpus build|stats``, ``melodia tokenize``, ``melodia train``, ``melodia generate``,
``melodia infill``, ``melodia render``, ``melodia serve``, ``melodia evaluate``, ``melodia info``. Each
subcommand's module is imported only when it runs (:func:`stage`), so ``melodia --help`` is fast. A :class:`~melodia.errors.MelodiaError` prints one clear line
(``melodia: error: …``) and exits with status 2, and so does an ``OSError`` (a full disk, a
folder that vanished): it names the file, with no traceback; anything else is a bug and shows a
traceback. A :class:`~melodia.errors.MelodiaWarning` (dense tempo changes merged on reading a
MIDI file) prints one ``melodia: warning: …`` line and the command goes on.

Example:
    $ melodia corpus build music21: data/pop909 --out C
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from .errors import BadInputError, MelodiaError, MelodiaWarning, OutputExistsError
from .values import count
from .version import __version__


def stage(name: str) -> ModuleType:
    """The module ``melodia.<name>`` of a pipeline stage, imported when its command runs.

    The stages are imported here on demand, not at the top of this file: importing api (the
    sampler, numpy), corpus and shards up front would make ``melodia --help`` several times
    slower. Example: ``stage("api").Composer``
    """
    return importlib.import_module(f"melodia.{name}")


def _cmd_corpus_build(args: argparse.Namespace) -> int:
    stage("fileio").check_out_dir(args.out)
    corpus = stage("corpus")
    s = corpus.build_corpus(args.sources, args.out, workers=args.workers, progress=not args.quiet,
                     quantize=args.quantize, style=args.style)
    print(f"{s.out}: {s.pieces} pieces ({s.processed_units} files processed, {s.reused_units} unchanged), "
          f"{s.duplicates} duplicates dropped, {s.skipped} skipped (see {s.out}/report.json)")
    if s.metre_note:
        print(f"metre: {s.metre_note}")
    if s.read_note:
        print(f"tempo: {s.read_note}")
    if not args.quiet:
        print(corpus.format_stats(corpus.corpus_stats(s.out)))
    if args.strict and s.skipped:
        print(f"melodia: error: --strict: {s.skipped} file(s) skipped, listed in {s.out}/report.json", file=sys.stderr)
        return 1
    return 0


def _cmd_corpus_stats(args: argparse.Namespace) -> int:
    corpus = stage("corpus")
    st = corpus.corpus_stats(args.corpus)
    print(json.dumps(st, indent=1) if args.json else corpus.format_stats(st))
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    if args.corpus:
        stage("fileio").check_out_dir(args.out)
        s = stage("shards").tokenize_corpus(args.corpus, args.out, vocab_size=args.vocab, max_len=args.max_len,
                            workers=args.workers, progress=not args.quiet, tokenizer=args.tokenizer,
                            key_normalise=args.key_normalise, chunk_labels=args.chunk_labels,
                            styles=args.style or None)
        print(f"{s.out}: vocabulary {s.vocab_size}, {s.chunks} chunks, tokens "
              + ", ".join(f"{k} {v:,}" for k, v in s.tokens.items())
              + (f", {s.truncated_bars} over-long bars truncated" if s.truncated_bars else "")
              + (f", {len(s.failed)} pieces failed" if s.failed else ""))
    elif not args.check:
        raise MelodiaError("tokenize: give --corpus DIR (and/or --check)")
    if args.check:
        rt = stage("shards").check_roundtrip(args.out, workers=args.workers, progress=not args.quiet)
        lost = ", ".join(f"{k}: {v}" for k, v in rt.lost_by_reason.items() if v) or "none"
        print(f"round trip: {rt.kept:,} of {rt.notes:,} notes of {rt.pieces} train pieces come back "
              f"({rt.ratio:.2%}); lost: {lost}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    label = args.mood or next(iter(_tag_list(args)), None)  # the file name says what was asked for
    stems, formats = _output_plan(args, args.name or (f"{label or 'any'}-{args.seed}" if args.seed is not None
                                                      else (label or "piece")))
    instruments = [x.strip() for x in args.instruments.split(",")] if args.instruments else None
    if args.continue_from:
        if args.meter is not None:
            raise BadInputError("--meter cannot be used with --continue: the clip brings its own meter")
        if args.form is not None or args.vary or args.repeat is not None:
            raise BadInputError("--form, --repeat and --vary apply to a new piece, not to --continue")
    elif args.vary and args.form is None:
        raise BadInputError("--vary applies to a form: give --form too, e.g. --form AABA --vary")
    elif args.repeat is not None and args.form is None:
        raise BadInputError("--repeat applies to a form: give --form too, e.g. --form AABA --repeat exact")
    elif args.new_only:
        raise BadInputError("--new-only applies to --continue: give --continue CLIP.mid too")
    if args.continue_from:  # a missing, unreadable or broken clip fails before the model loads;
        stage("midifile").load_score(args.continue_from, notes=[])  # what reading it changes: piece notes
    composer = _load_composer(args)
    mood, tags = _mood_and_tags(composer, args)
    common = dict(mood=mood, tags=tags, key=args.key, instruments=instruments, n=args.n, seed=args.seed,
                  temperature=args.temperature, guidance=args.guidance, in_key=not args.chromatic,
                  leading_tone=args.leading_tone, dynamics=args.dynamics, style=args.style)
    if args.continue_from:
        pieces = composer.continue_from(args.continue_from, bars=args.bars, context_bars=args.context_bars,
                                        include_prompt=not args.new_only, chords=args.chords, **common)
    else:
        pieces = composer.generate(bars=args.bars, tempo=args.tempo, meter=args.meter or "4/4",
                                   chords=args.chords, form=args.form, vary=args.vary, repeat=args.repeat,
                                   **common)
    _write_pieces(args, pieces, stems, formats)
    return 0


def _tag_list(args: argparse.Namespace) -> list[str]:
    """The words of every ``--tag`` (repeated, or comma-separated), as typed."""
    return [t.strip() for flag in args.tags or () for t in flag.split(",") if t.strip()]


def _mood_and_tags(composer, args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``--mood`` and ``--tag`` as the model knows them (``Composer.mood_or_tag``): a --mood that
    is one of the model's tags rather than one of its moods is used as a tag, and stderr says so."""
    mood, tags = composer.mood_or_tag(args.mood, _tag_list(args))
    if args.mood is not None and mood is None:
        print(f"melodia: {args.mood.strip()} is a tag of this model, not a mood: generating with "
              f"{'tag' if len(tags) == 1 else 'tags'} {', '.join(tags)} and mood any", file=sys.stderr)
    return mood, tags


def _output_plan(args: argparse.Namespace, stem: str) -> tuple[list[str], list[str]]:
    """File stems and extensions a command will write; an existing file is an error before
    any work (unless ``--force``), and so is an ``--out`` that cannot be a folder to write into
    (a file in its place, no write permission) and, with ``--wav``, a ``--soundfont`` that is
    missing or no SoundFont (without ``--wav``, a ``--soundfont`` at all)."""
    stage("fileio").check_out_dir(args.out)
    formats = [".mid"] + [ext for flag, ext in (("wav", ".wav"), ("musicxml", ".musicxml"), ("png", ".png"))
                          if getattr(args, flag)]
    stems = [stem] if args.n == 1 else [f"{stem}-{i + 1}" for i in range(args.n)]
    existing = [str(Path(args.out) / f"{s}{ext}") for s in stems for ext in formats
                if (Path(args.out) / f"{s}{ext}").exists()]
    if existing and not args.force:  # check before minutes of work, not after
        raise OutputExistsError(f"{existing[0]}: already exists (use --force to overwrite)")
    if args.soundfont and not args.wav:  # a SoundFont only plays the WAV: asking for one without it is a slip
        raise BadInputError(f"--soundfont {args.soundfont}: a SoundFont is for the WAV; add --wav")
    if args.wav:  # a missing or broken --soundfont fails now, not after the piece is written
        stage("render").check_soundfont(args.soundfont)
    return stems, formats


def _load_composer(args: argparse.Namespace):
    # threads: the API's one policy (api.set_threads; default 1, 0 = torch's choice)
    return stage("api").Composer.load(args.model, device=args.device, threads=args.threads)


def _write_pieces(args: argparse.Namespace, pieces: list, stems: list[str], formats: list[str]) -> None:
    """Write each piece in each format (atomic writes), list the files on stdout and describe
    each piece on stderr."""
    out = Path(args.out)
    for piece, s in zip(pieces, stems):
        for ext in formats:
            path = out / f"{s}{ext}"
            piece.save(path, force=True, soundfont=args.soundfont)
            print(path)
        # what was written, for a musician who let melodia pick (stdout stays the file list)
        chords = [c.name for c in piece.chords]
        shown = " ".join(chords[:16]) + (" …" if len(chords) > 16 else "")
        print(f"melodia: {s}: {piece.mood or 'any'}, {piece.key or 'no key'}, {piece.tempo:g} qpm, "
              f"{piece.meter}, {count(piece.bars, 'bar')}, {count(len(piece), 'note')}"
              + (f"; chords: {shown}" if chords else ""), file=sys.stderr)
    for note in dict.fromkeys(w for piece in pieces for w in piece.warnings):  # each once
        print(f"melodia: note: {note}", file=sys.stderr)


def _cmd_infill(args: argparse.Namespace) -> int:
    stage("fileio").check_out_dir(args.out)  # before the clip is read and the model loads
    first, last = stage("api").parse_bar_span(args.bars)
    stage("midifile").load_score(args.clip, notes=[])  # a missing or broken clip fails before the model loads
    stems, formats = _output_plan(args, args.name or f"{Path(args.clip).stem}-bars{first}-{last}"
                                  + (f"-{args.seed}" if args.seed is not None else ""))
    instruments = [x.strip() for x in args.instruments.split(",")] if args.instruments else None
    composer = _load_composer(args)
    mood, tags = _mood_and_tags(composer, args)
    pieces = composer.infill(args.clip, bars=(first, last), mood=mood, tags=tags, key=args.key, chords=args.chords,
                             instruments=instruments, n=args.n, seed=args.seed, temperature=args.temperature,
                             guidance=args.guidance, context_bars=args.context_bars, in_key=not args.chromatic,
                             leading_tone=args.leading_tone, dynamics=args.dynamics, style=args.style)
    _write_pieces(args, pieces, stems, formats)
    return 0


#: GenerationConfig fields the API takes that ``generate`` and ``infill`` have no flag for, and
#: why (tests/test_parameters.py checks every other field has one). The flags below restate
#: GenerationConfig's defaults and limits (importing melodia.generate would slow ``melodia
#: --help``); the same test checks they agree.
LEFT_OUT = {
    "valence": "a point on the mood plane is for programs (API, server); at a shell --mood names the mood",
    "arousal": "as valence",
    "top_k": "a sampling cut-off for experiments; --temperature and --guidance are the sampling knobs here",
    "top_p": "as top_k",
}
#: and those ``infill`` alone leaves out
INFILL_LEFT_OUT = {
    "tempo": "describes a prompt of notes (API, server); the MIDI clip infill reads brings its own",
    "meter": "as tempo",
}
#: flags whose name is not the field's: field -> flag destination (``--chromatic`` is ``in_key=False``)
FLAG_OF = {"in_key": "chromatic"}
#: ``--tag`` of generate and infill
TAG_HELP = ("a tag of a fine-tuned model (its corpus's sub-folder names and labels.csv tags; `melodia info "
            "--model DIR` lists them); repeat it or give several comma-separated: --tag jazzy,film")
#: ``--style`` of generate and infill (the model's styles: ``melodia info``, Composer.styles)
STYLE_HELP = ("pop, folk, chorale, classical, or a style the model was fine-tuned on (default: pop where the "
              "model knows it, else none; a model trained before styles, like the shipped one today, takes none)")


def _add_generate_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("--mood", help="happy, tense, sad, calm (or an alias such as joyful, dark, "
                                  "melancholic, peaceful; or a mood your fine-tuned model knows; a tag of "
                                  "the model that is none of its moods is used as --tag, with mood any)")
    g.add_argument("--tag", dest="tags", action="append", metavar="TAG", help=TAG_HELP)
    g.add_argument("--bars", type=int, default=8, help="bars to write, 1-64 (default 8)")
    g.add_argument("--key", help='e.g. "D minor", "F#", "Bbm" (default: one that suits the mood)')
    g.add_argument("--style", help=STYLE_HELP)
    g.add_argument("--tempo", type=float, help="quarter notes per minute (default: the mood's range)")
    g.add_argument("--meter", help='time signature, e.g. 3/4 (default 4/4)')
    g.add_argument("--instruments", help="comma-separated, e.g. piano,strings,bass: the model writes its own "
                                         "parts (the shipped model's: melody, counter-melody and piano "
                                         "accompaniment, GM programs 0, 1, 2; the default) and each instrument "
                                         "gets one: a bass a bass line from the accompaniment, the first other "
                                         "the melody, the next that plays chords the accompaniment, the next "
                                         "the counter-melody; what cannot be honoured is a 'melodia: note:'")
    g.add_argument("--n", type=int, default=1, help="variations, 1-16 (default 1)")
    g.add_argument("--seed", type=int, help="same seed, model and machine → same notes")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    g.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale: 1 = off, above 1 weighs the mood and key more (default 1; for "
                        "the shipped model 1.5 followed the minor moods less: tense 64%% vs 83%%, see its card)")
    g.add_argument("--chromatic", action="store_true",
                   help="let notes leave the key's scale (by default pitched notes stay in the key: "
                        "major, or natural minor)")
    g.add_argument("--leading-tone", action="store_true",
                   help="in a minor key, also allow the raised 7th (G# in A minor, for a major V chord)")
    g.add_argument("--chords", metavar="PROGRESSION",
                   help='chords to write, one a bar and cycled: "Am F C G"; "Am:2 F:2 C G" gives a chord '
                        "2 beats (C, Cm, C7, Cmaj7, Cm7, Cdim, Csus4, C/E ...); with no --key the key "
                        "follows from them (with --continue: the new bars' chords, in the clip's key); "
                        "default: the model writes its own progression")
    g.add_argument("--form", metavar="LETTERS",
                   help="sections, e.g. AABA or ABAC (up to 8 letters): --bars split equally; a letter that "
                        "returns comes back as --repeat says, a new letter continues. With a form, "
                        '--chords apply to every section, or per letter: "A: C G Am F; B: F G Em Am"')
    g.add_argument("--repeat", choices=["sections", "exact"], default=None,
                   help="with --form, how a letter returns: sections (each section opens on its letter's "
                        "section token and the model writes it; a model trained with sections), exact (a copy "
                        "of its first section's notes). Default: sections when the model has section tokens "
                        "and no --vary, else exact (the shipped model has none)")
    g.add_argument("--vary", action="store_true",
                   help="with --form (--repeat exact): write the last bar of each returning section anew")
    g.add_argument("--dynamics", choices=["mood", "flat"], default="mood",
                   help="mood (default): velocities follow the mood (happy/tense louder, sad/calm softer) "
                        "with a swell over each 4-bar phrase; flat: the model's own velocities")
    g.add_argument("--continue", dest="continue_from", metavar="CLIP.mid",
                   help="continue this MIDI clip (its last --context-bars bars are the context)")
    g.add_argument("--context-bars", type=int, default=4, help="bars of the clip the model sees (default 4)")
    g.add_argument("--new-only", action="store_true", help="with --continue: write only the new bars")
    _add_output_arguments(g, "MOOD-SEED")
    g.set_defaults(func=_cmd_generate)


def _add_output_arguments(g: argparse.ArgumentParser, default_name: str) -> None:
    """The model, output and machine options ``generate`` and ``infill`` share."""
    g.add_argument("--model", help="model directory (default: the shipped model)")
    g.add_argument("--out", required=True, help="folder to write into")
    g.add_argument("--name", help=f"file name stem (default {default_name})")
    g.add_argument("--wav", action="store_true", help="also write audio (SoundFont synthesis)")
    g.add_argument("--musicxml", action="store_true", help="also write notation (MusicXML)")
    g.add_argument("--png", action="store_true", help="also write a piano-roll picture")
    g.add_argument("--soundfont", help="a .sf2 SoundFont for --wav (default: pretty_midi's TimGM6mb)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads for sampling (default 1; 0 = torch's choice)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")


def _add_infill_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("clip", metavar="CLIP.mid", help="the MIDI clip to rewrite bars of")
    g.add_argument("--bars", required=True, metavar="FIRST-LAST",
                   help="the bars to rewrite, counted from 1: 5-8, or 6 for one bar")
    g.add_argument("--mood", help="mood of the new bars (default: none; the model follows the clip; a tag of "
                                  "the model that is none of its moods is used as --tag)")
    g.add_argument("--tag", dest="tags", action="append", metavar="TAG", help=TAG_HELP)
    g.add_argument("--key", help="key of the new bars (default: the clip's own, estimated from its notes)")
    g.add_argument("--style", help=STYLE_HELP)
    g.add_argument("--chords", metavar="PROGRESSION",
                   help='chords for the rewritten bars, one a bar and cycled from the first: "F G"; '
                        '"Am:2 F:2" gives a chord 2 beats (default: the model chooses)')
    g.add_argument("--instruments", help="comma-separated instruments of the new notes, each given a part as "
                                         "for generate (default: the clip's)")
    g.add_argument("--context-bars", type=int, default=4,
                   help="bars on each side of the span the model reads (default 4)")
    g.add_argument("--n", type=int, default=1, help="variations, 1-16 (default 1)")
    g.add_argument("--seed", type=int, help="same seed, model and machine → same notes")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    g.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1 = off)")
    g.add_argument("--chromatic", action="store_true", help="let new notes leave the key's scale")
    g.add_argument("--leading-tone", action="store_true", help="in a minor key, also allow the raised 7th")
    g.add_argument("--dynamics", choices=["mood", "flat"], default="mood",
                   help="mood (default): with --mood, the new notes' loudness follows it; flat: the model's own")
    _add_output_arguments(g, "CLIP-barsFIRST-LAST[-SEED]")
    g.set_defaults(func=_cmd_infill)


def _optional(module: str, adder: str, runner: str) -> tuple[Callable | None, Callable | None]:
    """A stage's CLI hooks, if that stage is installed in this build."""
    try:
        mod = stage(module)
    except ModuleNotFoundError as e:
        if e.name != f"melodia.{module}":
            raise  # a broken import inside the stage is a bug to see, not a missing command
        return None, None
    return getattr(mod, adder, None), getattr(mod, runner, None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argparse tree of ``melodia``. Example: ``build_parser().parse_args(["info"])``.

    ``command`` (the word :func:`main` is about to run) leaves the other stages' modules
    unimported: their subcommands get a name and help but no arguments, so that start-up stays
    fast (docs/benchmarks.md, "CLI start").
    """
    p = argparse.ArgumentParser(prog="melodia", description="Mood-conditioned symbolic music composition.")
    p.add_argument("--version", action="version", version=f"melodia {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("corpus", help="build or inspect a corpus of MIDI pieces")
    csub = c.add_subparsers(dest="corpus_command", metavar="ACTION")
    b = csub.add_parser("build", help="scan sources, label moods, dedupe, split → manifest.jsonl")
    b.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a folder of .mid files, a POP909 folder, or 'music21:' for music21's bundled corpus")
    b.add_argument("--out", required=True, help="corpus folder to write (re-runs update it)")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    b.add_argument("--quantize", action="store_true",
                   help="snap the onsets of MIDI files found off the sixteenth grid (played, unquantised "
                        "performances) to sixteenths and eighth-note triplets; without it they are "
                        "kept as played and listed in report.json")
    b.add_argument("--style", metavar="NAME",
                   help="the style of the MIDI folders and files given (their pieces' STYLE_NAME control token; "
                        "a model trained on them takes --style NAME). Default: none, no style token. "
                        "POP909 is always 'pop', music21: 'folk', 'chorale' (Bach) or 'classical'")
    b.add_argument("--quiet", action="store_true", help="no progress bar or stats")
    b.set_defaults(func=_cmd_corpus_build)
    s = csub.add_parser("stats", help="print the mood, key, tempo and source distribution")
    s.add_argument("corpus", help="corpus folder")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_corpus_stats)
    c.set_defaults(func=lambda a: (c.print_help(), 2)[1])

    t = sub.add_parser("tokenize", help="corpus → BPE tokenizer + uint16 training shards")
    t.add_argument("--corpus", help="corpus folder (from `melodia corpus build`)")
    t.add_argument("--out", required=True, help="shards folder to write")
    t.add_argument("--vocab", type=int, default=4000, help="BPE vocabulary size (default 4000)")
    t.add_argument("--max-len", type=int, default=1024, help="longest chunk in tokens (default 1024)")
    t.add_argument("--tokenizer", help="reuse this tokenizer.json instead of training BPE (fine-tuning)")
    t.add_argument("--key-normalise", action=argparse.BooleanOptionalAction, default=None,
                   help="write every piece with its tonic on C (C major / C minor; generation moves the notes "
                        "to the key asked for). Default: on for a new tokenizer, the --tokenizer's own setting")
    t.add_argument("--chunk-labels", action=argparse.BooleanOptionalAction, default=False,
                   help="label each chunk by its own notes: the estimated mood where the piece has no mood "
                        "label, KEY_any where the notes read in the other mode than the piece's key "
                        "(default: the piece's mood and key on every chunk)")
    t.add_argument("--check", action="store_true",
                   help="decode every train piece and print the share of notes that come back")
    t.add_argument("--style", action="append", metavar="NAME",
                   help="only the corpus's pieces of this style (repeatable; e.g. pop: a fine-tune's shards "
                        "after pretraining on the whole corpus); splits stay the corpus's")
    t.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_tokenize)

    _add_generate_arguments(sub.add_parser("generate", help="compose new music in a mood → .mid (+ .wav …)"))
    _add_infill_arguments(sub.add_parser(
        "infill", help="rewrite some bars of a MIDI clip, keeping the rest → .mid (+ .wav …)",
        description="Rewrite bars of a MIDI clip in place: every note that starts outside --bars stays as it "
                    "was; the model writes the bars between, reading the bars on both sides.",
        epilog='example: melodia infill clip.mid --bars 5-8 --mood sad --seed 1 --out out'))

    for name, module, adder, runner, helptext in (
        ("train", "train", "add_train_arguments", "cli_train", "pretrain or fine-tune a model"),
        ("serve", "serve", "add_serve_arguments", "cli_serve", "local HTTP server for DAWs and scripts"),
        ("render", "render", "add_render_arguments", "cli_render", "MIDI → .wav / .png / .musicxml"),
        ("evaluate", "evaluate", "add_evaluate_arguments", "cli_evaluate", "metrics and a report for a model"),
    ):
        if command is not None and command != name:
            sub.add_parser(name, help=helptext)  # not the one being run: listed, not imported
            continue
        add, run = _optional(module, adder, runner)
        if add and run:
            sp = sub.add_parser(name, help=helptext)
            add(sp)
            sp.set_defaults(func=lambda a, run=run: run(a) or 0)

    i = sub.add_parser("info", help="versions and where things are; with --model, what a model can be asked for")
    i.add_argument("--model", metavar="DIR", help="also list this model directory's moods, tags, styles and meters "
                                                  "(e.g. a fine-tuning run's RUN/model)")
    i.set_defaults(func=_cmd_info)
    return p


def _cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md  # slow to import (docs/benchmarks.md, "CLI start"); only `info` needs it

    print(f"melodia {__version__}")
    for pkg in ("torch", "transformers", "miditok", "symusic", "music21", "pretty_midi"):
        try:
            print(f"  {pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"  {pkg} not installed")
    default = Path(__file__).parent / "weights" / "default"
    print(f"default model: {default if (default / 'config.json').exists() else 'not built (scripts/train_default.py)'}")
    if args.model:
        info = stage("api").Composer.load(args.model, device="cpu").info()
        size = f", {info['parameters'] / 1e6:.2f}M parameters" if info.get("parameters") else ""
        print(f"model {args.model}: {info.get('preset') or 'unknown'} preset{size}")
        for name in ("moods", "tags", "styles", "meters"):  # what --mood, --tag, --style and --meter take
            print(f"  {name}: {', '.join(info.get(name) or ()) or 'none'}")
    return 0


def _warning_printer(show: Callable) -> Callable:
    """``warnings.showwarning`` that prints a MelodiaWarning as one ``melodia: warning:`` line
    and hands any other warning to ``show``."""
    def show_warning(message, category, *args, **kwargs) -> None:
        if issubclass(category, MelodiaWarning):
            print(f"melodia: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)
    return show_warning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``melodia`` command. Example: ``main(["corpus", "stats", "C"])``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words = [w for w in argv if not w.startswith("-")]
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # a MelodiaWarning is one "melodia: warning:" line, each once
            warnings.simplefilter("default", MelodiaWarning)
            warnings.showwarning = _warning_printer(warnings.showwarning)
            return int(args.func(args) or 0)
    except MelodiaError as e:
        print(f"melodia: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # what the system refused (a full disk, a vanished folder): no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"melodia: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melodia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
