"""A prompt as the model reads it: continuing a clip and filling in some of its bars.

:class:`PromptMixin` holds :class:`melodia.generate.sampler.Generator`'s continuation and
infilling (one class split over two files: this one reads prompts, the sampler samples).

Example: ``out = gen.continue_from("clip.mid", bars=4, cfg=GenerationConfig(mood="tense"))``
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError
from ..midifile import load_score
from ..music.keys import estimate_clip_key
from ..music.meter import bar_starts, ticks_per_bar, time_signatures
from ..music.metre_detect import declared_metre, metre_correction, set_metre
from ..sections import insert_sections
from ..tokenizer import (
    chord_positions,
    encode_bars,
    insert_chords,
    pitch_shift_table,
    restate_tempo,
    split_bars,
    transpose_score,
)
from .arrange import place_notes, replace_span
from .config import MAX_BARS, GenerationConfig, check_context_bars, key_name, with_overrides
from .grammar import DUR, TEMPO, TSIG, Grammar, State

if TYPE_CHECKING:  # pragma: no cover
    import symusic


def read_clip(score: Any, what: str = "the clip") -> tuple["symusic.Score", list[str]]:
    """A clip loaded (:func:`melodia.midifile.load_score`) and read in the metre its notes
    show: a declared 1/4 or 2/4 the notes clearly contradict
    (:func:`melodia.music.metre_detect.metre_correction`) becomes their 3/4 or 4/4, the music
    before the first bar line a short first bar (every note stays where it is). Returns the
    score and the note that says so ([] when the declaration stands).

    Example: ``score, notes = read_clip("pop909_001.mid")  # ['the clip declares 2/4 …']``
    """
    clip = load_score(score)
    est = metre_correction(clip) if clip.note_num() else None
    if est is None:
        return clip, []
    num, den = declared_metre(clip)
    pickup = f", after a pickup bar of {est.phase}/{est.denominator}" if est.phase else ""
    return set_metre(clip, est.numerator, est.denominator, pickup=est.phase), [
        f"{what} declares {num}/{den} but its notes are in {est.name}: read as {est.name}{pickup}"]


class PromptMixin:
    """Continuation (:meth:`continue_from`) and infilling (:meth:`infill`) for the Generator.

    Example: ``gen.infill("clip.mid", 5, 8, cfg=GenerationConfig(seed=1))``
    """

    def _read_prompt(self, score: Any, cfg: GenerationConfig, what: str) -> tuple:
        """A prompt as the model reads it: ``(orig, cfg, shift, meter, bars, tempos)`` where
        ``orig`` is the loaded score, ``cfg`` has the prompt's own key where none was given,
        ``shift`` the semitones the key-normalised notes move back by, ``meter`` the prompt's
        last meter, ``bars`` one array of REMI base ids per bar of the prompt (chords and sections
        inserted, trailing bars its last notes sound in added) and ``tempos[k]`` the Tempo id in force
        when bar ``k`` starts (None before any). The clip is read by :func:`read_clip` (its
        metre) and its key estimated by :func:`melodia.music.keys.estimate_clip_key`; what
        they had to say is in ``self.notes``."""
        orig, self.notes = read_clip(score)
        if orig.note_num() == 0:
            raise BadInputError(f"{what}: the clip has no notes")
        remi = self.tok.remi
        ts = sorted(orig.time_signatures, key=lambda t: t.time)
        meter = (ts[-1].numerator, ts[-1].denominator) if ts else (4, 4)
        if f"{meter[0]}/{meter[1]}" not in self.vocab.timesigs:
            raise BadInputError(f"the clip ends in {meter[0]}/{meter[1]}, which this model cannot write")
        pre = orig.copy()
        if self.tempo_unknown is not None:  # the model reads a prompt at 120 qpm as at its neighbour
            for t in pre.tempos:  # (before MidiTok rounds 120 to the bin's own 122.99)
                t.qpm = self.vocab.tempos[self.tempo_for_model(t.qpm)]
        pre = remi.preprocess_score(pre)
        seq = remi.encode(pre, encode_ids=False, no_preprocess_score=True)
        if isinstance(seq, list):
            seq = seq[0]
        base = np.asarray(seq.ids, dtype=np.int64)
        if cfg.key is None:  # the prompt's own key, not the mood's default one

            try:
                cfg = replace(cfg, key=estimate_clip_key(orig).name)
            except BadInputError:  # a drums-only prompt has no key
                pass
        # a key-normalised model reads the prompt with the key's tonic on C; its notes move back
        shift = -self.tok.model_shift(cfg.key)
        if shift:

            base = pitch_shift_table(remi, -shift)[base]
        if self.tok.has_chords:  # the prompt's chords (its markers, else recognised), as training read them

            base = insert_chords(self.tok, base, chord_positions(pre, remi, -shift))
        bar_id = remi.vocab["Bar_None"]
        # its section markers as section tokens after their Bars (a model with sections; else none)
        base = insert_sections(base, self.tok.section_positions(orig), bar_id)
        all_bars = split_bars(base, bar_id)
        n_orig = len(bar_starts(orig))
        ts_id = remi.vocab[f"TimeSig_{meter[0]}/{meter[1]}"]
        while len(all_bars) < n_orig:  # trailing bars the prompt's last notes still sound in
            all_bars.append(np.asarray([bar_id, ts_id], dtype=np.int64))
        tempo_ids = {i for t, i in remi.vocab.items() if t.startswith("Tempo_")}
        tempos, tempo = [], None
        for b in all_bars:
            tempos.append(tempo)
            for i in b:
                if int(i) in tempo_ids:
                    tempo = int(i)
        return orig, cfg, shift, meter, all_bars, tempos

    def _encode_context(self, bars: list, tempo: int | None) -> list[int]:
        """Context bars → model ids (BPE per bar), the tempo in force restated in the first."""
        bars = list(bars)
        if bars and tempo is not None:
            bars[0] = restate_tempo(bars[0], tempo, self.tok.remi)
        return [i for b in encode_bars(self.tok, bars) for i in b]

    def _new_notes(self, ids: list[int], n_ctx: int, shift: int) -> tuple["symusic.Score", int | None, list]:
        """Decode ``ids`` (context bars, then new ones; no controls), the notes moved back by
        ``shift``: ``(score, tick where bar n_ctx starts or None, [(tick, chord name)] of the new
        bars' chords)``."""
        dec = self.tok.decode(ids)  # no controls: no key move; ``shift`` below
        if shift:
            dec = transpose_score(dec, shift)
        starts = bar_starts(dec)
        start = starts[n_ctx] if len(starts) > n_ctx else (0 if n_ctx == 0 else None)
        chords = []
        if self.tok.has_chords and start is not None:
            tpq = dec.ticks_per_quarter
            for beat, ch in self.tok.chords(ids):
                tick = int(round(beat * tpq))
                if tick >= start:
                    name = "N.C." if ch is None else (ch.transposed(shift) if shift else ch).name
                    chords.append((tick, name))
        return dec, start, chords

    def continue_from(self, score: Any, bars: int, context_bars: int = 4, cfg: GenerationConfig | None = None,
                      include_prompt: bool = True) -> list["symusic.Score"]:
        """Continue a piece (see :meth:`continue_keyed`, which also says the key).

        Example: ``out = gen.continue_from("clip.mid", bars=4, cfg=GenerationConfig(mood="tense"))``
        """
        return self.continue_keyed(score, bars, context_bars, cfg, include_prompt)[0]

    def continue_keyed(self, score: Any, bars: int, context_bars: int = 4, cfg: GenerationConfig | None = None,
                       include_prompt: bool = True, mood: str | None = None,
                       ) -> tuple[list["symusic.Score"], str | None]:
        """Continue a piece: its last ``context_bars`` bars are the context; ``bars`` new bars follow.

        ``score``: a ``symusic.Score``, MIDI path or MIDI bytes. Returns ``cfg.n`` scores: the
        prompt unchanged (same ticks per quarter, every note as it was) plus exactly ``bars`` new
        bars, or with ``include_prompt=False`` the new bars alone (starting at tick 0). The new bars
        keep the prompt's last meter and tempo; instruments default to the prompt's programs.
        ``cfg.chords`` apply to the new bars (cycled from the first); the new bars' chords are
        added as markers. A form does not apply to a continuation. ``mood``: the mood already
        resolved by the caller (else resolved from ``cfg``). Also returns the key the new bars
        are in: ``cfg.key``, else the prompt's (estimated; None for drums only).

        Example: ``out, key = gen.continue_keyed("clip.mid", bars=4, cfg=GenerationConfig(mood="tense"))``
        """
        import symusic  # heavy: loaded on first use

        cfg = with_overrides(cfg, {"bars": bars})
        cfg.validate()
        check_context_bars(context_bars)
        if cfg.form is not None:
            raise BadInputError("a form applies to a new piece, not to a continuation")
        orig, cfg, shift, meter, all_bars, tempos = self._read_prompt(score, cfg, "continue_from")
        first = max(0, len(all_bars) - context_bars)
        ctx_ids = self._encode_context(all_bars[first:], tempos[first] if first > 0 else None)
        progs = self._prompt_programs(orig, cfg)
        req = self.resolve(cfg, mood)
        self.notes += self.chord_notes(req, cfg)
        cond, uncond = self.controls(req)
        n_ctx = len(all_bars) - first
        g = self.grammar(meter, progs)
        st = self._context_state(g, ctx_ids, n_ctx + bars)
        st.plan = tuple((b + n_ctx, p, c) for b, p, c in self.chord_plan(cfg, meter, req))  # chords of the new bars
        states = [st.copy() for _ in range(cfg.n)]
        new = self._sample(g, [*cond, *ctx_ids], [*uncond, *ctx_ids], states, cfg)

        # new notes → the prompt's timeline and resolution
        orig_end = bar_starts(orig, close=True)[-1]  # where the prompt's last bar ends
        out = []
        for row in new:
            dec, start, chords = self._new_notes(ctx_ids + row, n_ctx, shift)
            if include_prompt:
                res, offset = orig.copy(), orig_end
            else:
                res, offset = symusic.Score(orig.ticks_per_quarter), 0
                last_tempo = sorted(orig.tempos, key=lambda t: t.time)
                res.tempos.append(symusic.Tempo(0, qpm=last_tempo[-1].qpm if last_tempo else 120.0))
                res.time_signatures.append(symusic.TimeSignature(0, meter[0], meter[1]))
            place_notes(res, dec, start, None, offset, chords)
            out.append(res)
        return out, key_name(cfg.key)

    def _context_state(self, g: Grammar, ids: Sequence[int], total: int) -> State:
        """The grammar state after context ``ids`` (followed, not judged), for ``total`` bars in
        all, the next id forced to open a bar."""
        st = State(total=total)
        for i in ids:
            g.track(st, self.vocab.seqs[i])
        if ids and st.phase not in (TSIG, TEMPO, DUR):  # (a complete bar always ends in one of these)
            st.phase = DUR
        st.forced = (frozenset(["Bar_None"]),)  # the new bars start on a bar line
        return st

    def _prompt_programs(self, orig: "symusic.Score", cfg: GenerationConfig) -> tuple[int, ...]:
        """The instruments of new notes: ``cfg.instruments``, else the prompt's own programs."""
        if cfg.instruments is not None:
            return self._programs(cfg.instruments)
        used = sorted({-1 if t.is_drum else t.program for t in orig.tracks if t.notes})
        return tuple(p for p in used if p in self.vocab.programs) or self.default_programs

    def infill(self, score: Any, first_bar: int, last_bar: int, context_bars: int = 4,
               cfg: GenerationConfig | None = None) -> list["symusic.Score"]:
        """Rewrite bars ``first_bar``..``last_bar`` of a clip (see :meth:`infill_keyed`, which
        also says the key).

        Example: ``out = gen.infill("clip.mid", 5, 8, cfg=GenerationConfig(seed=1))``
        """
        return self.infill_keyed(score, first_bar, last_bar, context_bars, cfg)[0]

    def infill_keyed(self, score: Any, first_bar: int, last_bar: int, context_bars: int = 4,
                     cfg: GenerationConfig | None = None, mood: str | None = None,
                     ) -> tuple[list["symusic.Score"], str | None]:
        """Rewrite bars ``first_bar``..``last_bar`` (1-based, inclusive) of a clip: every note
        that starts outside them stays as it was (notes held into them from before included),
        the notes that start inside are replaced by new ones, which end by the span's end.
        The result has the clip's length, tempo, meter and instruments (new notes go to the
        clip's programs unless ``cfg.instruments`` says otherwise).

        The model reads the span's surroundings as it learnt to in training (fill in the
        middle): up to ``context_bars`` bars before the span, ``FIM_suffix``, up to
        ``context_bars`` bars after it, ``FIM_middle``; then it writes the span's bars.
        ``cfg.chords`` apply to the span (cycled from its first bar); ``cfg.key`` None means
        the clip's own key. ``mood``: as in :meth:`continue_keyed`. Also returns the key.

        Example: ``out, key = gen.infill_keyed("clip.mid", 5, 8, cfg=GenerationConfig(seed=1))``
        """
        span = _check_span(first_bar, last_bar, context_bars)
        cfg = with_overrides(cfg, {"bars": span})
        if cfg.form is not None:
            raise BadInputError("infill rewrites bars of a clip; a form applies to a new piece")
        cfg.validate()
        orig, cfg, shift, meter, all_bars, tempos = self._read_prompt(score, cfg, "infill")
        bars_orig = bar_starts(orig, close=True)  # with the line that closes the last bar
        n_orig = len(bars_orig) - 1
        if last_bar > n_orig:
            raise BadInputError(f"infill: bars {first_bar}-{last_bar} reach past the clip's end (it has "
                                f"{n_orig} bar{'s' if n_orig != 1 else ''})")
        sigs = time_signatures(orig)
        if len(sigs) > 1 and sigs[0][0] == 0 and sigs[1][0] == ticks_per_bar(*sigs[0][1:], orig.ticks_per_quarter):
            sigs = sigs[1:]  # a pickup bar (read_clip writes one) is no change of meter
        meter_sigs = {(num, den) for _, num, den in sigs}
        if len(meter_sigs) > 1:
            raise BadInputError("infill: the clip changes meter; melodia infills clips of one meter")
        s0, s1 = first_bar - 1, last_bar
        pre0 = max(0, s0 - context_bars)
        before = self._encode_context(all_bars[pre0:s0], tempos[pre0] if pre0 > 0 else None)
        after = self._encode_context(all_bars[s1:s1 + context_bars], tempos[s1] if not before and s1 < len(tempos) else None)
        req = self.resolve(cfg, mood)
        self.notes += self.chord_notes(req, cfg)
        cond, uncond = self.controls(req)
        ctx = self._fim_context(before, after)
        progs = self._prompt_programs(orig, cfg)
        g = self.grammar(meter, progs)
        n_ctx = s0 - pre0 if before and not after else 0  # bars the grammar follows before the new ones
        st = self._context_state(g, before if n_ctx else [], n_ctx + span)
        st.plan = tuple((b + n_ctx, p, c) for b, p, c in self.chord_plan(cfg, meter, req))  # bars after the context
        states = [st.copy() for _ in range(cfg.n)]
        new = self._sample(g, [*cond, *ctx], [*uncond, *ctx], states, cfg)
        out = []
        for row in new:
            dec, start, chords = self._new_notes((before if n_ctx else []) + row, n_ctx, shift)
            out.append(replace_span(orig, dec, start, bars_orig[s0], bars_orig[s1], chords))
        return out, key_name(cfg.key)

    def _fim_context(self, before: list[int], after: list[int]) -> list[int]:
        """What the model reads before an infilled span: with bars after it, fill in the middle
        (before, FIM_suffix, after, FIM_middle); else (the span ends the clip) the bars before."""
        if not after:
            return before
        fim = self.tok.fim_ids()
        if "suffix" not in fim or "middle" not in fim:
            raise BadInputError("this model was not trained to fill in bars (it has no FIM tokens); "
                                "retrain or fine-tune it with melodia 0.2's tokenizer")
        return [*before, fim["suffix"], *after, fim["middle"]]


def _check_span(first_bar: Any, last_bar: Any, context_bars: Any) -> int:
    """The number of bars in an infill span, after checking the span and ``context_bars``."""
    check_context_bars(context_bars)
    for v in (first_bar, last_bar):
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadInputError(f"infill: bars must be whole bar numbers, got {v!r}")
    if first_bar < 1 or last_bar < first_bar:
        raise BadInputError(f"infill: bars {first_bar}-{last_bar} are not a span of bars "
                            "(write the first and the last bar, counted from 1, like 5-8)")
    span = last_bar - first_bar + 1
    if span > MAX_BARS:
        raise BadInputError(f"infill: {span} bars is more than {MAX_BARS} at once")
    return span
