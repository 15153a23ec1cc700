"""scripts/daw/reaper_melodia.py against a small fake of the RPR_* functions it calls.

The fake keeps REAPER's conventions that matter here: pointers are strings like
``(MediaTrack*)0x...`` (a null one is all zeros), functions with pointer arguments return a
tuple of the return value and every argument (``RPR_CreateNewMIDIItemInProj``,
``RPR_GetUserInputs``, ``RPR_TimeMap_GetTimeSigAtTime``), MIDI positions are PPQ (960 per
quarter note) counted from the item's start, and the project has a tempo and meter of its own.
The script then runs end to end against a real ``melodia serve`` on a free port.
"""
from __future__ import annotations

import ast

import pytest
from conftest import SCRIPTS, load_script

SCRIPT = SCRIPTS / "daw" / "reaper_melodia.py"
NULL = "0x0000000000000000"


def load_reaper_script():
    return load_script(SCRIPT, "reaper_melodia_under_test")  # must not run main() when imported


class FakeReaper:
    """REAPER with one tempo and meter, an edit cursor, tracks, and MIDI items that record notes."""

    PPQ = 960

    def __init__(self, bpm=90.0, meter=(4, 4), cursor_s=4.0, selected_track=True, answers=None, ok=1):
        self.bpm, self.meter, self.cursor_s = bpm, meter, cursor_s
        self.tracks = ["(MediaTrack*)0x00000000000000A1"] if selected_track else []
        self.selected = self.tracks[0] if selected_track else None
        self.items: list[dict] = []
        self.messages: list[str] = []
        self.undo: list[str] = []
        self.undo_open = 0
        self.ext: dict = {}
        self.answers, self.ok = answers, ok
        self.track_names: dict = {}
        self.calls: list[str] = []

    # time map (constant tempo)
    def RPR_GetCursorPosition(self):
        return self.cursor_s

    def RPR_TimeMap_GetTimeSigAtTime(self, proj, time, num, den, tempo):
        return (proj, time, self.meter[0], self.meter[1], self.bpm)

    def RPR_TimeMap2_timeToQN(self, proj, t):
        return t * self.bpm / 60.0

    def RPR_TimeMap2_QNToTime(self, proj, qn):
        return qn * 60.0 / self.bpm

    # tracks
    def RPR_GetSelectedTrack(self, proj, idx):
        return self.selected if self.selected else "(MediaTrack*)" + NULL

    def RPR_CountTracks(self, proj):
        return len(self.tracks)

    def RPR_InsertTrackAtIndex(self, idx, defaults):
        self.tracks.insert(idx, "(MediaTrack*)0x00000000000000B%d" % idx)

    def RPR_GetTrack(self, proj, idx):
        return self.tracks[idx]

    def RPR_GetSetMediaTrackInfo_String(self, track, parm, value, set_new):
        if set_new:
            self.track_names[track] = value
        return (1, track, parm, value, set_new)

    # items and MIDI
    def RPR_CreateNewMIDIItemInProj(self, track, start, end, qn_in):
        assert track in self.tracks and end > start
        self.items.append({"track": track, "start": start, "end": end, "notes": [], "ccs": [], "sorted": False,
                           "name": None})
        return ("(MediaItem*)0x%016X" % len(self.items), track, start, end, int(qn_in))

    def _item(self, ptr):
        return self.items[int(ptr.split("0x")[1], 16) - 1]

    def RPR_GetActiveTake(self, item):
        return item.replace("MediaItem*", "MediaItem_Take*")

    def RPR_MIDI_GetPPQPosFromProjQN(self, take, qn):
        item = self._item(take)
        return (qn - self.RPR_TimeMap2_timeToQN(0, item["start"])) * self.PPQ

    def RPR_MIDI_InsertNote(self, take, sel, muted, start, end, chan, pitch, vel, no_sort):
        assert self.undo_open == 1, "notes inserted outside the undo block"
        self._item(take)["notes"].append((start, end, chan, pitch, vel))
        return (1, take, sel, muted, start, end, chan, pitch, vel, no_sort)

    def RPR_MIDI_InsertCC(self, take, sel, muted, ppq, chanmsg, chan, msg2, msg3):
        self._item(take)["ccs"].append((ppq, chanmsg, chan, msg2, msg3))
        return 1

    def RPR_MIDI_Sort(self, take):
        self._item(take)["sorted"] = True

    def RPR_GetSetMediaItemTakeInfo_String(self, take, parm, value, set_new):
        self._item(take)["name"] = value
        return (1, take, parm, value, set_new)

    # a selected MIDI item and a time selection (the infill mode)
    def RPR_GetSelectedMediaItem(self, proj, idx):
        sel = getattr(self, "selected_item", None)
        return sel if sel else "(MediaItem*)" + NULL

    def RPR_TakeIsMIDI(self, take):
        return True

    def RPR_GetSet_LoopTimeRange(self, is_set, is_loop, start, end, allow_autoseek):
        a, b = getattr(self, "time_selection", (0.0, 0.0))
        return (is_set, is_loop, a, b, allow_autoseek)

    def RPR_GetMediaItemInfo_Value(self, item, parm):
        it = self._item(item)
        return {"D_POSITION": it["start"], "D_LENGTH": it["end"] - it["start"]}[parm]

    def RPR_MIDI_CountEvts(self, take, notes, ccs, texts):
        return (1, take, len(self._item(take)["notes"]), len(self._item(take)["ccs"]), 0)

    def RPR_MIDI_GetNote(self, take, idx, sel, muted, start, end, chan, pitch, vel):
        s, e, c, p, v = self._item(take)["notes"][idx]
        return (True, take, idx, False, False, s, e, c, p, v)

    def RPR_MIDI_DeleteNote(self, take, idx):
        assert self.undo_open == 1, "notes deleted outside the undo block"
        del self._item(take)["notes"][idx]
        return True

    def RPR_MIDI_GetProjQNFromPPQPos(self, take, ppq):
        return self.RPR_TimeMap2_timeToQN(0, self._item(take)["start"]) + ppq / self.PPQ

    # UI, state, undo
    def RPR_GetUserInputs(self, title, num, captions, defaults, size):
        assert len(captions.split(",")) >= num and len(defaults.split(",")) == num
        self.calls.append("GetUserInputs:" + defaults)
        return (self.ok, title, num, captions, self.answers if self.answers is not None else defaults, size)

    def RPR_GetExtState(self, section, key):
        return self.ext.get((section, key), "")

    def RPR_SetExtState(self, section, key, value, persist):
        self.ext[(section, key)] = value

    def RPR_ShowMessageBox(self, msg, title, kind):
        self.messages.append(msg)
        return 1

    def RPR_Undo_BeginBlock(self):
        self.undo_open += 1

    def RPR_Undo_EndBlock(self, desc, flags):
        self.undo_open -= 1
        self.undo.append(desc)

    def RPR_UpdateArrange(self):
        self.calls.append("UpdateArrange")


def _beats(fake, item):
    """The item's notes back in beats from the item start: (start, duration, chan, pitch, vel)."""
    return sorted((round(s / fake.PPQ, 6), round((e - s) / fake.PPQ, 6), c, p, v) for s, e, c, p, v in item["notes"])


# --------------------------------------------------------------------------- pure logic
def test_import_does_not_run_and_uses_only_the_standard_library():
    mod = load_reaper_script()
    assert mod.reaper_api() is None  # outside REAPER
    tree = ast.parse(SCRIPT.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"json", "socket", "urllib", "reaper_python"}, imported


def test_parse_settings():
    mod = load_reaper_script()
    s = mod.parse_settings("sad, 16 , D minor, 42, Am F C G, aaba, http://127.0.0.1:9000/")
    assert s == {"mood": "sad", "bars": 16, "key": "D minor", "seed": 42, "chords": "Am F C G", "form": "AABA",
                 "server": "http://127.0.0.1:9000"}
    s = mod.parse_settings(",,,,,,")
    assert s == {"mood": "calm", "bars": 8, "key": None, "seed": None, "chords": None, "form": None,
                 "server": mod.DEFAULT_SERVER}
    for bad, match in [("calm,eight,,,,,", "whole number"), ("calm,0,,,,,", "from 1 to 64"),
                       ("calm,8,,x,,,", "Seed"), ("calm,8,,,,,ftp://x", "http://")]:
        with pytest.raises(mod.MelodiaScriptError, match=match):
            mod.parse_settings(bad)


def test_insert_piece_places_notes_on_project_beats():
    mod = load_reaper_script()
    fake = FakeReaper(bpm=90.0, cursor_s=4.0)  # cursor at 4 s = quarter note 6 at 90 qpm
    piece = {"length_beats": 8.0, "notes": [
        {"pitch": 60, "start_beat": 0.0, "duration_beats": 1.0, "velocity": 80, "program": 0},
        {"pitch": 48, "start_beat": 0.0, "duration_beats": 4.0, "velocity": 60, "program": 33},
        {"pitch": 36, "start_beat": 2.5, "duration_beats": 0.25, "velocity": 100, "program": -1},
        {"pitch": 64, "start_beat": 7.5, "duration_beats": 0.5, "velocity": 90, "program": 0}]}
    context = mod.project_context(fake)
    assert context == {"cursor_s": 4.0, "cursor_qn": 6.0, "tempo": 90.0, "meter": "4/4"}
    fake.RPR_Undo_BeginBlock()
    mod.insert_piece(fake, piece, context, name="melodia test")
    fake.RPR_Undo_EndBlock("x", -1)
    (item,) = fake.items
    assert item["track"] == fake.selected and item["name"] == "melodia test" and item["sorted"]
    # the item spans the piece's 8 beats from the cursor, at the project tempo
    assert item["start"] == 4.0 and item["end"] == pytest.approx(4.0 + 8 * 60 / 90)
    # every note where it belongs, on its instrument's channel (drums on channel 10 = 9)
    assert _beats(fake, item) == [(0.0, 1.0, 0, 60, 80), (0.0, 4.0, 1, 48, 60), (2.5, 0.25, 9, 36, 100),
                                  (7.5, 0.5, 0, 64, 90)]
    # program changes at the item start for the melodic channels, none for drums
    assert sorted(item["ccs"]) == [(0.0, 0xC0, 0, 0, 0), (0.0, 0xC0, 1, 33, 0)]


def test_no_selected_track_makes_a_melodia_track():
    mod = load_reaper_script()
    fake = FakeReaper(selected_track=False, cursor_s=0.0)
    piece = {"length_beats": 4.0, "notes": [{"pitch": 60, "start_beat": 0, "duration_beats": 1, "program": 0}]}
    fake.RPR_Undo_BeginBlock()
    mod.insert_piece(fake, piece, mod.project_context(fake))
    fake.RPR_Undo_EndBlock("x", -1)
    assert len(fake.tracks) == 1 and fake.track_names[fake.tracks[0]] == "melodia"
    assert fake.items[0]["track"] == fake.tracks[0]


def test_build_request_follows_the_project():
    mod = load_reaper_script()
    settings = mod.parse_settings("tense,4,Am,9,,,")
    ctx = {"cursor_s": 0.0, "cursor_qn": 0.0, "tempo": 133.333333, "meter": "6/8"}
    body = mod.build_request(settings, ctx, meters=["4/4", "6/8"])
    assert body == {"mood": "tense", "bars": 4, "tempo": 133.33, "meter": "6/8", "n": 1, "include_midi": False,
                    "key": "Am", "seed": 9}
    body = mod.build_request(mod.parse_settings("tense,8,,,Am Dm,AB,"), ctx)
    assert body["chords"] == "Am Dm" and body["form"] == "AB"
    assert mod.build_request(settings, {**ctx, "meter": "7/8"}, meters=["4/4"])["meter"] == "4/4"
    assert mod.build_request(settings, {**ctx, "tempo": 999})["tempo"] == 400.0


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def server(tiny_model_dir):
    pytest.importorskip("torch")
    from conftest import running_server

    from melodia import Composer

    with running_server(Composer.load(tiny_model_dir, device="cpu")) as srv:
        yield srv


def test_main_inserts_what_the_server_composed(server):
    import json
    import urllib.request

    mod = load_reaper_script()
    fake = FakeReaper(bpm=100.0, meter=(3, 4), cursor_s=3.0, answers="calm,4,F major,7,,," + server.url + ",")
    mod.main(api=fake)
    assert not fake.messages, fake.messages
    (item,) = fake.items
    assert fake.undo == ["melodia: insert 4 bars (calm)"] and fake.undo_open == 0
    # the same request, asked directly: same seed, same notes
    body = {"mood": "calm", "bars": 4, "tempo": 100.0, "meter": "3/4", "key": "F major", "seed": 7, "n": 1,
            "include_midi": False}
    req = urllib.request.Request(server.url + "/generate", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    piece = json.loads(urllib.request.urlopen(req, timeout=120).read())["pieces"][0]
    chans = mod.channel_map(piece["notes"])
    expected = sorted((round(n["start_beat"], 6), round(n["duration_beats"], 6), chans[n["program"]], n["pitch"],
                       n["velocity"]) for n in piece["notes"])
    assert _beats(fake, item) == expected
    assert item["start"] == 3.0 and item["end"] == pytest.approx(3.0 + 12 * 60 / 100)  # 4 bars of 3/4
    assert item["name"] == "melodia calm F major 4 bars seed 7"
    # the answers are remembered for next time
    assert fake.ext[("melodia", "last")].startswith("calm,4,F major,7,,,")
    fake2 = FakeReaper(answers=None, ok=0)
    fake2.ext = dict(fake.ext)
    mod.main(api=fake2)
    assert fake2.calls[0] == "GetUserInputs:" + fake.ext[("melodia", "last")]
    assert not fake2.items and not fake2.messages  # cancelled: nothing happens


def test_main_shows_the_servers_complaint(server):
    mod = load_reaper_script()
    fake = FakeReaper(answers="grumpy,4,,,,," + server.url)
    mod.main(api=fake)
    assert not fake.items and fake.undo_open == 0
    assert len(fake.messages) == 1 and "unknown mood 'grumpy'" in fake.messages[0]


def test_main_when_the_server_is_not_running():
    import socket

    mod = load_reaper_script()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeReaper(answers="calm,4,,,,,http://127.0.0.1:%d" % port)
    mod.main(api=fake)
    assert not fake.items
    assert len(fake.messages) == 1 and "melodia serve" in fake.messages[0]


def _item_with_clip(fake, start_s, bars=8):
    """A MIDI item at ``start_s`` holding a clip: a melody note on every beat (channel 0) and a
    bass note on every downbeat (channel 1), ``bars`` bars of 4/4; it is selected."""
    qn_per_s = fake.bpm / 60.0
    fake.items.append({"track": fake.tracks[0], "start": start_s, "end": start_s + bars * 4 / qn_per_s,
                       "notes": [], "ccs": [], "sorted": True, "name": "clip"})
    item = "(MediaItem*)0x%016X" % len(fake.items)
    notes = fake.items[-1]["notes"]
    for bar in range(bars):
        notes.append((bar * 4 * fake.PPQ, (bar * 4 + 2) * fake.PPQ, 1, 36 + bar % 5, 70))
        for beat in range(4):
            on = (bar * 4 + beat) * fake.PPQ
            notes.append((on, on + fake.PPQ * 3 // 4, 0, 60 + (bar + beat) % 8, 80))
    fake.selected_item = item
    return fake.items[-1]


def test_infill_target_and_bar_span():
    mod = load_reaper_script()
    fake = FakeReaper(bpm=120.0, cursor_s=0.0)
    assert mod.infill_target(fake) is None  # no item selected: compose at the cursor
    _item_with_clip(fake, start_s=2.0)  # item from QN 4; a bar is 2 s at 120 qpm
    assert mod.infill_target(fake) is None  # no time selection
    fake.time_selection = (2.0 + 8.0, 2.0 + 16.0)  # bars 5-8 of the item
    t = mod.infill_target(fake)
    assert t["item_qn"] == 4.0 and t["item_len_qn"] == 32.0 and t["meter"] == "4/4"
    assert mod.bar_span(t) == (5, 8)
    fake.time_selection = (2.0 + 8.5, 2.0 + 9.0)  # inside bar 5 only
    assert mod.bar_span(mod.infill_target(fake)) == (5, 5)
    fake.time_selection = (0.0, 3.0)  # from before the item into its bar 1
    assert mod.bar_span(mod.infill_target(fake)) == (1, 1)
    fake.time_selection = (40.0, 50.0)  # after the item
    assert mod.infill_target(fake) is None


def test_main_rewrites_the_time_selection_of_the_selected_item(server):
    mod = load_reaper_script()
    fake = FakeReaper(bpm=120.0, cursor_s=0.0, answers="sad,8,,3,,," + server.url)
    item = _item_with_clip(fake, start_s=2.0)
    before = list(item["notes"])
    fake.time_selection = (2.0 + 8.0, 2.0 + 16.0)  # bars 5-8
    removed, inserted = mod.main(api=fake)
    assert not fake.messages, fake.messages
    assert fake.undo == ["melodia: rewrite bars 5-8 (sad)"] and fake.undo_open == 0
    assert len(fake.items) == 1  # the item was edited, not a new one made
    lo, hi = 16 * fake.PPQ, 32 * fake.PPQ
    assert sorted(n for n in item["notes"] if not lo <= n[0] < hi) == sorted(n for n in before if not lo <= n[0] < hi)
    assert removed == sum(1 for n in before if lo <= n[0] < hi) and inserted >= 1
    new = [n for n in item["notes"] if lo <= n[0] < hi]
    assert len(new) == inserted and all(n[1] <= hi for n in new)
    assert {n[2] for n in new} <= {0, 1}  # the channels the item uses
    assert sorted(new) != sorted(n for n in before if lo <= n[0] < hi)


def test_infill_of_an_item_with_no_notes_says_so(server):
    mod = load_reaper_script()
    fake = FakeReaper(bpm=120.0, answers="sad,8,,3,,," + server.url)
    item = _item_with_clip(fake, start_s=0.0)
    item["notes"].clear()
    fake.time_selection = (0.0, 4.0)
    mod.main(api=fake)
    assert len(fake.messages) == 1 and "no notes" in fake.messages[0] and fake.undo_open == 0


def test_main_composes_a_form_with_chords(server):
    mod = load_reaper_script()
    fake = FakeReaper(bpm=120.0, cursor_s=0.0, answers="happy,4,C major,5,C G,AA," + server.url)
    mod.main(api=fake)
    assert not fake.messages, fake.messages
    (item,) = fake.items
    notes = _beats(fake, item)
    # the form and chords reached the server: the item is what it writes for them. The test
    # model knows section tokens, so A returns as the model writes it (repeat "sections"), not
    # as a copy; the same request with repeat "exact" copies A note for note.
    import json
    import urllib.request

    def ask(**extra):
        body = {"mood": "happy", "bars": 4, "tempo": 120.0, "meter": "4/4", "key": "C major", "seed": 5,
                "n": 1, "chords": "C G", "form": "AA", "include_midi": False, **extra}
        req = urllib.request.Request(server.url + "/generate", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        piece = json.loads(urllib.request.urlopen(req, timeout=120).read())["pieces"][0]
        chans = mod.channel_map(piece["notes"])
        return sorted((round(n["start_beat"], 6), round(n["duration_beats"], 6), chans[n["program"]], n["pitch"],
                       n["velocity"]) for n in piece["notes"])

    assert notes and notes == ask()
    copied = ask(repeat="exact")
    first = [(s, d, c, p) for s, d, c, p, v in copied if s < 8]
    assert first and [(s - 8, d, c, p) for s, d, c, p, v in copied if s >= 8] == first  # A, then A again
