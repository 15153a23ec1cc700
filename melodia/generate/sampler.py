"""Sampling: :class:`Generator` turns a request into token ids, one grammar-masked step at a time.

A request is resolved once (:meth:`Generator.resolve`: mood, key, tags, style, tempo band) and
read from then on: the conditioning prefix (mood, key, style, tags), forced opening tokens (bar, meter,
tempo), the chord or tonic plan, classifier-free guidance, temperature / top-k / top-p sampling
with a seeded ``torch.Generator``, ``n`` variations as one batch. Continuing and infilling a
clip are in :mod:`.prompt`; the lean forward pass is :class:`melodia.model.lean.LeanLlama`.

Example:
    >>> gen = Generator(model, tokenizer)
    >>> ids = gen.generate(GenerationConfig(bars=8, mood="calm", key="F major", n=2, seed=1))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, BadModelError
from ..model.lean import LeanLlama
from ..music.harmony import QUALITIES, Chord, key_of_chords
from ..music.instruments import DEFAULT_PROGRAMS, resolve_instruments
from ..music.keys import KEY_NAMES, key_from_token_name, parse_key, scale_of, scale_with_chord
from ..music.meter import beats_per_bar, parse_meter
from ..music.moods import mood_defaults, resolve_mood
from ..sections import section_letter
from ..tokenizer import EOS_ID
from .config import GenerationConfig, Request, key_name, with_overrides
from .grammar import BAR, Grammar, State, Vocab
from .prompt import PromptMixin

if TYPE_CHECKING:  # pragma: no cover
    import symusic
    import torch

    from ..tokenizer import MelodiaTokenizer

__all__ = ["Generator", "generate_scores", "sample_ids"]


class Generator(PromptMixin):
    """Conditioned, grammar-constrained sampling from a melodia model.

    One generator owns one KV cache: use it from one thread at a time (or one per thread).
    Grammar tables are built once per (meter, bars, instruments) and cached.

    Example:
        >>> gen = Generator(model, tok)
        >>> ids = gen.generate(GenerationConfig(bars=4, mood="sad", seed=3))
        >>> longer = gen.continue_from("clip.mid", bars=4, context_bars=4)
    """

    def __init__(self, model: Any, tokenizer: "MelodiaTokenizer", device: str = "cpu", weights: str = "auto",
                 default_programs: Sequence[int] | None = None, tempo_unknown: str | None = None,
                 style_programs: Mapping[str, Sequence[int]] | None = None):
        vs = int(model.config.vocab_size)
        if vs < tokenizer.vocab_size:
            raise BadModelError(f"model vocabulary ({vs}) is smaller than the tokenizer's ({tokenizer.vocab_size})")
        self.tok = tokenizer
        self.model = model
        self.net = LeanLlama(model, device=device, weights=weights)
        self.vocab = Vocab(tokenizer, vs)
        import torch  # heavy: loaded on first use

        #: ids that open a new bar (their first base token is Bar): in the last bar they mean "end"
        self._bar_ids = torch.tensor([i for i, sq in enumerate(self.vocab.seqs) if sq and sq[0][0] == BAR] or [EOS_ID])
        #: the instruments when a request names none (melodia.json's "default_programs", if any)
        self.default_programs = tuple(int(p) for p in default_programs) if default_programs else DEFAULT_PROGRAMS
        missing = [p for p in self.default_programs if p not in self.vocab.programs]
        if missing:
            raise BadModelError(f"default_programs {missing} are not in the model's vocabulary")
        #: each style's instruments when a request asks for it and names none (melodia.json's
        #: "style_programs": the style's commonest ensemble in the training corpus)
        self.style_programs = {str(k): tuple(int(p) for p in v) for k, v in (style_programs or {}).items()}
        missing = sorted({p for v in self.style_programs.values() for p in v if p not in self.vocab.programs})
        if missing:
            raise BadModelError(f"style_programs {missing} are not in the model's vocabulary")
        #: the Tempo token that in the model's training data mostly meant "no tempo given"
        #: (melodia.json's "tempo_unknown"; see :meth:`tempo_for_model`), or None
        self.tempo_unknown = tempo_unknown
        if tempo_unknown is not None and tempo_unknown not in self.vocab.tempos:
            raise BadModelError(f"tempo_unknown {tempo_unknown!r} is not a Tempo token of the model's vocabulary")
        self._grammars: dict[tuple, Grammar] = {}
        self._in_key: dict[tuple[int, bool, int | None], Any] = {}
        self._combos: dict[tuple, tuple] = {}  # a step's row mask from its cached pieces (_step_mask)
        #: notes about the last request, one line each (chords outside the key, a clip's metre
        #: read anew): :class:`melodia.api.Composer` hands them on as ``Piece.warnings``
        self.notes: list[str] = []

    # ------------------------------------------------------------------ helpers
    def in_key_mask(self, key_id: int, leading_tone: bool = False,
                    chord_id: int | None = None) -> "torch.Tensor | None":
        """Ids whose pitches all lie in the scale of a KEY_ control (major: the seven diatonic
        pitch classes; minor: natural minor, the scale of the corpus's minor music, plus the
        raised 7th with ``leading_tone``); None for ``KEY_any``. With ``chord_id`` (a chord
        asked for, in force): the scale as that chord alters it (``keys.scale_with_chord``: F
        major in D major brings F and C in place of F♯ and C♯), the very same mask when the
        chord lies inside the scale.

        Why minor leaves out the raised 7th: docs/evidence.md, "Natural minor".

        Example: ``gen.in_key_mask(tok.key_id("A minor"))``
        """
        import torch  # heavy: loaded on first use

        cached = (key_id, bool(leading_tone), chord_id)
        if cached in self._in_key:
            return self._in_key[cached]
        name = self.tok.id_to_token(key_id) if key_id >= self.tok.base_size else "KEY_any"
        key = key_from_token_name(name) if name.startswith("KEY_") else "any"
        mask = None
        chord = self.tok.chord_ids().get(chord_id) if chord_id is not None else None
        if key != "any" and chord is not None:
            scale = scale_with_chord(key, chord.root, QUALITIES[chord.quality], chord.bass, leading_tone)
            if scale == scale_of(key, leading_tone):
                chord = None  # inside the key: the key's own mask
        if chord is None and chord_id is not None:
            mask = self.in_key_mask(key_id, leading_tone)
        elif key != "any":
            scale = scale_of(key, leading_tone) if chord is None else scale
            mask = torch.ones(self.vocab.size, dtype=torch.bool)
            for i in range(4, self.tok.base_size):
                for t in self.tok.base_tokens(i):
                    if t.startswith("Pitch_") and int(t[6:]) % 12 not in scale:
                        mask[i] = False
                        break
            # chords keep to the scale too (C major in C minor would pull the notes to major)
            for i, ch in self.tok.chord_ids().items():
                if ch is not None and not ch.pitch_classes <= scale:
                    mask[i] = False
        self._in_key[cached] = mask
        return mask

    def tempo_for_model(self, qpm: float) -> str:
        """The Tempo token the model is conditioned on for a tempo of ``qpm``: the nearest one,
        except where that is the model's ``tempo_unknown`` token, whose music was mostly files
        with no tempo of their own (music21 and abc2midi write 120 qpm into those): then the
        nearest other one. The piece itself still gets the tempo asked for (Composer writes it;
        a continuation keeps its prompt's).

        Measurements: docs/evidence.md, "The tempo-unknown token".

        Example: ``gen.tempo_for_model(120)  # 'Tempo_115.93' for the shipped model``
        """
        token = self.vocab.tempo_token(qpm)
        if token == self.tempo_unknown and len(self.vocab.tempos) > 1:
            token = self.vocab.tempo_token(qpm, skip=token)
        return token

    def grammar(self, meter: tuple[int, int], programs: Sequence[int]) -> Grammar:
        """The (cached) grammar of one meter and instrument set. Example: ``gen.grammar((4, 4), (0, 1))``."""
        key = (meter, frozenset(programs))
        g = self._grammars.get(key)
        if g is None:
            if len(self._grammars) > 64:
                self._grammars.clear()
            g = self._grammars[key] = Grammar(self.vocab, meter, frozenset(programs))
        return g

    def _meter(self, cfg: GenerationConfig) -> tuple[int, int]:
        num, den = parse_meter(cfg.meter)
        if f"{num}/{den}" not in self.vocab.timesigs:
            raise BadInputError(f"meter {cfg.meter!r} is not in this model's vocabulary; use one of "
                                f"{', '.join(self.vocab.timesigs)}")
        return num, den

    def _programs(self, instruments: Any, style: str | None = None) -> tuple[int, ...]:
        """The programs to write: ``instruments``, else the ensemble of the ``style`` asked for, else
        the model's default set."""
        progs = resolve_instruments(instruments, self.style_programs.get(style or "") or self.default_programs)
        missing = [p for p in progs if p not in self.vocab.programs]
        if missing:
            raise BadInputError(f"instrument program(s) {missing} not in this model's vocabulary")
        return progs

    def resolve(self, cfg: GenerationConfig, mood: str | None = None) -> Request:
        """The request resolved once: its mood (``mood`` when the caller resolved it already, as
        :class:`melodia.api.Composer` does), key (given, from its chords, or the mood's default,
        drawn by ``cfg.seed``), tags, style (``tok.resolve_style``: the model's default when none
        is asked for) and tempo band. Everything after reads this, not ``cfg``.

        Example: ``gen.resolve(GenerationConfig(mood="sad", seed=1)).key  # 'E minor'``
        """
        if mood is None:
            try:
                mood = resolve_mood(cfg.mood, cfg.valence, cfg.arousal)
            except BadInputError:
                word = (cfg.mood or "").strip().lower()
                if cfg.valence is not None or cfg.arousal is not None or f"MOOD_{word}" not in self.tok.controls:
                    raise
                mood = word  # a user mood the fine-tuned model knows
        key, band = mood_defaults(mood, cfg.seed)
        progression = tuple(cfg.progression())
        if cfg.key is not None:
            key = cfg.key
        elif cfg.chords is not None:  # chords given and no key: the key follows from the chords
            key = key_of_chords([c for _, _, c in progression])
        return Request(mood=mood, key=key, tags=tuple(cfg.tags), band=band, progression=progression,
                       style=self.tok.resolve_style(cfg.style))

    def controls(self, req: Request) -> tuple[list[int], list[int]]:
        """(conditional, unconditional) control prefixes of equal length: what the model reads.
        With a key-normalised tokenizer the key token is the key's mode on C (:meth:`shown_prefix`
        names the key itself). The unconditional prefix keeps the style and the tags: guidance
        weighs the mood and key, the only controls training ever dropped to ``_any``.

        Example: ``cond, uncond = gen.controls(gen.resolve(GenerationConfig(mood="calm")))``
        """
        cond = self.tok.controls_prefix(req.mood, self.tok.key_for_model(req.key), list(req.tags), req.style)
        uncond = self.tok.controls_prefix("any", None, list(req.tags), req.style)
        return cond, uncond

    def shown_prefix(self, cfg: GenerationConfig, req: Request | None = None) -> list[int]:
        """The control prefix :meth:`generate` puts before the new ids: the mood, the key the
        piece is in (so ``tok.decode`` moves key-normalised notes there), the style and the tags.

        Example: ``gen.shown_prefix(GenerationConfig(mood="sad", key="E minor"))``
        """
        req = req if req is not None else self.resolve(cfg)
        return self.tok.controls_prefix(req.mood, req.key, list(req.tags), req.style)

    # ------------------------------------------------------------------ public
    def generate(self, cfg: GenerationConfig | None = None, **overrides: Any) -> list[list[int]]:
        """``cfg.n`` sequences of token ids (controls, music, EOS), each exactly ``cfg.bars`` bars.

        The controls name the key asked for (or the mood's default key); for a key-normalised
        tokenizer the music is written on C and ``tok.decode`` moves it to that key.

        Example: ``ids = gen.generate(GenerationConfig(bars=8, mood="calm"), seed=1)``
        """
        return self.generate_keyed(with_overrides(cfg, overrides))[0]

    def generate_keyed(self, cfg: GenerationConfig, req: Request | None = None) -> tuple[list[list[int]], str | None]:
        """Like :meth:`generate` for a resolved request (resolved here when ``req`` is None), also
        returning the key the pieces are in (canonical name; None for no key).

        Example: ``rows, key = gen.generate_keyed(GenerationConfig(mood="sad", seed=1))  # key 'E minor'``
        """
        g, cond, uncond, states, req = self._prepare(cfg, req)
        self.notes = self.chord_notes(req, cfg)
        new = self._sample(g, cond, uncond, states, cfg)
        shown = self.shown_prefix(cfg, req)
        return [shown + row for row in new], key_name(req.key)

    def prepare(self, cfg: GenerationConfig) -> tuple[Grammar, list[int], list[int], list[State]]:
        """Validate ``cfg`` and build what sampling starts from: the grammar, the conditional and
        unconditional control prefixes, and one grammar state per variation (with the forced
        opening ``Bar TimeSig_<meter> Position_0 Tempo``). Used by :meth:`generate` and benchmarks.

        Example: ``grammar, cond, uncond, states = gen.prepare(GenerationConfig(bars=4))``
        """
        return self._prepare(cfg)[:4]

    def _prepare(self, cfg: GenerationConfig, req: Request | None = None) -> tuple:
        cfg.validate()
        meter = self._meter(cfg)
        req = req if req is not None else self.resolve(cfg)
        progs = self._programs(cfg.instruments, req.style if cfg.style is not None else None)  # a style asked for
        cond, uncond = self.controls(req)
        g = self.grammar(meter, progs)
        sections = self.section_plan(cfg)
        first = ()  # a section asked for at bar 1 stands in the opening, between Bar and TimeSig
        if sections and sections[0][0] == 1:
            first, sections = (frozenset([self.vocab.seqs[sections[0][1]][0][2]]),), sections[1:]
        opening = (frozenset(["Bar_None"]), *first, frozenset([f"TimeSig_{meter[0]}/{meter[1]}"]),
                   frozenset(["Position_0"]), self._opening_tempos(cfg, req.band))
        plan = self.chord_plan(cfg, meter, req)
        if not plan and cfg.in_key and cfg.tonic_frame and self.tok.has_chords:
            plan = self.tonic_plan(cfg, req)
        return g, cond, uncond, [State(total=cfg.bars, forced=opening, plan=plan, sections=sections)
                                 for _ in range(cfg.n)], req

    def _opening_tempos(self, cfg: GenerationConfig, band: tuple[float, float] | None) -> frozenset:
        """The Tempo tokens the opening may take: the one nearest ``cfg.tempo``, else the mood's
        band without the model's "tempo unknown" token when it has others (docs/evidence.md,
        "Tempo bands"), else every tempo."""
        if cfg.tempo is not None:
            return frozenset([self.tempo_for_model(cfg.tempo)])
        in_band = [t for t, q in self.vocab.tempos.items() if band and band[0] <= q <= band[1]]
        return frozenset([t for t in in_band if t != self.tempo_unknown] or in_band or self.vocab.tempos)

    def tonic_plan(self, cfg: GenerationConfig, req: Request | None = None) -> tuple:
        """The plan of ``tonic_frame``: the key's tonic chord at the start of every four-bar
        phrase (bars 1, 5, 9, …) and of the last bar, the model's own chords everywhere else;
        () with no key.

        Phrases that start at home state the key (measurements: docs/evidence.md, "Tonic frame").

        Example: ``gen.tonic_plan(GenerationConfig(mood="sad", key="D minor", bars=8))``
        """
        key = self.tok.key_for_model((req if req is not None else self.resolve(cfg)).key)
        if key is None or str(key).strip().lower() == "any":
            return ()
        idx = KEY_NAMES.index(parse_key(key))
        tonic = self.tok.chord_id(Chord(idx % 12, "min" if idx >= 12 else "maj"))
        return tuple((b, 0, tonic) for b in sorted({1, cfg.bars, *range(5, cfg.bars + 1, 4)}))

    def section_plan(self, cfg: GenerationConfig) -> tuple:
        """A form's sections as the grammar's section plan: ``(bar 1.., section id)`` at the first
        bar of every section the model writes (with ``repeat`` "sections" all of them, with
        "exact" those not copied: a copy brings its own), then the marker ``(bars + 1, -1)``:
        no section token but these. () with no form or for a model without section tokens.
        A form letter is the section token of :func:`melodia.sections.section_letter` (A-D, X;
        a later letter is D): two letters of one form on one token are a BadInputError.

        Example: ``gen.section_plan(GenerationConfig(bars=16, form="AABA"))  # ((1, A), (5, A), (9, B), …)``
        """
        mode = cfg.repeat_mode(self.tok.has_sections)
        if mode is None or not self.tok.has_sections:
            return ()
        ids = {letter: i for i, letter in self.tok.section_ids().items()}
        copied = _Rows.copies_of(cfg) if mode == "exact" else {}
        plan, by_token = [], {}
        for letter, first, _, _ in cfg.sections():
            token = section_letter(letter)
            if by_token.setdefault(token, letter) != letter:
                raise BadInputError(f"form {cfg.form!r}: this model's section tokens name A, B, C, D and X; "
                                    f"{letter} and {by_token[token]} would both be section {token} (use other "
                                    "letters, or repeat \"exact\")")
            if first + 1 not in copied and token in ids:
                plan.append((first + 1, ids[token]))
        return tuple(plan) + ((cfg.bars + 1, -1),)

    def chord_plan(self, cfg: GenerationConfig, meter: tuple[int, int], req: Request | None = None) -> tuple:
        """``cfg.chords`` as the grammar's plan: ``(bar 1.., position, chord id)`` at every chord
        change, the chords moved as the notes are (key-normalised: onto C).

        Example: ``gen.chord_plan(GenerationConfig(chords="Am F", key="A minor"), (4, 4))``
        """
        req = req if req is not None else self.resolve(cfg)
        prog = req.progression
        if not prog:
            return ()
        if not self.tok.has_chords:
            raise BadInputError("this model has no chord tokens, so it cannot follow chords; "
                                "retrain or fine-tune it with melodia 0.2's tokenizer")
        bar_len = beats_per_bar(*meter)
        shift = self.tok.model_shift(req.key)
        per = self.vocab.pos_per_beat * meter[1] / 4
        plan, prev = [], None
        for start, _, chord in prog:
            bar = int(start // bar_len + 1e-9)
            pos = int(round((start - bar * bar_len) * per))
            cid = self.tok.chord_id(chord.transposed(shift) if shift else chord)
            if cid == prev:  # the same chord again: it goes on (the corpus has a token at each change only)
                continue
            plan.append((bar + 1, pos, cid))
            prev = cid
        return tuple(plan) + ((cfg.bars + 1, 0, -1),)  # the end: no chords but these

    def generate_scores(self, cfg: GenerationConfig | None = None, **overrides: Any) -> list["symusic.Score"]:
        """Like :meth:`generate`, decoded to ``symusic.Score`` objects.

        Example: ``scores = gen.generate_scores(bars=4, mood="happy", n=2)``
        """
        return [self.tok.decode(ids) for ids in self.generate(cfg, **overrides)]

    # ------------------------------------------------------------------ the loop
    def _sample(self, g: Grammar, cond: list[int], uncond: list[int], states: list[State],
                cfg: GenerationConfig, stop_after: int | None = None) -> list[list[int]]:
        """The sampling loop: prefill, then one grammar-masked step per new id for all rows.

        ``stop_after`` (benchmarks) stops after that many steps, finished or not.
        """
        import torch  # heavy: loaded on first use

        n = len(states)
        guided = cfg.guidance != 1.0 and list(cond) != list(uncond)  # no mood/key: nothing to guide
        rows = [list(cond) for _ in range(n)] + ([list(uncond) for _ in range(n)] if guided else [])
        budget = cfg.token_budget()
        book = _Rows(n, cfg, exact=cfg.repeat_mode(self.tok.has_sections) == "exact")
        bar_or_end = None
        if book.copies:
            bar_or_end = torch.zeros(self.vocab.size, dtype=torch.bool)
            bar_or_end[self._bar_ids] = True
            bar_or_end[EOS_ID] = True
        net = self.net
        length = min(max(64, net.window), len(cond) + (2 if book.copies else 1) * budget + 1)
        n_ctrl = len(self.tok.controls_prefix("any", None, list(cfg.tags), self.tok.resolve_style(cfg.style)))
        if len(cond) >= length:  # a long prompt: keep the controls and its most recent part
            rows = _keep_recent(rows, n_ctrl, length)
        gen = torch.Generator()
        if cfg.seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(cfg.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        scale = float(cfg.guidance)
        in_key = self.in_key_mask(cond[2], cfg.leading_tone) if cfg.in_key and len(cond) > 2 else None
        with torch.inference_mode():
            net.reset(len(rows), length)
            logits = net.forward(torch.tensor(rows, dtype=torch.long), 0)
            for step in range(2 * budget + 64 if book.copies else budget):
                if logits.device.type != "cpu":
                    logits = logits.cpu()  # masks and the seeded draw live on the CPU
                if guided:
                    lu = logits[n:]
                    logits = lu + scale * (logits[:n] - lu)
                mask, ends, n_legal = self._step_mask(g, states, book, budget, bar_or_end, cfg.chord_tones,
                                                      in_key, cond[2], cfg.leading_tone)
                if any(ends):
                    logits = self._end_mass(logits, mask, ends)
                ids = sample_ids(logits, mask, cfg.temperature, cfg.top_k, cfg.top_p, gen, n_legal=n_legal)
                self._accept(g, states, ids, book)
                if all(st.done for st in states) or (stop_after is not None and step + 1 >= stop_after):
                    break
                feed = ids + ids if guided else ids
                for r, i in zip(rows, feed):
                    r.append(i)
                if net.pos + 1 > length:  # cache full: keep the controls and the recent half
                    rows = _keep_recent(rows, n_ctrl, length)
                    net.reset(len(rows), length)
                    logits = net.forward(torch.tensor(rows, dtype=torch.long), 0)
                else:
                    logits = net.step(torch.tensor(feed, dtype=torch.long))
        for st in states:
            if not st.done and stop_after is None:  # pragma: no cover - finishing mode makes this unreachable
                raise RuntimeError("generate: token budget ran out before the last bar was complete")
        return book.out

    def _step_mask(self, g: Grammar, states: list[State], book: "_Rows", budget: int,
                   bar_or_end: "torch.Tensor | None", chord_tones: bool, in_key: "torch.Tensor | None" = None,
                   key_id: int = -1, leading_tone: bool = False) -> "tuple[torch.Tensor, list[bool], int]":
        """The legal ids of this step, one row per sequence: the grammar's, kept to the chord
        plan and (chords asked for) the chords' tones where that leaves any, finishing when the
        budget runs low; a row that is copying a section allows EOS only (its id is replaced);
        then kept to the key's scale (``in_key``, :meth:`_chord_scale`) where that leaves any.
        Returns ``(mask [rows, vocab], whether EOS was legal before the scale, per row, the most
        legal ids of a row)``.

        Every piece of a row's mask is a shared, cached tensor (grammar masks per compact state,
        plan, chord-tone and scale masks), so their combination is cached too, by the identity
        of its pieces: a step at batch 1 then costs a few dictionary lookups, not a dozen
        vocabulary-sized tensor operations (docs/benchmarks.md, "Sampling at batch 1")."""
        import torch  # heavy: loaded on first use

        rows = []
        for r, st in enumerate(states):
            if book.queue[r]:  # copying: whatever is drawn is replaced
                m, pm, cm, need = g.eos_only, None, None, False
            else:
                left = budget - book.sampled[r]
                finish = left <= g.finish_needed(st) + 2 * max(len(st.plan) - 1, 0)
                m = g.mask(st, finish)
                sm = g.section_mask(st) if st.sections else None
                if sm is not None:  # a section plan (a form): kept where it leaves any id (finishing may not)
                    m = self._section_combo(m, sm)
                pm = g.plan_mask(st) if st.plan else None
                cm = None
                if st.plan and st.plan[-1][2] < 0 and chord_tones:  # chords asked for: notes on their tones
                    cm = g.chord_tone_mask(st, free_program=min(g.programs) if len(g.programs) > 1 else None)
                need = bool(book.need_bar[r])
            km = None if in_key is None else self._chord_scale(in_key, key_id, leading_tone, st)
            key = (id(m), id(pm), id(cm), need, id(km), id(bar_or_end))
            hit = self._combos.get(key)
            if hit is None:
                if len(self._combos) > 20000:
                    self._combos.clear()
                hit = self._combos[key] = (*self._combine(m, pm, cm, bar_or_end if need else None, km),
                                           (m, pm, cm, km, bar_or_end))  # the pieces stay alive: ids stay theirs
            rows.append(hit)
        if len(rows) == 1:
            return rows[0][0], [rows[0][1]], rows[0][2]
        return torch.cat([h[0] for h in rows]), [h[1] for h in rows], max(h[2] for h in rows)

    def _section_combo(self, m: "torch.Tensor", sm: "torch.Tensor") -> "torch.Tensor":
        """``m & sm`` where that leaves some id legal, else ``m``: cached by the pieces' identity
        like :meth:`_step_mask`'s combinations, so it is a shared tensor too."""
        key = ("section", id(m), id(sm))
        hit = self._combos.get(key)
        if hit is None:
            both = m & sm
            hit = self._combos[key] = (both if bool(both.any()) else m, (m, sm))
        return hit[0]

    @staticmethod
    def _combine(m: "torch.Tensor", pm: "torch.Tensor | None", cm: "torch.Tensor | None",
                 bar_or_end: "torch.Tensor | None", km: "torch.Tensor | None") -> tuple:
        """One row's mask from its pieces, each applied where it leaves some id legal:
        ``(mask [1, vocab], EOS legal before the scale, legal ids)``."""
        if pm is not None and bool((m & pm).any()):
            m = m & pm
        if cm is not None and bool((m & cm).any()):
            m = m & cm
        if bar_or_end is not None and bool((m & bar_or_end).any()):
            m = m & bar_or_end
        ends = bool(m[EOS_ID])
        if km is not None:
            keyed = m & km.view(-1)
            if bool(keyed.any()):  # never leave a row empty
                m = keyed
        m = m.view(1, -1)
        return m, ends, int(m.sum())

    def _chord_scale(self, in_key: "torch.Tensor", key_id: int, leading_tone: bool, st: State) -> "torch.Tensor":
        """``in_key`` itself, or, where chords were asked for and the one in force lies outside
        the key, the scale as that chord alters it (:meth:`in_key_mask`; cached, shared)."""
        if st.chord >= 0 and st.plan and st.plan[-1][2] < 0:
            return self.in_key_mask(key_id, leading_tone, st.chord)
        return in_key

    def chord_notes(self, req: Request, cfg: GenerationConfig) -> list[str]:
        """The note a request gets when chords it asks for lie outside its key's scale (the
        notes follow each such chord while it is in force; see :meth:`in_key_mask`); [] else.

        Example: ``gen.chord_notes(gen.resolve(cfg), cfg)  # ['chords F, C lie outside D major: …']``
        """
        key = key_name(req.key)
        if not req.progression or key is None or not cfg.in_key:
            return []
        scale = scale_of(key, cfg.leading_tone)
        outside = list(dict.fromkeys(c.name for _, _, c in req.progression if not c.pitch_classes <= scale))
        if not outside:
            return []
        many = len(outside) > 1
        return [f"chord{'s' * many} {', '.join(outside)} lie{'' if many else 's'} outside {key}: while "
                f"{'each' if many else 'it'} is in force, the notes follow its tones instead of the key's scale"]

    def _end_mass(self, logits: "torch.Tensor", mask: "torch.Tensor", ends: "Sequence[bool] | None" = None
                  ) -> "torch.Tensor":
        """In the last bar the model's wish to start another bar means "end here": where EOS is
        legal (``mask``, or the rows ``ends`` names) it gets that mass too (else it went to more
        notes crammed into the last beat)."""
        import torch  # heavy: loaded on first use

        ends = mask[:, EOS_ID] if ends is None else torch.tensor(list(ends), dtype=torch.bool)
        if not bool(ends.any()):
            return logits
        bars = logits.index_select(1, self._bar_ids)
        both = torch.logaddexp(logits[:, EOS_ID], torch.logsumexp(bars, dim=1))
        logits = logits.clone()
        logits[:, EOS_ID] = torch.where(ends, both, logits[:, EOS_ID])
        return logits

    def _accept(self, g: Grammar, states: list[State], ids: list[int], book: "_Rows") -> None:
        """Apply the drawn ``ids`` (changed in place where a row is finished or copying): a row
        that opens a returning section starts copying its letter's first section; every id
        advances its row's grammar state and chord plan."""
        out, queue, bar_at, copies = book.out, book.queue, book.bar_at, book.copies
        for r, (st, i) in enumerate(zip(states, ids)):
            if st.done:
                ids[r] = EOS_ID
                continue
            opens = g.vocab.seqs[i][0][0] == BAR
            if copies and opens and not queue[r] and st.bar + 1 in copies:  # a section returns
                src, size = copies[st.bar + 1]
                queue[r] = out[r][bar_at[r][src]:bar_at[r].get(src + size, len(out[r]))]
            if queue[r]:
                i = ids[r] = queue[r].pop(0)
                if g.vocab.seqs[i][0][0] == BAR:
                    bar_at[r][st.bar + 1] = len(out[r])
                g.track(st, g.vocab.seqs[i])
                out[r].append(i)
                if not queue[r]:  # copied: the chords it brought need no plan
                    book.need_bar[r] = True
                    st.plan = tuple(p for p in st.plan if p[0] > st.bar or p[2] < 0)
                continue
            if opens:
                bar_at[r][st.bar + 1] = len(out[r])
                book.need_bar[r] = False
            book.sampled[r] += 1
            if not g.advance(st, g.vocab.seqs[i]):  # pragma: no cover - a bug if it happens
                raise RuntimeError(f"generate: sampled illegal id {i} ({self.tok.id_to_token(i)})")
            if st.plan and i == st.plan[0][2] and st.bar == st.plan[0][0]:
                st.plan = st.plan[1:]
            if st.sections and st.sections[0][1] >= 0 and (st.bar > st.sections[0][0] or (
                    st.bar == st.sections[0][0] and st.phase != BAR)):
                st.sections = st.sections[1:]  # its section written (or passed by finishing mode)
            out[r].append(i)


class _Rows:
    """Per-sequence bookkeeping of one sampling run: the ids written, where each bar opened,
    ids still to copy for a returning section, whether a copy just ended, ids sampled."""

    def __init__(self, n: int, cfg: GenerationConfig, exact: bool = True):
        self.copies = self.copies_of(cfg) if exact else {}
        self.out: list[list[int]] = [[] for _ in range(n)]
        self.bar_at: list[dict[int, int]] = [{} for _ in range(n)]   # bar (1..) → index in out[r] that opened it
        self.queue: list[list[int]] = [[] for _ in range(n)]        # ids still to copy
        self.need_bar = [False] * n   # a copy just ended: the next id opens a bar (or ends the piece)
        self.sampled = [0] * n

    @staticmethod
    def copies_of(cfg: GenerationConfig) -> dict[int, tuple[int, int]]:
        """A form's exact repeats, ``{first bar of a return (1..): (first bar it copies, bars)}``:
        a returning section copies the ids of its letter's first section (all its bars, or all
        but the last with ``vary``); copied ids are fed, not sampled, and cost no budget."""
        return {first + 1: (src + 1, size - int(cfg.vary)) for _, first, size, src in cfg.sections()
                if src is not None and size - int(cfg.vary) > 0}


def _keep_recent(rows: list[list[int]], n_ctrl: int, length: int) -> list[list[int]]:
    """Rows cut to the controls and their most recent part, half of ``length`` in all."""
    keep = length // 2
    return [r[:n_ctrl] + r[-(keep - n_ctrl):] for r in rows]


def sample_ids(logits: "torch.Tensor", mask: "torch.Tensor", temperature: float, top_k: int, top_p: float,
                gen: "torch.Generator", n_legal: int | None = None) -> list[int]:
    """One id per row from grammar-masked logits with temperature, top-k, then top-p.

    Cheap at batch 1: no full sort of the vocabulary (the nucleus is looked for among the best
    64 ids first, and only when those hold less than ``top_p`` of the mass among all legal ids),
    and the draw is an inverse-CDF lookup of one uniform number per row from ``gen``
    (``torch.multinomial`` costs several times more here). ``n_legal``: the most legal ids of
    a row, when the caller knows it (it saves counting them).
    """
    import torch  # heavy: loaded on first use

    x = torch.where(mask, logits, float("-inf"))
    if temperature != 1.0:
        x = x / temperature
    idx = None
    if top_k > 0 or top_p < 1.0:
        k_legal = n_legal if n_legal is not None else int(mask.sum(1).max())
    if top_k > 0:  # top-k first; top-p then works on the renormalised top-k (as transformers does)
        k = min(top_k, k_legal)
        x, idx = x.topk(k, dim=-1)
        probs = torch.softmax(x, dim=-1)
    elif top_p < 1.0:
        probs = None
        lse = torch.logsumexp(x, dim=-1, keepdim=True)
        for k in ((64, k_legal) if k_legal > 64 else (k_legal,)):
            vals, idx = x.topk(k, dim=-1)  # best first
            # probabilities under the whole (legal) distribution, so the nucleus is exact
            probs = (vals - lse).exp_()
            if k == k_legal or bool((probs.sum(-1) >= top_p).all()):
                break
        x = vals
    else:
        probs = torch.softmax(x, dim=-1)
    cum = probs.cumsum(-1)
    if top_p < 1.0:
        probs = probs.masked_fill(cum - probs >= top_p, 0.0)  # keeps at least the best id
        cum = probs.cumsum(-1)
    u = (1.0 - torch.rand((x.shape[0], 1), generator=gen)) * cum[:, -1:]   # in (0, total]
    j = torch.searchsorted(cum, u).clamp_max_(x.shape[1] - 1)
    if idx is not None:
        j = idx.gather(-1, j)
    return j.view(-1).tolist()


def generate_scores(model: Any, tokenizer: "MelodiaTokenizer", cfg: GenerationConfig | None = None,
                    device: str = "cpu", **overrides: Any) -> list["symusic.Score"]:
    """One call from a model and tokenizer to decoded scores.

    Example:
        >>> scores = generate_scores(model, tok, bars=8, mood="calm", key="F major", n=2, seed=1)
    """
    return Generator(model, tokenizer, device=device).generate_scores(cfg, **overrides)
