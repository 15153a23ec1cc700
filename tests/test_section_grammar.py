"""Section tokens in generation: the grammar lets a model trained with sections write a
``SECTION_`` token right after a ``Bar`` (once a bar, never in finishing mode), and a form asks
for its sections through them (``repeat="sections"``) or copies its returns (``"exact"``).

The session's tiny model is trained on shards that include POP909 songs with phrase labels, so
its tokenizer has the nine ``SECTION_`` ids; the shipped model has none, and its form outputs
stay the goldens (tests/test_golden.py, cases ``form`` and ``form-vary``).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from melodia.errors import BadInputError  # noqa: E402
from melodia.generate import BAR, GenerationConfig, State  # noqa: E402
from melodia.generate.grammar import PITCH, SECTION, TSIG  # noqa: E402
from melodia.sections import read_section_markers  # noqa: E402
from melodia.tokenizer import EOS_ID  # noqa: E402


@pytest.fixture(scope="module")
def gen(composer, one_torch_thread):
    assert composer.tokenizer.has_sections, "the tiny model's shards carry POP909 phrase labels"
    return composer._gen


def _bar_alone(gen) -> int:
    return next(i for i, s in enumerate(gen.vocab.seqs) if [t for t, _, _ in s] == [BAR])


def _sections(ids: torch.Tensor | list, gen) -> set[int]:
    sec = set(gen.tok.section_ids())
    return {int(i) for i in (ids.nonzero().view(-1).tolist() if isinstance(ids, torch.Tensor) else ids)} & sec


def _bars(row: list[int], gen) -> list[list[int]]:
    """The music ids of a row (no EOS) cut before every id that opens a bar."""
    out: list[list[int]] = []
    for i in row:
        if i == EOS_ID:
            break
        s = gen.vocab.seqs[i]
        if s and s[0][0] == BAR:
            out.append([])
        if out:
            out[-1].append(i)
    return out


def test_a_section_id_may_follow_a_bar_and_nothing_else(gen):
    g = gen.grammar((4, 4), gen.default_programs)
    sec = sorted(gen.tok.section_ids())
    assert len(sec) == 9 and gen.vocab.section_ids == sec
    bar, bar_ids = _bar_alone(gen), {i for i, s in enumerate(gen.vocab.seqs) if s and s[0][0] == BAR}
    # the forced opening: Bar, an optional section, then TimeSig
    st = gen.prepare(GenerationConfig(bars=4, seed=0))[3][0]
    assert not _sections(g.mask(st), gen)
    assert g.advance(st, gen.vocab.seqs[bar])
    m = g.mask(st)
    assert _sections(m, gen) == set(sec) and all(g.legal(st, i) for i in sec)
    assert any(gen.vocab.seqs[i][0][0] == TSIG for i in m.nonzero().view(-1).tolist())
    assert g.advance(st, gen.vocab.seqs[sec[0]]) and st.phase == SECTION
    m = g.mask(st)  # at most one a bar: after it what follows a Bar
    assert not _sections(m, gen) and m.any()
    assert all(gen.vocab.seqs[i][0][0] == TSIG for i in m.nonzero().view(-1).tolist())
    # inside the piece: the fast masks agree with the reference rules, a section only after Bar
    seen_bar = False
    for _ in range(400):
        m = g.mask(st)
        ref = torch.tensor([g.legal(st, i) for i in range(gen.vocab.size)])
        assert torch.equal(m, ref), f"fast and reference masks differ in phase {st.phase}"
        if st.phase == BAR:
            seen_bar = True
            assert _sections(m, gen) == set(sec)
            assert not _sections(g.mask(st, finish=True), gen), "finishing mode writes no section"
        else:
            assert not _sections(m, gen), f"a section id legal in phase {st.phase}"
        legal = m.nonzero().view(-1).tolist()
        if st.phase == BAR:
            nxt = sec[1]
        elif bar in legal and st.bar < st.total:  # a plain Bar when one is legal, so bars go by
            nxt = bar
        else:
            nxt = next(i for i in legal if i not in bar_ids)
        assert g.advance(st, gen.vocab.seqs[nxt])
        if st.done:
            break
    assert seen_bar and st.done
    # a prompt's (or a copy's) section ids are followed: what comes next is what follows a Bar
    st2 = State(total=4)
    for i in (bar, sec[0]):
        g.track(st2, gen.vocab.seqs[i])
    assert (st2.phase, st2.bar) == (SECTION, 1) and not _sections(g.mask(st2), gen)


def test_form_asks_for_its_sections_through_section_tokens(gen):
    cfg = GenerationConfig(bars=8, form="AABA", n=2, seed=3)
    assert cfg.repeat_mode(True) == "sections"
    ids = gen.section_plan(cfg)
    a, b = (next(i for i, s in gen.tok.section_ids().items() if s == x) for x in "AB")
    assert ids == ((1, a), (3, a), (5, b), (7, a), (9, -1))
    rows = gen.generate(cfg)
    for row in rows:
        # the sections at the first bar of each section of the form (2 bars each), and no others
        assert gen.tok.sections(row) == [(0.0, "A"), (8.0, "A"), (16.0, "B"), (24.0, "A")]
        bars = _bars(row, gen)
        assert len(bars) == 8 and [bars[k][1] for k in (0, 2, 4, 6)] == [a, a, b, a]
        assert read_section_markers(gen.tok.decode(row)) == [(0, "A"), (2, "A"), (4, "B"), (6, "A")]
    # written, not copied: the returning As are the model's own bars
    assert any(_bars(row, gen)[2:4] != _bars(row, gen)[0:2] or _bars(row, gen)[6:8] != _bars(row, gen)[0:2]
               for row in rows)


def test_repeat_exact_copies_the_ids_sections_and_all(gen):
    cfg = GenerationConfig(bars=8, form="AABA", n=2, seed=3, repeat="exact")
    a, b = (next(i for i, s in gen.tok.section_ids().items() if s == x) for x in "AB")
    assert gen.section_plan(cfg) == ((1, a), (5, b), (9, -1))  # the copies bring theirs
    for row in gen.generate(cfg):
        bars = _bars(row, gen)
        assert bars[2:4] == bars[0:2] and bars[6] == bars[0] and bars[4:6] != bars[0:2]
        # the piece's last bar must hold a note (so the MIDI keeps all 8 bars): a copy of a bar
        # without one is completed by a sampled note after the copied ids, and only then
        assert bars[7][:len(bars[1])] == bars[1]
        if bars[7] != bars[1]:
            assert not any(t == PITCH for i in bars[1] for t, _, _ in gen.vocab.seqs[i])
        assert gen.tok.sections(row) == [(0.0, "A"), (8.0, "A"), (16.0, "B"), (24.0, "A")]


def test_composer_and_cli_take_repeat(composer, tiny_model_dir, tmp_path, one_torch_thread):
    from melodia import Piece
    from melodia.cli import main

    def bars_of(p, first, count):
        lo, hi = (first - 1) * 4.0, (first - 1 + count) * 4.0
        return sorted((round(n.start_beat - lo, 4), n.pitch, n.program) for n in p.notes if lo <= n.start_beat < hi)

    exact = composer.generate(bars=8, form="ABAB", seed=5, repeat="exact")[0]
    assert bars_of(exact, 5, 2) == bars_of(exact, 1, 2)
    # vary means an exact repeat with its last bar anew: the default repeat follows it
    varied = composer.generate(bars=8, form="AB", seed=5, vary=True)[0]
    assert varied.bars == 8
    with pytest.raises(BadInputError, match="vary"):
        composer.generate(bars=8, form="AB", vary=True, repeat="sections")
    with pytest.raises(BadInputError, match="repeat 'again'"):
        composer.generate(bars=8, form="AB", repeat="again")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(tiny_model_dir), "--bars", "8", "--form", "AABA", "--repeat",
                 "exact", "--seed", "2", "--out", str(out)]) == 0
    p = Piece.from_midi(out / "any-2.mid")
    assert bars_of(p, 3, 2) == bars_of(p, 1, 2)
    assert main(["generate", "--model", str(tiny_model_dir), "--bars", "8", "--repeat", "exact",
                 "--out", str(out)]) == 2


def test_sections_of_a_model_without_them_is_one_clear_error():
    cfg = GenerationConfig(bars=8, form="AB", repeat="sections")
    cfg.validate()
    with pytest.raises(BadInputError, match="no section tokens"):
        cfg.repeat_mode(False)
    assert GenerationConfig(bars=8, form="AB").repeat_mode(False) == "exact"  # the shipped model: unchanged
    assert GenerationConfig(bars=8).repeat_mode(True) is None
    with pytest.raises(BadInputError, match="repeat applies to a form"):
        GenerationConfig(bars=8, repeat="exact").validate()


def test_letters_that_share_a_section_token_are_refused(gen):
    with pytest.raises(BadInputError, match="E and D would both be section D"):
        gen.section_plan(GenerationConfig(bars=5, form="ABCDE"))
    assert len(gen.section_plan(GenerationConfig(bars=4, form="ABXE"))) == 5  # E alone is section D


def test_a_prompts_section_markers_are_read_as_section_tokens(gen):
    row = gen.generate(GenerationConfig(bars=4, form="AB", seed=1))[0]
    score = gen.tok.decode(row)
    assert read_section_markers(score) == [(0, "A"), (2, "B")]
    bars = gen._read_prompt(score, GenerationConfig(bars=2), "continue_from")[4]
    sec = gen.tok.section_ids()
    assert [[sec[int(i)] for i in b if int(i) in sec] for b in bars[:4]] == [["A"], [], ["B"], []]
    # and the grammar follows them: the new bars continue after them
    out = gen.continue_from(score, bars=2, cfg=GenerationConfig(seed=2), include_prompt=False)
    assert len(out) == 1 and out[0].note_num() > 0
