"""The grammar: which token ids may legally follow, so every sequence decodes cleanly.

The state of a sequence is: the type of the last REMI token (the *phase*), the bar number, the
position inside the bar, the current program and the pitches already started at the current
position (per program). A token may follow when:

==============  ===========================================================================
after           may come
==============  ===========================================================================
(start)         ``Bar`` (then the forced opening: ``TimeSig_<meter>``, ``Position_0``, ``Tempo``;
                an optional ``SECTION`` between ``Bar`` and ``TimeSig``)
``Bar``         ``SECTION_<letter>`` (a tokenizer with sections), ``TimeSig_<meter>`` (the requested
                meter, every bar; no meter changes)
``SECTION``     ``TimeSig_<meter>`` (so at most one section token a bar)
``TimeSig``     ``Position_p`` (any p below the bar length), ``Bar`` (an empty bar)
``Position_p``  ``Program`` (an allowed instrument)
``Tempo``       ``Program``, ``Position_q`` (q > p), ``Bar``
``Program``     ``Pitch`` (``PitchDrum`` for drums) not yet started at this position by that program
``Pitch``       ``Velocity``
``Velocity``    ``Duration`` that ends at or before the end of the last requested bar
``Duration``    ``Program``, ``Position_q`` (q > p), ``Bar`` (if bars remain), ``EOS`` (in the last bar)
==============  ===========================================================================

A section token (``SECTION_A`` …, :mod:`melodia.sections`) marks the bar where a phrase starts;
a tokenizer without them has no such ids and its masks are those of a grammar without the row.
``Bar`` is refused once the requested bars have started and ``EOS`` is allowed only in the last
bar after a complete note, so the decoded MIDI has exactly the requested bars: its last bar holds
a note onset and no note ends after it. Tempo appears once, in the opening (no tempo changes).
At most :data:`MAX_ONSETS` notes per program start at one position (so a ``Program`` token always
has a free pitch). A BPE id is legal when its whole base-token sequence is legal from the current
state, token by token. To make that cheap, each id's base sequence is summarised once per (meter,
instruments) into arrays — first token type, first position before any bar, bars inside, longest
duration at the current position, latest end after an inner position, internal validity — so a
step's mask is a handful of numpy comparisons, cached per compact state (phase, position, bars
left, drum); pitches already started are removed by per-(program, pitch) index lists. When the
token budget (``max_tokens``) is nearly spent, a *finishing* mode allows only the shortest way
to a valid end (close the note, empty bars, one note, EOS), so even an untrained model ends well;
it writes no section token. Sections asked for (a form) are a *section plan*: :meth:`Grammar.section_mask`.

Example: ``m = Grammar(Vocab(tok, tok.vocab_size), (4, 4), frozenset({0, 1})).mask(State(total=4))``
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..music.harmony import chord_from_token_name
from ..sections import SECTION_TOKEN
from ..tokenizer import BOS_ID, EOS_ID, PAD_ID
from .config import MAX_ONSETS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..tokenizer import MelodiaTokenizer

# base token type codes
BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, EOS_T, OTHER, START, CHORD, SECTION = range(14)
_NCODES = 16  # size of the per-type lookup arrays
_TYPE_CODE = {"Bar": BAR, "TimeSig": TSIG, "Position": POS, "Tempo": TEMPO, "Program": PROG,
              "Pitch": PITCH, "PitchDrum": DRUM, "Velocity": VEL, "Duration": DUR}
_NEXT = {  # type transitions inside a sequence (bar count, EOS and values checked elsewhere)
    BAR: {TSIG, SECTION}, TSIG: {POS, BAR}, POS: {PROG, CHORD}, TEMPO: {PROG, POS, BAR, CHORD},
    PROG: {PITCH, DRUM}, PITCH: {VEL}, DRUM: {VEL}, VEL: {DUR}, DUR: {PROG, POS, BAR}, CHORD: {PROG, POS, BAR},
    SECTION: {TSIG},
}
_BIG = 1 << 30


class Vocab:
    """Every id's REMI base tokens as (type, value, text) triples, parsed once per tokenizer."""

    def __init__(self, tok: "MelodiaTokenizer", size: int):
        remi = tok.remi
        self.size = size
        self.base_size = tok.base_size
        self.pos_per_beat = int(remi.config.max_num_pos_per_beat)
        self.tempos: dict[str, float] = {}
        self.timesigs: dict[str, tuple[int, int]] = {}
        self.programs: set[int] = set()
        for t in remi.vocab:
            typ, _, val = t.partition("_")
            if typ == "Tempo":
                self.tempos[t] = float(val)
            elif typ == "TimeSig":
                a, b = val.split("/")
                self.timesigs[val] = (int(a), int(b))
            elif typ == "Program":
                self.programs.add(int(val))
        dur_ticks = remi._tpb_tokens_to_ticks
        self._dur_pos: dict[str, int] = {}
        for tpb, table in dur_ticks.items():  # positions are per beat: the same for every denominator
            tpp = tpb // self.pos_per_beat
            for val, ticks in table.items():
                self._dur_pos.setdefault(val, int(ticks) // tpp)
            break
        cache: dict[str, tuple[int, int, str]] = {}

        def parse(t: str) -> tuple[int, int, str]:
            if t not in cache:
                typ, _, val = t.partition("_")
                code = _TYPE_CODE.get(typ, OTHER)
                if code in (POS, PROG, PITCH, DRUM, VEL):
                    v = int(val)
                elif code == DUR:
                    v = self._dur_pos[val]
                elif code == TSIG:
                    a, b = self.timesigs[val]
                    v = a * 1000 + b
                else:
                    v = 0
                cache[t] = (code, v, t)
            return cache[t]

        specials = {PAD_ID, BOS_ID, EOS_ID}
        specials |= {i for t, i in remi.vocab.items() if t.split("_")[0] in ("PAD", "BOS", "EOS", "MASK")}
        self.seqs: list[tuple[tuple[int, int, str], ...]] = []
        other = ((OTHER, 0, ""),)
        n_ctrl = len(tok.controls)
        for i in range(size):
            ctrl = tok.controls[i - self.base_size] if 0 <= i - self.base_size < n_ctrl else ""
            if i == EOS_ID:
                self.seqs.append(((EOS_T, 0, "EOS_None"),))
            elif ctrl.startswith("Chord_"):
                self.seqs.append(((CHORD, i, ctrl),))  # a chord change (value: its id)
            elif ctrl.startswith(SECTION_TOKEN):
                self.seqs.append(((SECTION, i, ctrl),))  # a phrase starts in this bar (value: its id)
            elif i in specials or i >= self.base_size:
                self.seqs.append(other)
            else:
                self.seqs.append(tuple(parse(t) for t in tok.base_tokens(i)))
        #: every section token id (none for a tokenizer without sections)
        self.section_ids = [i for i, s in enumerate(self.seqs) if s and s[0][0] == SECTION]
        self.by_first: dict[str, list[int]] = {}
        for i, s in enumerate(self.seqs):
            if s and s[0][0] != OTHER:
                self.by_first.setdefault(s[0][2], []).append(i)

    def tempo_token(self, qpm: float, skip: str | None = None) -> str:
        """The Tempo token nearest (on a log scale) to ``qpm``, other than ``skip``."""
        return min((t for t in self.tempos if t != skip), key=lambda t: abs(math.log(self.tempos[t] / qpm)))


@dataclass
class State:
    """Grammar state of one sequence."""

    total: int = 1          # bars requested (the piece ends after this many)
    phase: int = START
    bar: int = 0            # bars started
    pos: int = -1           # position in the current bar (-1: none yet)
    prog: int = 0           # current program
    here: dict = field(default_factory=dict)   # program -> set of pitches started at pos
    forced: tuple = ()      # sets of base-token texts the next base tokens must come from
    done: bool = False
    plan: tuple = ()        # chords asked for, still to write: (bar 1.., position, chord id), in order
    chord: int = -1         # id of the chord token in force (-1: none yet)
    sections: tuple = ()    # sections asked for, still to write: (bar 1.., section id), in order; a last
    #                         (bar, -1) marks that the model writes none of its own (see Grammar.section_mask)

    def copy(self) -> "State":
        return State(self.total, self.phase, self.bar, self.pos, self.prog,
                      {p: set(s) for p, s in self.here.items()}, self.forced, self.done, self.plan, self.chord,
                      self.sections)


class Grammar:
    """The legal-next-token masks for one (meter, instruments) setting (any number of bars:
    each state carries its own ``total``).

    ``advance`` is the reference (token by token, exact); ``mask`` the fast path (arrays per
    id, cached per compact state) — tests check that the two agree.
    """

    def __init__(self, vocab: Vocab, meter: tuple[int, int], programs: frozenset[int]):
        import torch  # heavy: loaded on first use

        self.vocab = vocab
        self.meter = meter[0] * 1000 + meter[1]
        self.L = meter[0] * vocab.pos_per_beat
        self.programs = programs
        implicit, exp_note, exp_prog, conflict = self._summarise(vocab.seqs, programs)
        self._chord_arrays(vocab.seqs)

        def idx(d: dict) -> dict:
            return {k: torch.tensor(sorted(set(v)), dtype=torch.long) for k, v in d.items()}

        self.implicit, self.exp_note = idx(implicit), idx(exp_note)
        self.exp_prog, self.conflict = idx(exp_prog), idx(conflict)
        max_reach = max(int(self.dur_cur.max(initial=0)), int(self.end_rel.max(initial=0)))
        self.bl_cap = max(int(self.nbars.max(initial=0)), max_reach // self.L + 2)
        self._first, self._finish = _phase_tables()
        self._cache: dict[tuple, "torch.Tensor"] = {}
        self._slow_cache: dict[tuple, "torch.Tensor"] = {}
        self._here_cache: dict[tuple, "torch.Tensor"] = {}
        self._plan_cache: dict[tuple, "torch.Tensor"] = {}
        self._section_cache: dict[tuple, "torch.Tensor"] = {}
        self._plan_far = int(self.nbars.max(initial=0)) + 1  # a slot this many bars on: every id stays short of it
        self.eos_only = torch.zeros(vocab.size, dtype=torch.bool)
        self.eos_only[EOS_ID] = True

    def _summarise(self, seqs: list, programs: frozenset[int]) -> tuple[dict, dict, dict, dict]:
        """Each id's base sequence summarised into arrays (``valid``, ``ftype``, ``first_pos``,
        ``nbars``, ``dur_cur``, ``end_rel``, ``single``, set on ``self``); returns the index
        lists ``(implicit, exp_note, exp_prog, conflict)`` that :meth:`exclude` reads."""
        V = len(seqs)
        valid = np.zeros(V, bool)
        ftype = np.full(V, OTHER, np.int64)
        first_pos = np.full(V, _BIG, np.int64)
        nbars = np.zeros(V, np.int64)
        dur_cur = np.zeros(V, np.int64)
        end_rel = np.zeros(V, np.int64)
        single = np.zeros(V, bool)
        implicit: dict[int, list[int]] = {}
        exp_note: dict[tuple[int, int], list[int]] = {}
        exp_prog: dict[int, list[int]] = {}
        conflict: dict[int, list[int]] = {}
        for i, seq in enumerate(seqs):
            if not seq:
                continue
            ftype[i] = seq[0][0]
            single[i] = len(seq) == 1
            ok, fpos, bars_in, dc, er, progs_here = self._scan(i, seq, programs, implicit, exp_note, conflict)
            if ok:
                valid[i] = True
                first_pos[i], nbars[i], dur_cur[i], end_rel[i] = fpos, bars_in, dc, er
                for p in progs_here:
                    exp_prog.setdefault(p, []).append(i)
        self.valid, self.ftype, self.first_pos, self.nbars = valid, ftype, first_pos, nbars
        self.dur_cur, self.end_rel, self.single = dur_cur, end_rel, single
        return implicit, exp_note, exp_prog, conflict

    def _scan(self, i: int, seq: Sequence[tuple[int, int, str]], programs: frozenset[int], implicit: dict,
              exp_note: dict, conflict: dict) -> tuple[bool, int, int, int, int, set]:
        """One id's base tokens read in order: ``(legal inside, first position before any bar,
        bars inside, longest duration at the current position, latest end after an inner
        position, programs it starts notes of at the current position)``; the pitches it starts
        are added to the index lists as it goes."""
        L = self.L
        ok, prev, pos, bars_in, prog = True, None, None, 0, None
        ext, fpos, dc, er = True, _BIG, 0, 0
        ext_keys: set = set()
        seg: set = set()
        progs_here: set = set()
        for t, v, _ in seq:
            if prev is not None and t not in _NEXT.get(prev, ()):
                ok = False
                break
            if t == BAR:
                bars_in += 1
                pos, ext, seg = -1, False, set()
            elif t == TSIG:
                ok = v == self.meter
            elif t == POS:
                if v >= L or (pos is not None and v <= pos):
                    ok = False
                elif pos is None and bars_in == 0:
                    fpos = v
                pos, ext, seg = v, False, set()
            elif t == PROG:
                ok = v in programs
                prog = v
                if ext:
                    progs_here.add(v)
            elif t in (PITCH, DRUM):
                if prog is None:  # continues the current program (first token of the id)
                    implicit.setdefault(v, []).append(i)
                    ext_keys.add((None, v))
                else:
                    if (t == DRUM) != (prog == -1):
                        ok = False
                    elif ext:
                        if (prog, v) in ext_keys:
                            ok = False
                        else:
                            ext_keys.add((prog, v))
                            exp_note.setdefault((prog, v), []).append(i)
                            if (None, v) in ext_keys:
                                conflict.setdefault(prog, []).append(i)
                    elif (prog, v) in seg:
                        ok = False
                    else:
                        seg.add((prog, v))
            elif t == DUR:
                if ext:
                    dc = max(dc, v)
                else:
                    er = max(er, bars_in * L + pos + v)
            elif t not in (VEL, CHORD, SECTION):
                ok = False  # Tempo (only in the forced opening), specials, controls
            if not ok:
                break
            prev = t
        return ok, fpos, bars_in, dc, er, progs_here

    def _chord_arrays(self, seqs: list) -> None:
        """For chords asked for (see :meth:`plan_mask`): where each id leaves the position,
        whether it ends on a Position (the slot a chord token follows), whether it is a chord,
        and which ids start no new place (:meth:`chord_tone_mask`)."""
        import torch  # heavy: loaded on first use

        V = len(seqs)
        last_pos = np.full(V, -1, np.int64)
        ends_pos = np.zeros(V, bool)
        ends_bar = np.zeros(V, bool)
        is_chord = np.zeros(V, bool)
        is_section = np.zeros(V, bool)
        for i, seq in enumerate(seqs):
            if not seq:
                continue
            for t, v, _ in seq:
                if t == BAR:
                    last_pos[i] = -1
                elif t == POS:
                    last_pos[i] = v
            ends_pos[i] = seq[-1][0] == POS
            ends_bar[i] = seq[-1][0] == BAR
            is_chord[i] = seq[0][0] == CHORD
            is_section[i] = seq[0][0] == SECTION
        self.last_pos, self.ends_pos, self.is_chord = last_pos, ends_pos, is_chord
        self.ends_bar, self.is_section = ends_bar, is_section
        self._chord_ok: dict[int | tuple, "torch.Tensor"] = {}  # per chord id; (id, "free"): with passing tones
        self._no_new_place = torch.from_numpy(np.array(
            [bool(seq) and all(t not in (BAR, POS, PROG) for t, _, _ in seq) for seq in seqs]))

    # ------------------------------------------------------------------ reference rules
    def advance(self, st: State, seq: Sequence[tuple[int, int, str]]) -> bool:
        """Apply one id's base tokens to ``st`` (in place); False if any is illegal."""
        if not seq:
            return False
        start_counts = {p: len(s) for p, s in st.here.items()}
        ext = True
        N, L = st.total, self.L
        for t, v, text in seq:
            forced = False
            if st.forced:
                if text in st.forced[0]:
                    st.forced = st.forced[1:]
                    forced = True
                elif not (t == SECTION and st.phase == BAR
                          and not any(x.startswith(SECTION_TOKEN) for x in st.forced[0])):
                    return False  # (a section token where the opening names none is optional: judged below)
            p = st.phase
            if t == BAR:
                if p not in (START, TSIG, TEMPO, DUR, CHORD) or st.bar >= N:
                    return False
                st.bar += 1
                st.pos, st.here, ext = -1, {}, False
            elif t == TSIG:
                if p not in (BAR, SECTION) or v != self.meter:
                    return False
            elif t == SECTION:
                if p != BAR:
                    return False
            elif t == POS:
                if p not in (TSIG, TEMPO, DUR, CHORD) or not st.pos < v < L:
                    return False
                st.pos, st.here, ext = v, {}, False
            elif t == TEMPO:
                if not forced or p != POS:
                    return False
            elif t == CHORD:
                if p not in (POS, TEMPO):
                    return False
                st.chord = v
            elif t == PROG:
                if p not in (POS, TEMPO, DUR, CHORD) or st.pos < 0 or v not in self.programs:
                    return False
                if ext and start_counts.get(v, 0) >= MAX_ONSETS:
                    return False
                st.prog = v
            elif t in (PITCH, DRUM):
                if p != PROG or (t == DRUM) != (st.prog == -1):
                    return False
                started = st.here.setdefault(st.prog, set())
                if v in started:
                    return False
                started.add(v)
            elif t == VEL:
                if p not in (PITCH, DRUM):
                    return False
            elif t == DUR:
                if p != VEL or v > (N - st.bar + 1) * L - st.pos:
                    return False
            elif t == EOS_T:
                if p != DUR or st.bar != N:
                    return False
                st.done = True
            else:
                return False
            st.phase = t
        return True

    def legal(self, st: State, i: int) -> bool:
        """Whether id ``i`` may follow state ``st`` (reference rules; ``st`` is not changed)."""
        return self.advance(st.copy(), self.vocab.seqs[i])

    # ------------------------------------------------------------------ fast masks
    def _key(self, st: State, finish: bool) -> tuple:
        return (st.phase, st.pos, st.prog == -1 and st.phase == PROG,
                min(st.total - st.bar, self.bl_cap), finish)

    def _fast(self, key: tuple) -> "torch.Tensor":
        import torch  # heavy: loaded on first use

        phase, pos, drum, bl, finish = key
        ft = self.ftype
        m = self.valid & self._first[phase, drum][ft]
        m &= self.first_pos > pos
        m &= self.nbars <= bl
        m &= self.dur_cur <= (bl + 1) * self.L - pos
        m &= self.end_rel <= (bl + 1) * self.L
        if finish:
            m &= self.single & self._finish[phase, bl > 0][ft]
        m[EOS_ID] = phase == DUR and bl == 0
        return torch.from_numpy(m)

    def _slow(self, st: State) -> "torch.Tensor":
        import torch  # heavy: loaded on first use

        m = torch.zeros(self.vocab.size, dtype=torch.bool)
        cands = [i for text in st.forced[0] for i in self.vocab.by_first.get(text, ())] if st.forced \
            else range(self.vocab.size)
        if st.forced and st.phase == BAR:
            cands = [*cands, *self.vocab.section_ids]  # optional after the opening's Bar
        for i in cands:
            if self.legal(st, i):
                m[i] = True
        return m

    def mask(self, st: State, finish: bool = False) -> "torch.Tensor":
        """Bool mask [vocab] of the ids that may follow ``st`` (a shared, cached tensor when
        no pitch has started at the current position; do not modify it)."""
        if st.done:
            return self.eos_only
        if st.forced:
            key = (st.forced, st.phase, min(st.total - st.bar, self.bl_cap), st.pos, st.prog,
                   tuple(sorted((p, tuple(sorted(s))) for p, s in st.here.items())))
            m = self._slow_cache.get(key)
            if m is None:
                m = self._slow_cache[key] = self._slow(st)
            return m
        key = self._key(st, finish)
        m = self._cache.get(key)
        if m is None:
            m = self._cache[key] = self._fast(key)
        if st.here or (st.phase == PROG and st.prog in self.conflict):
            # pitches already started here (a chord in progress): cached too, chords repeat
            hkey = (key, st.prog, frozenset((p, frozenset(s)) for p, s in st.here.items()))
            hm = self._here_cache.get(hkey)
            if hm is None:
                if len(self._here_cache) > 20000:
                    self._here_cache.clear()
                hm = self._here_cache[hkey] = m.clone()
                self.exclude(st, hm)
            m = hm
        return m

    def plan_mask(self, st: State) -> "torch.Tensor | None":
        """For a state with a chord plan: the ids that keep the next planned chord's slot (bar b,
        position p) reachable, or only that chord's id when the sequence stands on it. An id may
        not carry the sequence past the slot, nor onto it with notes after it (BPE merges a
        Position with the notes that follow); EOS waits until the plan is done, and so, when
        the chords were asked for (the plan ends in a ``-1`` marker), does every chord the model
        would write itself. None: no plan left.

        Example: ``m = grammar.mask(st) & grammar.plan_mask(st)``
        """
        if not st.plan:
            return None
        b, p, cid = st.plan[0]
        # cached by what it depends on: the slot, the bars to it (all alike beyond what any id
        # spans), the position when in its bar; as with :meth:`mask`, a shared tensor: do not modify it
        key = (min(b - st.bar, self._plan_far), p, cid, st.plan[-1][2] < 0, st.pos if st.bar == b else None,
               st.bar == b and st.pos == p and st.phase in (POS, TEMPO))
        m = self._plan_cache.get(key)
        if m is None:
            if len(self._plan_cache) > 4096:
                self._plan_cache.clear()
            m = self._plan_cache[key] = self._plan_mask(st)
        return m

    def _plan_mask(self, st: State) -> "torch.Tensor":
        import torch  # heavy: loaded on first use

        b, p, cid = st.plan[0]
        if cid < 0:  # every chord asked for is written: the model writes none of its own
            return torch.from_numpy(~self.is_chord)
        if st.bar == b and st.pos == p and st.phase in (POS, TEMPO):
            m = torch.zeros(self.vocab.size, dtype=torch.bool)
            m[cid] = True
            return m
        reach = st.bar + self.nbars
        lp = np.where(self.nbars > 0, self.last_pos, np.maximum(self.last_pos, st.pos if st.bar == b else -1))
        ok = (reach < b) | ((reach == b) & ((lp < p) | ((lp == p) & self.ends_pos)))
        if st.plan[-1][2] < 0:  # chords asked for (the plan ends in its marker): no chord of the model's
            ok &= ~self.is_chord
        ok[EOS_ID] = False
        return torch.from_numpy(ok)

    def chord_tone_mask(self, st: State, free_program: int | None) -> "torch.Tensor | None":
        """With chords asked for: the ids whose pitched notes are tones of the chord in force,
        except that ``free_program`` (the melody) may use any pitch for a note that starts off
        the beat (a passing tone) when the id starts no new position or program. None when no
        chord is in force.

        Example: ``m &= grammar.chord_tone_mask(st, free_program=0)``
        """
        import torch  # heavy: loaded on first use

        if st.chord < 0:
            return None
        ok = self._chord_ok.get(st.chord)
        if ok is None:

            ch = chord_from_token_name(self.vocab.seqs[st.chord][0][2])
            tones = set(range(12)) if ch is None else set(ch.pitch_classes)
            ok = np.ones(self.vocab.size, bool)
            for i, seq in enumerate(self.vocab.seqs):
                if any(t == PITCH and v % 12 not in tones for t, v, _ in seq):
                    ok[i] = False
            ok = self._chord_ok[st.chord] = torch.from_numpy(ok)
        if free_program is not None and st.prog == free_program and st.phase == PROG \
                and st.pos % self.vocab.pos_per_beat:
            free = self._chord_ok.get((st.chord, "free"))
            if free is None:
                free = self._chord_ok[(st.chord, "free")] = ok | self._no_new_place
            return free
        return ok

    def section_mask(self, st: State) -> "torch.Tensor | None":
        """For a state with a section plan (a form asked for): only the planned section id when
        the sequence stands on its bar's ``Bar``; before it, the ids that reach that ``Bar`` and
        stop there (a BPE id that merges ``Bar`` with what follows would leave no room for it)
        or stay short of it; and no section id the plan does not name (after the plan's last
        entry, a ``-1`` marker, none at all). None: no plan.

        Example: ``m = grammar.mask(st) & grammar.section_mask(st)``
        """
        if not st.sections:
            return None
        b, sid = st.sections[0]
        on = st.phase == BAR and st.bar == b
        # cached by the bars to the next planned one (all alike beyond what any id spans); a shared tensor
        key = (min(b - st.bar, self._plan_far), sid, on)
        m = self._section_cache.get(key)
        if m is None:
            if len(self._section_cache) > 4096:
                self._section_cache.clear()
            m = self._section_cache[key] = self._section_mask(st, b, sid, on)
        return m

    def _section_mask(self, st: State, b: int, sid: int, on: bool) -> "torch.Tensor":
        import torch  # heavy: loaded on first use

        if on and sid >= 0:
            m = torch.zeros(self.vocab.size, dtype=torch.bool)
            m[sid] = True
            return m
        ok = ~self.is_section
        if sid >= 0:
            reach = st.bar + self.nbars
            ok &= (reach < b) | ((reach == b) & self.ends_bar)
            ok[EOS_ID] = False
        return torch.from_numpy(ok)

    def exclude(self, st: State, m: "torch.Tensor") -> None:
        """Remove from ``m`` the ids that would restart a pitch at the current position."""
        for p, started in st.here.items():
            for v in started:
                ix = self.exp_note.get((p, v))
                if ix is not None:
                    m[ix] = False
                if p == st.prog:
                    ix = self.implicit.get(v)
                    if ix is not None:
                        m[ix] = False
            if len(started) >= MAX_ONSETS:
                ix = self.exp_prog.get(p)
                if ix is not None:
                    m[ix] = False
        ix = self.conflict.get(st.prog)
        if ix is not None:
            m[ix] = False

    def finish_needed(self, st: State) -> int:
        """An upper bound on the ids needed to end validly from ``st`` (finishing mode)."""
        return 10 + 2 * (st.total - st.bar) + len(st.forced) + len(st.sections)

    def track(self, st: State, seq: Sequence[tuple[int, int, str]]) -> None:
        """Follow a prompt's tokens without judging them (continuation context)."""
        for t, v, _ in seq:
            if t == BAR:
                st.bar += 1
                st.pos, st.here = -1, {}
            elif t == POS:
                st.pos, st.here = v, {}
            elif t == PROG:
                st.prog = v
            elif t in (PITCH, DRUM):
                st.here.setdefault(st.prog, set()).add(v)
            elif t == CHORD:
                st.chord = v
            if t != OTHER:  # (a section token too: what follows it is what follows a Bar)
                st.phase = t


def _phase_tables() -> tuple[dict, dict]:
    """Per (phase, drum) the token types an id may start with, and per (phase, bars remain) the
    ones finishing mode allows (lookup arrays by type code)."""
    first = {}
    for phase in (BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, CHORD, SECTION):
        for drum in (False, True):
            allowed = {BAR: {TSIG, SECTION}, TSIG: {POS, BAR}, POS: {PROG, CHORD}, TEMPO: {PROG, POS, BAR, CHORD},
                       PROG: {DRUM} if drum else {PITCH}, PITCH: {VEL}, DRUM: {VEL},
                       VEL: {DUR}, DUR: {PROG, POS, BAR}, CHORD: {PROG, POS, BAR}, SECTION: {TSIG}}[phase]
            arr = np.zeros(_NCODES, bool)
            arr[list(allowed)] = True
            first[phase, drum] = arr
    finish = {}  # (never a section token)
    for phase in (BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, CHORD, SECTION):
        for more in (False, True):
            allowed = {BAR: {TSIG}, TSIG: {BAR} if more else {POS}, TEMPO: {BAR} if more else {POS},
                       POS: {PROG}, PROG: {PITCH, DRUM}, PITCH: {VEL}, DRUM: {VEL}, VEL: {DUR},
                       DUR: {BAR} if more else set(), CHORD: {BAR} if more else {PROG}, SECTION: {TSIG}}[phase]
            arr = np.zeros(_NCODES, bool)
            arr[list(allowed)] = True
            finish[phase, more] = arr
    return first, finish
