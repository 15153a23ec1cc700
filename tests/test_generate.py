"""melodia.generate: lean forward = HF logits, grammar = MidiTok-valid, exact bars, seeds, continuation.

The acceptance run: 200 sequences (100 from an untrained tiny Llama, 100 from a briefly trained
one) over the four moods, several seeds, meters and bar counts — every one decodes with zero
MidiTok token errors and has exactly the requested bars in the decoded MIDI.
"""
from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
symusic = pytest.importorskip("symusic")
pytest.importorskip("miditok")
pytest.importorskip("transformers")

from miditok import TokSequence  # noqa: E402
from miditok.utils import get_bars_ticks  # noqa: E402

from melodia.errors import BadInputError  # noqa: E402
from melodia.generate import (  # noqa: E402
    BAR,
    MAX_ONSETS,
    POS,
    GenerationConfig,
    Generator,
    Grammar,
    LeanLlama,
    State,
    Vocab,
    generate_scores,
    resolve_instruments,
)
from melodia.tokenizer import EOS_ID, MelodiaTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from pieces import made_up_piece  # noqa: E402

MOODS = ["happy", "tense", "sad", "calm"]
METERS = ["4/4", "3/4", "6/8", "2/4"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batch-1 decoding of tiny models gains nothing from intra-op threads, and on a shared
    machine a 2-thread OpenMP region can stall for milliseconds per op: keep these tests lean."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meter(i: int) -> tuple[int, int]:
    return [(4, 4), (3, 4), (6, 8), (2, 4)][i % 4]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> MelodiaTokenizer:
    d = tmp_path_factory.mktemp("gen_midi")
    files = []
    for i in range(16):
        p = d / f"p{i:02d}.mid"
        made_up_piece(i, *_meter(i)).dump_midi(str(p))
        files.append(p)
    t = MelodiaTokenizer.new()
    t.train_bpe(files=files, vocab_size=1000)  # MidiTok's base vocabulary alone is 763
    assert t.is_trained and t.base_size > 800
    return t


def _llama(vocab: int, max_len: int = 512, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def untrained(tok):
    return _llama(tok.vocab_size)


@pytest.fixture(scope="module")
def trained(tok):
    """A few dozen plain training steps on the encoded pieces (moods at random)."""
    model = _llama(tok.vocab_size, seed=1)
    rng = random.Random(0)
    seqs = []
    for i in range(16):
        ids = tok.encode_piece(made_up_piece(100 + i, *_meter(i), bars=4), mood=MOODS[i % 4])
        seqs.append(ids[:192])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(40):
        batch = rng.sample(seqs, 4)
        n = max(len(s) for s in batch)
        x = torch.tensor([s + [0] * (n - len(s)) for s in batch])
        labels = torch.tensor([s + [-100] * (n - len(s)) for s in batch])
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 5.0
    return model


def _errors(tok: MelodiaTokenizer, ids) -> float:
    """MidiTok's own token-error rate (0.0 = every token type / position / note is valid), with
    the Position a chord change opens where no note starts left out (count_errors)."""
    if not tok.has_chords:
        seq = TokSequence(ids=tok.strip_controls(ids), are_ids_encoded=True)
        return float(tok.remi.tokens_errors(seq))
    return tok.count_errors(ids)


def _notes(score) -> list[tuple]:
    return sorted((-1 if t.is_drum else t.program, n.pitch, n.time, n.duration)
                  for t in score.tracks for n in t.notes)


# --------------------------------------------------------------------------- lean forward
@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("weights,atol", [("fp32", 1e-4), ("auto", 2e-2)])
def test_lean_forward_matches_hf_logits(tok, trained, weights, atol, jit):
    net = LeanLlama(trained, weights=weights, jit=jit)
    assert net.jit is jit  # on this torch (CI pins 2.13) TorchScript must not fall back silently
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, tok.base_size, (3, 17), generator=g)
    net.reset(3, 32)
    with torch.inference_mode():
        ref = trained(ids).logits
        got = net.forward(ids)
        assert torch.allclose(got, ref[:, -1], atol=atol, rtol=0), (got - ref[:, -1]).abs().max()
        seq = ids
        for _ in range(6):  # decoding steps against a full HF forward of the longer sequence
            nxt = torch.randint(4, tok.base_size, (3,), generator=g)
            seq = torch.cat([seq, nxt[:, None]], 1)
            got = net.step(nxt)
            ref = trained(seq).logits[:, -1]
            assert torch.allclose(got, ref, atol=atol, rtol=0), (got - ref).abs().max()
    assert net.pos == 23


@pytest.mark.parametrize("weights", ["fp32", "auto"])
def test_torchscript_step_gives_the_python_step_logits_exactly(tok, trained, weights):
    """Same operations in the same order: the scripted step changes speed, never the samples."""
    nets = [LeanLlama(trained, weights=weights, jit=j) for j in (True, False)]
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(4, tok.base_size, (2, 9), generator=g)
    with torch.inference_mode():
        for net in nets:
            net.reset(2, 40)
            net.forward(prompt)
        for _ in range(20):
            nxt = torch.randint(4, tok.base_size, (2,), generator=g)
            a, b = (net.step(nxt) for net in nets)
            assert torch.equal(a, b)
    assert torch.equal(nets[0].kc[:, :, :, :29], nets[1].kc[:, :, :, :29])


# --------------------------------------------------------------------------- grammar
def _opening(meter: tuple[int, int], vocab: Vocab) -> tuple:
    return (frozenset(["Bar_None"]), frozenset([f"TimeSig_{meter[0]}/{meter[1]}"]),
            frozenset(["Position_0"]), frozenset(vocab.tempos))


@pytest.mark.parametrize("meter,programs", [((4, 4), (0, 1)), ((6, 8), (0,)), ((3, 4), (0, 33, -1))])
def test_fast_masks_equal_reference_rules(tok, meter, programs):
    """The cached array masks allow exactly the ids the token-by-token rules allow."""
    vocab = Vocab(tok, tok.vocab_size)
    g = Grammar(vocab, meter, frozenset(programs))
    rng = random.Random(sum(meter))
    checked = 0
    for walk in range(4):
        chords = walk % 2 == 1  # stay on positions: chords up to the MAX_ONSETS cap
        st = State(total=1 + walk % 3, forced=_opening(meter, vocab))  # one grammar, any bar count
        while not st.done:
            m = g.mask(st)
            if not st.forced and (rng.random() < 0.4 or st.here):
                ref = torch.tensor([g.legal(st, i) for i in range(vocab.size)])
                assert torch.equal(m, ref), [(i, tok.id_to_token(i)) for i in (m != ref).nonzero().view(-1).tolist()[:5]]
                checked += 1
            legal = m.nonzero().view(-1).tolist()
            assert legal, st
            if chords:
                stay = [i for i in legal if vocab.seqs[i][0][0] not in (BAR, POS) and i != EOS_ID]
                i = rng.choice(stay or legal)
            else:
                i = rng.choice(legal)
            assert g.advance(st, vocab.seqs[i])
            if chords:
                assert all(len(p) <= MAX_ONSETS + 8 for p in st.here.values())
    assert checked > 40


def test_finishing_mode_only_allows_legal_ids(tok):
    vocab = Vocab(tok, tok.vocab_size)
    g = Grammar(vocab, (4, 4), frozenset((0, 1)))
    rng = random.Random(3)
    st = State(total=4, forced=_opening((4, 4), vocab))
    steps = 0
    while not st.done:
        m = g.mask(st, finish=steps > 12)
        legal = m.nonzero().view(-1).tolist()
        assert legal and all(g.legal(st, i) for i in legal)
        assert g.advance(st, vocab.seqs[rng.choice(legal)])
        steps += 1
    assert steps <= 12 + 10 + 2 * 4 + 4  # the finishing bound: note, empty bars, one note, EOS


# --------------------------------------------------------------------------- acceptance
def _check_sequences(tok, seqs, bars: int, meter: str, programs: set[int]) -> None:
    num, den = (int(x) for x in meter.split("/"))
    for ids in seqs:
        assert ids[-1] == EOS_ID
        assert _errors(tok, ids) == 0.0
        score = tok.decode(ids)
        assert len(get_bars_ticks(score)) == bars, (meter, bars, len(get_bars_ticks(score)))
        ts = score.time_signatures
        assert (ts[0].numerator, ts[0].denominator) == (num, den)
        assert {t.program for t in score.tracks if t.notes} <= programs
        assert score.note_num() > 0


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_acceptance_100_sequences_each(tok, which, request):
    """100 sequences per model (200 in all): 4 moods x seeds x 4 meters, 1-4 bars."""
    model = request.getfixturevalue(which)
    gen = Generator(model, tok)
    count = 0
    for k in range(20):
        mood, meter = MOODS[k % 4], METERS[(k // 4) % 4]
        bars = 1 + k % 4
        cfg = GenerationConfig(bars=bars, mood=mood, meter=meter, n=5, seed=1000 * k + 7,
                               temperature=1.0 + 0.1 * (k % 3), top_p=0.95 if k % 2 else 1.0,
                               top_k=0 if k % 3 else 40, max_tokens=60 + 50 * bars)
        seqs = gen.generate(cfg)
        assert len(seqs) == 5
        _check_sequences(tok, seqs, bars, meter, {0, 1})
        count += len(seqs)
    assert count == 100
    assert tok.count_errors(seqs[0]) == 0.0


def test_count_errors_sees_a_broken_sequence(tok, untrained):
    """The check above is not vacuous: a sequence with a dropped token has errors."""
    ids = Generator(untrained, tok).generate(GenerationConfig(bars=2, seed=3))[0]
    music = tok.strip_controls(ids)
    base = [t for i in music for t in tok.base_tokens(i)]
    k = base.index(next(t for t in base if t.startswith("Velocity_")))
    broken = base[:k] + base[k + 1:]  # Pitch followed by Duration
    seq = TokSequence(tokens=broken)
    tok.remi.complete_sequence(seq)
    assert tok.remi.tokens_errors(seq) > 0


def test_same_seed_same_bytes_different_seed_different_notes(tok, trained):
    gen = Generator(trained, tok)
    cfg = GenerationConfig(bars=4, mood="calm", key="F major", tempo=80, seed=11, n=2)
    a = [s.dumps_midi() for s in gen.generate_scores(cfg)]
    b = [s.dumps_midi() for s in Generator(trained, tok).generate_scores(cfg)]
    assert a == b
    c = gen.generate_scores(cfg, seed=12)
    assert _notes(c[0]) != _notes(symusic.Score.from_midi(a[0]))
    assert a[0] != a[1]  # the n variations of one call differ too


def test_guidance_valence_arousal_instruments_and_tempo(tok, trained):
    gen = Generator(trained, tok)
    cfg = GenerationConfig(bars=3, valence=-0.5, arousal=0.8, guidance=2.5, n=3, seed=5,
                           instruments=["flute", "bass"], tempo=92, meter="3/4")
    seqs = gen.generate(cfg)
    assert seqs[0][1] == tok.mood_id("tense")
    _check_sequences(tok, seqs, 3, "3/4", {73, 33})
    score = tok.decode(seqs[0])
    assert abs(score.tempos[0].qpm - 92) / 92 < 0.05
    assert seqs == gen.generate(cfg)  # guided sampling is seeded too
    drums = gen.generate(GenerationConfig(bars=2, instruments=["drums", "piano"], seed=2, n=2))
    for ids in drums:
        assert _errors(tok, ids) == 0.0
        assert len(get_bars_ticks(tok.decode(ids))) == 2


def test_a_models_tempo_unknown_token_is_left_out_of_bands_and_stepped_over(tok, untrained, monkeypatch):
    """A model may name the Tempo token its tempo-less training files sat at (120 qpm: the
    shipped model's "tempo_unknown"): a mood's band offers the bins around it and falls back to
    it only when it is all there is, and an explicit tempo there conditions on the nearest other
    bin. A model that names none gets the plain nearest token and the whole band."""
    from melodia.music import moods

    plain = Generator(untrained, tok)
    unknown = plain.vocab.tempo_token(120)
    gen = Generator(untrained, tok, tempo_unknown=unknown)
    q = gen.vocab.tempos[unknown]
    for mood in ("tense", "happy"):
        lo, hi = moods.MOOD_TEMPO_BANDS[mood]
        assert lo <= q <= hi  # the bin is inside both fast bands...
        offered = gen.prepare(GenerationConfig(mood=mood, bars=2))[3][0].forced[3]
        assert unknown not in offered and offered  # ...and never offered
        assert all(lo <= gen.vocab.tempos[t] <= hi for t in offered)
        assert unknown in plain.prepare(GenerationConfig(mood=mood, bars=2))[3][0].forced[3]
        for ids in gen.generate(GenerationConfig(mood=mood, bars=2, n=4, seed=1)):
            assert tok.decode(ids).tempos[0].qpm != pytest.approx(q)
    # an explicit 120: the nearest other bin for the model, the plain nearest one otherwise
    neighbour = gen.tempo_for_model(120)
    assert neighbour != unknown and abs(math.log(gen.vocab.tempos[neighbour] / 120)) < 0.1
    assert gen.prepare(GenerationConfig(mood="tense", bars=2, tempo=120))[3][0].forced[3] == frozenset([neighbour])
    assert plain.prepare(GenerationConfig(mood="tense", bars=2, tempo=120))[3][0].forced[3] == frozenset([unknown])
    assert gen.tempo_for_model(90) == plain.tempo_for_model(90)  # other tempos as before
    monkeypatch.setitem(moods.MOOD_TEMPO_BANDS, "tense", (q - 0.1, q + 0.1))
    assert gen.prepare(GenerationConfig(mood="tense", bars=2))[3][0].forced[3] == frozenset([unknown])
    from melodia.errors import BadModelError

    with pytest.raises(BadModelError, match="Tempo_7"):
        Generator(untrained, tok, tempo_unknown="Tempo_7")


def test_a_prompt_at_the_tempo_unknown_tempo_is_read_at_its_neighbour(tok, untrained):
    gen = Generator(untrained, tok, tempo_unknown=Generator(untrained, tok).vocab.tempo_token(120))
    seen = []
    real = gen._sample
    gen._sample = lambda g, cond, *a, **k: seen.append(list(cond)) or real(g, cond, *a, **k)
    clip = made_up_piece(3, 4, 4)
    clip.tempos.clear()
    clip.tempos.append(symusic.Tempo(0, qpm=120.0))
    out = gen.continue_from(clip, bars=1, cfg=GenerationConfig(seed=2))
    tempo_ids = {i for t, i in tok.remi.vocab.items() if t.startswith("Tempo_")}
    read = [t for i in seen[0] if i < tok.base_size for t in tok.base_tokens(i) if t.startswith("Tempo_")]
    assert read and gen.tempo_unknown not in read and gen.tempo_for_model(120) in read
    assert tempo_ids and out[0].tempos[0].qpm == pytest.approx(120.0, abs=0.01)  # the piece keeps its tempo


def test_generate_scores_helper_and_tags_free_prefix(tok, untrained):
    scores = generate_scores(untrained, tok, bars=2, mood="joyful", key="A minor", seed=4)
    assert len(scores) == 1 and len(get_bars_ticks(scores[0])) == 2
    ids = Generator(untrained, tok).generate(bars=1, mood="sad", key="Dm", seed=1)[0]
    assert ids[:3] == tok.controls_prefix("sad", "D minor")


def test_long_piece_slides_the_cache_window(tok):
    model = _llama(tok.vocab_size, max_len=64, seed=3)  # forces several re-prefills
    gen = Generator(model, tok)
    seqs = gen.generate(GenerationConfig(bars=6, seed=9, n=2, max_tokens=400))
    assert max(len(s) for s in seqs) > 64
    _check_sequences(tok, seqs, 6, "4/4", {0, 1})


def test_smallest_budget_still_ends_exactly(tok, untrained):
    cfg = GenerationConfig(bars=5, seed=1, n=4)
    cfg.max_tokens = cfg.min_tokens()
    seqs = Generator(untrained, tok).generate(cfg)
    assert all(len(s) - 3 <= cfg.max_tokens for s in seqs)
    _check_sequences(tok, seqs, 5, "4/4", {0, 1})


# --------------------------------------------------------------------------- continuation
@pytest.mark.parametrize("meter", [(4, 4), (3, 4), (6, 8)])
def test_continuation_keeps_prompt_and_adds_exact_bars(tok, trained, meter):
    gen = Generator(trained, tok)
    prompt = made_up_piece(77, *meter, bars=6)
    n_prompt = len(get_bars_ticks(prompt))
    cfg = GenerationConfig(n=2, seed=3, mood="tense")
    outs = gen.continue_from(prompt, bars=3, context_bars=2, cfg=cfg)
    for out in outs:
        assert out.ticks_per_quarter == prompt.ticks_per_quarter
        assert set(_notes(prompt)) <= set(_notes(out))  # every prompt note, unchanged
        assert len(get_bars_ticks(out)) == n_prompt + 3
        bar_len = prompt.ticks_per_quarter * 4 * meter[0] // meter[1]
        new = [n for n in _notes(out) if n[2] >= n_prompt * bar_len]
        assert new and len(_notes(out)) == len(_notes(prompt)) + len(new)
    alone = gen.continue_from(prompt, bars=3, context_bars=2, cfg=cfg, include_prompt=False)
    assert len(alone) == 2
    for a, out in zip(alone, outs):
        assert len(get_bars_ticks(a)) == 3
        shift = n_prompt * prompt.ticks_per_quarter * 4 * meter[0] // meter[1]
        assert sorted((p, pi, t + shift, d) for p, pi, t, d in _notes(a)) == \
            [n for n in _notes(out) if n[2] >= shift]


def test_continuation_from_a_file_with_a_sustained_ending(tok, untrained, tmp_path):
    prompt = made_up_piece(5, 4, 4, bars=3)
    prompt.tracks[1].notes.append(symusic.Note(3 * 1920 - 480, 1920, 40, 80))  # rings into bar 4
    path = tmp_path / "clip.mid"
    prompt.dump_midi(str(path))
    n_prompt = len(get_bars_ticks(prompt))
    assert n_prompt == 4
    out = Generator(untrained, tok).continue_from(str(path), bars=2, context_bars=8,
                                                  cfg=GenerationConfig(seed=2))[0]
    assert len(get_bars_ticks(out)) == n_prompt + 2
    assert set(_notes(symusic.Score(str(path)))) <= set(_notes(out))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("field,value", [
    ("bars", 0), ("bars", 65), ("n", 0), ("n", 17), ("mood", "grumpy"), ("meter", "7/9"),
    ("meter", "11/4"), ("instruments", ["kazoo"]), ("temperature", 0), ("temperature", -1.0),
    ("top_p", 0.0), ("tempo", 5), ("valence", 2.0), ("key", "H major"),
])
def test_bad_parameters_name_the_value(tok, untrained, field, value):
    gen = Generator(untrained, tok)
    kw = {field: value}
    if field == "valence":
        kw["arousal"] = 0.0
    with pytest.raises(BadInputError) as e:
        gen.generate(GenerationConfig(**kw))
    assert str(value).strip("[]'") in str(e.value)


def test_unknown_setting_is_named(tok, untrained):
    with pytest.raises(BadInputError, match="colour"):
        Generator(untrained, tok).generate(bars=2, colour="blue")


def test_bpe_ids_never_cross_a_bar_line(tok):
    """MidiTok encodes bar by bar: a Bar can only open an id (the grammar would cope anyway)."""
    for i in range(4, tok.base_size):
        assert "Bar_None" not in tok.base_tokens(i)[1:]


def test_bad_continuation_arguments(tok, untrained):
    gen = Generator(untrained, tok)
    with pytest.raises(BadInputError, match="context_bars"):
        gen.continue_from(made_up_piece(1, 4, 4), bars=2, context_bars=0)
    with pytest.raises(BadInputError, match="bars 99"):
        gen.continue_from(made_up_piece(1, 4, 4), bars=99)


def test_resolve_instruments():
    assert resolve_instruments(None) == (0, 1)
    assert resolve_instruments(["piano", "piano", "bass"]) == (0, 1, 33)
    assert resolve_instruments("melody + accompaniment") == (0, 1)
    assert resolve_instruments([40, "Strings", "drums"]) == (40, 48, -1)
    with pytest.raises(BadInputError, match="128"):
        resolve_instruments([128])
    assert resolve_instruments(None, default=(0, 1, 2)) == (0, 1, 2)
    assert resolve_instruments(["default", "bass"], default=(0, 2)) == (0, 2, 33)


def test_a_model_names_its_own_default_instruments(tok, trained):
    """melodia.json's default_programs: what plays when a request names no instruments."""
    from melodia.errors import BadModelError

    gen = Generator(trained, tok, default_programs=(0, 2))
    for sc in gen.generate_scores(GenerationConfig(bars=4, n=4, seed=5, mood="happy")):
        programs = {t.program for t in sc.tracks if t.notes}
        assert programs and programs <= {0, 2}
    asked = gen.generate_scores(GenerationConfig(bars=4, n=2, seed=5, instruments=["bass"]))
    assert {t.program for sc in asked for t in sc.tracks if t.notes} == {33}
    with pytest.raises(BadModelError, match="default_programs"):
        Generator(trained, tok, default_programs=(0, 200))


# --------------------------------------------------------------------------- sampler
def test_sampler_follows_the_masked_distribution():
    from melodia.generate import sample_ids

    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0, 0.5, 9.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, True, True, False, False]])
    draws = [sample_ids(logits, mask, 1.0, 0, 1.0, g)[0] for _ in range(4000)]
    assert set(draws) <= {0, 1, 2, 3, 4, 5}  # never a masked id, however likely
    want = torch.softmax(logits[0, :6], 0)
    got = torch.bincount(torch.tensor(draws), minlength=6)[:6].float() / len(draws)
    assert torch.allclose(got, want, atol=0.03)
    # top-p: the nucleus is {4} at 0.6 (4 holds 0.605 of the legal mass), {4, 0} at 0.7
    assert {sample_ids(logits, mask, 1.0, 0, 0.6, g)[0] for _ in range(50)} == {4}
    assert {sample_ids(logits, mask, 1.0, 0, 0.7, g)[0] for _ in range(300)} == {4, 0}
    assert {sample_ids(logits, mask, 1.0, 2, 1.0, g)[0] for _ in range(300)} == {4, 0}
    assert {sample_ids(logits, mask, 1.0, 1, 1.0, g)[0] for _ in range(20)} == {4}
    # a flat distribution over 300 legal ids: top-p needs more than the first 64 candidates
    flat, m2 = torch.zeros(2, 400), torch.zeros(2, 400, dtype=torch.bool)
    m2[:, 50:350] = True
    ids = [i for _ in range(200) for i in sample_ids(flat, m2, 0.7, 0, 0.9, g)]
    assert all(50 <= i < 350 for i in ids) and len(set(ids)) > 150


def test_notes_stay_in_the_key_unless_chromatic(tiny_model_dir):
    from melodia.api import Composer

    c = Composer.load(tiny_model_dir)
    scale = {9, 11, 0, 2, 4, 5, 7}  # A natural minor (no G#: the corpus's minor music barely uses it)
    for seed in range(3):
        p = c.generate(mood="sad", key="A minor", bars=4, n=2, seed=seed)
        for piece in p:
            assert {n.pitch % 12 for n in piece.notes if n.program >= 0} <= scale
    gen = c._gen  # the mask itself: natural minor, so no id that holds a G# is legal in A minor
    mask = gen.in_key_mask(gen.tok.key_id("A minor"))
    sharp7 = [i for i in range(4, gen.tok.base_size)
              if any(t.startswith("Pitch_") and int(t[6:]) % 12 == 8 for t in gen.tok.base_tokens(i))]
    natural = [i for i in range(4, gen.tok.base_size)
               if any(t.startswith("Pitch_") and int(t[6:]) % 12 == 7 for t in gen.tok.base_tokens(i))]
    assert sharp7 and not mask[sharp7].any() and mask[natural].any()
    wild = [n.pitch % 12 for s in range(4) for piece in c.generate(mood="sad", key="A minor", bars=4, n=2, seed=s,
                                                                     in_key=False) for n in piece.notes]
    assert set(wild) - scale  # the untrained-ish tiny model does wander when allowed
    lead = gen.in_key_mask(gen.tok.key_id("A minor"), leading_tone=True)  # the raised 7th back on request
    assert lead[sharp7].any() and lead[natural].any() and not (mask & ~lead).any()
    assert bool((gen.in_key_mask(gen.tok.key_id("C major"), True) == gen.in_key_mask(gen.tok.key_id("C major"))).all())
    with_lead = [n.pitch % 12 for s in range(6) for piece in c.generate(mood="sad", key="A minor", bars=4, n=2,
                                                                          seed=s, leading_tone=True)
                 for n in piece.notes if n.program >= 0]
    assert set(with_lead) <= scale | {8}
    seen = []  # the switch reaches the sampler's mask from both entry points
    real = gen.in_key_mask
    gen.in_key_mask = lambda key_id, leading_tone=False: seen.append(leading_tone) or real(key_id, leading_tone)
    c.generate(mood="sad", key="A minor", bars=1, leading_tone=True)
    c.continue_from(p[0], bars=1, key="A minor", leading_tone=True)
    c.generate(mood="sad", key="A minor", bars=1)
    del gen.in_key_mask
    assert seen == [True, True, False]
    cont = c.continue_from(p[0], bars=2, key="A minor", seed=1, include_prompt=False)  # continuations keep the scale
    assert {n.pitch % 12 for n in cont[0].notes if n.program >= 0} <= scale
    with pytest.raises(BadInputError, match="leading_tone"):
        c.generate(mood="sad", bars=2, leading_tone="yes")


def test_in_the_last_bar_a_wish_for_another_bar_ends_the_piece(tok, trained):
    """A model that always wants the next bar: in the last bar that wish becomes EOS, so the piece
    ends as soon as EOS is legal instead of filling the bar with notes until EOS is all that is left."""
    from melodia.tokenizer import EOS_ID

    gen = Generator(trained, tok)
    net = gen.net
    step, forward = net.step, net.forward

    def bar_loving(logits):
        logits = torch.zeros_like(logits)
        logits[:, gen._bar_ids] = 30.0
        return logits

    net.step = lambda ids: bar_loving(step(ids))
    net.forward = lambda ids, start=0: bar_loving(forward(ids, start))
    cfg = GenerationConfig(bars=3, n=8, seed=2, mood="calm")
    rows = gen.generate(cfg)
    g, cond, _, states = gen.prepare(cfg)
    for ids, st in zip(rows, states):
        assert ids[:len(cond)] == cond and ids[-1] == EOS_ID
        for k, i in enumerate(ids[len(cond):]):
            if g.legal(st, EOS_ID):  # the first moment the piece may end
                assert i == EOS_ID and k == len(ids) - len(cond) - 1
                break
            assert g.advance(st, g.vocab.seqs[i])
        assert st.bar == 3


# --------------------------------------------------------------------------- key-normalised models
def _pitched(score) -> list[tuple[int, int, int]]:
    return sorted((n.time, n.pitch, n.duration) for tr in score.tracks if not tr.is_drum for n in tr.notes)


def test_key_normalised_model_reads_c_and_the_notes_land_in_the_key(tok, trained):
    """A key-normalised tokenizer: the model sees KEY_C_minor for "E minor" and writes on C; the
    ids it returns name E minor, and decoding moves every note up 4 semitones into E minor."""
    from dataclasses import replace

    ntok = replace(tok, key_normalised=True)
    norm, plain = Generator(trained, ntok), Generator(trained, tok)
    cfg = GenerationConfig(bars=3, mood="sad", key="E minor", n=2, seed=5)
    assert norm.controls(norm.resolve(cfg))[0][2] == ntok.key_id("C minor")
    e_minor = {(4 + s) % 12 for s in (0, 2, 3, 5, 7, 8, 10, 11)}
    as_c = plain.generate(replace(cfg, key="C minor"))  # the very same model input
    for ids, c_ids in zip(norm.generate(cfg), as_c):
        assert ids[2] == ntok.key_id("E minor") and ids[3:] == c_ids[3:]
        got, written = _pitched(ntok.decode(ids)), _pitched(tok.decode(c_ids))
        assert got and {p % 12 for _, p, _ in got} <= e_minor
        assert got == sorted((t, p + 4, d) for t, p, d in written)


def test_key_normalised_continuation_moves_the_prompt_to_c_and_back(tok, trained):
    from dataclasses import replace

    from melodia.music.keys import estimate_clip_key, key_in_c, tonic_shift
    from melodia.tokenizer import transpose_score

    ntok = replace(tok, key_normalised=True)
    prompt = made_up_piece(4, 4, 4, bars=4)  # natural minor on E
    key = estimate_clip_key(prompt).name  # the key continue_from reads a clip in
    shift = tonic_shift(key)
    assert shift != 0
    cfg = GenerationConfig(n=2, seed=9, mood="tense")
    got = Generator(trained, ntok).continue_from(prompt, bars=2, cfg=cfg, include_prompt=False)
    by_hand = Generator(trained, tok).continue_from(transpose_score(prompt, -shift), bars=2,
                                                    cfg=replace(cfg, key=key_in_c(key)), include_prompt=False)
    for a, b in zip(got, by_hand):
        assert _pitched(a) and _pitched(a) == sorted((t, p + shift, d) for t, p, d in _pitched(b))
