"""melodia for REAPER: new bars in a mood at the edit cursor, or bars rewritten in place.

A ReaScript (Python) that talks to a running ``melodia serve`` (default http://127.0.0.1:8765).
It does one of two things:

* **Compose** (no MIDI item selected, or no time selection over it): N bars in the mood you
  choose, at the project's tempo and time signature at the edit cursor, inserted as a new MIDI
  item at the edit cursor on the selected track (or on a new track named "melodia" when none is
  selected). Each instrument gets its own MIDI channel (drums channel 10) with a program change
  at the item start.
* **Rewrite the time selection** (a MIDI item selected and a time selection over it): the bars
  the time selection touches, counted from the item's start, are written anew by the server's
  ``/infill``, which reads the bars on both sides. The notes that start in those bars are
  replaced; every other note of the item stays exactly as it was. A note's channel is its
  instrument (channel 10 = drums); new notes keep to the channels the item uses.

Notes are placed in quarter notes (REAPER's QN), so they follow the project tempo map. One undo
step either way.

Setup (docs/daw.md): start the server (``melodia serve``), enable Python in REAPER
(Options > Preferences > Plug-ins > ReaScript), then Actions > Show action list > New action >
Load ReaScript... and pick this file. Run the action; a dialog asks for the mood, bars, key,
seed, chords, form, server address and style (rewriting bars uses the mood, key, seed, chords
and style; a blank style is the model's default, and a model trained before styles takes none);
the last answers are remembered.

Only the Python standard library is used (urllib, json), so nothing needs installing into
REAPER's Python.
"""
import json
import urllib.error
import urllib.request

DEFAULT_SERVER = "http://127.0.0.1:8765"
TIMEOUT_S = 120          # generation of 64 bars x several variations can take a while on a CPU
EXT_SECTION = "melodia"  # REAPER ExtState section remembering the last answers
PPQ_FALLBACK = 960
FIELDS = ("mood", "bars", "key", "seed", "chords", "form", "server", "style")
DEFAULTS = ("calm", "8", "", "", "", "", DEFAULT_SERVER, "")
CAPTIONS = ("Mood (happy/tense/sad/calm or alias)", "Bars (1-64)", "Key (blank = any, e.g. F major)",
            "Seed (blank = random)", "Chords (blank = the model's; Am F C G)",
            "Form (blank = none; AABA)", "melodia server", "Style (blank = the model's; pop, folk)")


class MelodiaScriptError(Exception):
    """Something to tell the user in a message box."""


# ----------------------------------------------------------------------------- REAPER access
def reaper_api():
    """The object holding REAPER's RPR_* functions, or None outside REAPER.

    REAPER puts them in the script's globals (``from reaper_python import *``); the module
    ``reaper_python`` works too.
    """
    g = globals()
    if "RPR_GetCursorPosition" in g:
        class _Api:
            pass
        api = _Api()
        for k, v in g.items():
            if k.startswith("RPR_"):
                setattr(api, k, v)
        return api
    try:
        import reaper_python
        return reaper_python
    except ImportError:
        return None


def is_null(ptr):
    """REAPER hands out pointers as strings like '(MediaTrack*)0x0000000000000000'."""
    if not ptr:
        return True
    text = str(ptr)
    return text.endswith("0x0000000000000000") or text.endswith("0x0")


# ----------------------------------------------------------------------------- settings
def parse_settings(csv_text):
    """The dialog's comma-separated answers -> a dict; raises MelodiaScriptError on a bad one.

    Example: parse_settings("calm,8,F major,7,Am F C G,AABA,http://127.0.0.1:8765")
    """
    parts = [p.strip() for p in csv_text.split(",")]
    parts += [""] * (len(FIELDS) - len(parts))
    mood, bars, key, seed, chords, form, server, style = parts[:len(FIELDS)]
    out = {"mood": mood or "calm", "key": key or None, "server": (server or DEFAULT_SERVER).rstrip("/"),
           "chords": chords or None, "form": form.replace(" ", "").upper() or None}
    if style:  # blank: the model's default style (and none at all for a model trained before styles)
        out["style"] = style
    try:
        out["bars"] = int(bars or "8")
    except ValueError:
        raise MelodiaScriptError("Bars must be a whole number from 1 to 64, not %r." % bars) from None
    if not 1 <= out["bars"] <= 64:
        raise MelodiaScriptError("Bars must be from 1 to 64, not %d." % out["bars"])
    try:
        out["seed"] = int(seed) if seed else None
    except ValueError:
        raise MelodiaScriptError("Seed must be a whole number (or blank for a random one), not %r." % seed) from None
    if not out["server"].startswith(("http://", "https://")):
        raise MelodiaScriptError("The server address must start with http://, like %s." % DEFAULT_SERVER)
    return out


def ask_settings(api, title="melodia: compose at the edit cursor"):
    """Show the dialog (pre-filled with the last answers); None if the user cancels."""
    last = ""
    if hasattr(api, "RPR_GetExtState"):
        last = api.RPR_GetExtState(EXT_SECTION, "last") or ""
    # the last answers of this dialog, or of the one before the style field (blank style added)
    defaults = last if last.count(",") == len(FIELDS) - 1 else (
        last + "," if last.count(",") == len(FIELDS) - 2 else ",".join(DEFAULTS))
    captions = ",".join(CAPTIONS) + ",extrawidth=120"
    result = api.RPR_GetUserInputs(title, len(FIELDS), captions, defaults, 1024)
    ok, answers = result[0], result[4]
    if not ok:
        return None
    if hasattr(api, "RPR_SetExtState"):
        api.RPR_SetExtState(EXT_SECTION, "last", answers, True)
    return parse_settings(answers)


def project_context(api):
    """Edit cursor (seconds, QN) and the project's tempo and time signature there."""
    cursor_s = float(api.RPR_GetCursorPosition())
    _proj, _time, num, den, tempo = api.RPR_TimeMap_GetTimeSigAtTime(0, cursor_s, 0, 0, 0)
    return {"cursor_s": cursor_s, "cursor_qn": float(api.RPR_TimeMap2_timeToQN(0, cursor_s)),
            "tempo": float(tempo), "meter": "%d/%d" % (int(num), int(den))}


# ----------------------------------------------------------------------------- HTTP
def http_json(url, body=None, timeout=TIMEOUT_S, urlopen=urllib.request.urlopen):
    """GET (body None) or POST JSON; the decoded answer, or MelodiaScriptError with the
    server's own message."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                           "Accept": "application/json"})
    try:
        resp = urlopen(req, timeout=timeout)
        try:
            return json.loads(resp.read().decode("utf-8"))
        finally:
            resp.close()
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8")).get("error") or str(e)
        except Exception:
            message = str(e)
        raise MelodiaScriptError("melodia server said: %s" % message) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MelodiaScriptError("Cannot reach the melodia server at %s (%s).\n\nStart it with:  melodia serve"
                                 % (url.rsplit("/", 1)[0], reason)) from None
    except ValueError:
        raise MelodiaScriptError("The melodia server answered something that is not JSON.") from None


def build_request(settings, context, meters=None):
    """The POST /generate body for these settings at this place in the project."""
    tempo = min(400.0, max(20.0, round(context["tempo"], 2)))
    meter = context["meter"]
    if meters is not None and meter not in meters:
        meter = "4/4"  # the model cannot write this meter; notes still land on the project's beats
    body = {"mood": settings["mood"], "bars": settings["bars"], "tempo": tempo, "meter": meter, "n": 1,
            "include_midi": False}
    if settings.get("key"):
        body["key"] = settings["key"]
    if settings.get("seed") is not None:
        body["seed"] = settings["seed"]
    for name in ("chords", "form", "style"):
        if settings.get(name):
            body[name] = settings[name]
    return body


# ----------------------------------------------------------------------------- inserting
def channel_map(notes):
    """Program -> MIDI channel (0-based): instruments in order of appearance, drums on 9."""
    chans, free = {}, [c for c in range(16) if c != 9]
    for n in notes:
        p = n.get("program", 0)
        if p in chans:
            continue
        if p == -1:
            chans[p] = 9
        elif free:
            chans[p] = free.pop(0)
        else:
            chans[p] = 15
    return chans


def target_track(api):
    """The first selected track, or a new track named "melodia" at the end."""
    track = api.RPR_GetSelectedTrack(0, 0)
    if not is_null(track):
        return track
    index = int(api.RPR_CountTracks(0))
    api.RPR_InsertTrackAtIndex(index, True)
    track = api.RPR_GetTrack(0, index)
    api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", "melodia", True)
    return track


def insert_piece(api, piece, context, track=None, name="melodia"):
    """Insert one piece (the server's JSON) as a new MIDI item at the edit cursor; returns the
    item. Notes are placed by quarter-note position, so they follow the project tempo map."""
    notes = piece.get("notes") or []
    if track is None:
        track = target_track(api)
    start_qn = context["cursor_qn"]
    length_qn = float(piece.get("length_beats") or max([n["start_beat"] + n["duration_beats"] for n in notes] or [4.0]))
    end_s = float(api.RPR_TimeMap2_QNToTime(0, start_qn + length_qn))
    item = api.RPR_CreateNewMIDIItemInProj(track, context["cursor_s"], end_s, False)
    if isinstance(item, (tuple, list)):  # REAPER's Python returns (item, track, start, end, qnIn)
        item = item[0]
    if is_null(item):
        raise MelodiaScriptError("REAPER could not create a MIDI item on that track.")
    take = api.RPR_GetActiveTake(item)

    def ppq(qn):
        return float(api.RPR_MIDI_GetPPQPosFromProjQN(take, qn))

    chans = channel_map(notes)
    start_ppq = ppq(start_qn)
    for program, chan in sorted(chans.items(), key=lambda kv: kv[1]):
        if program >= 0:  # program change at the item start: a GM synth plays the right sound
            api.RPR_MIDI_InsertCC(take, False, False, start_ppq, 0xC0, chan, program, 0)
    for n in notes:
        on = start_qn + float(n["start_beat"])
        off = on + float(n["duration_beats"])
        api.RPR_MIDI_InsertNote(take, False, False, ppq(on), ppq(off), chans[n.get("program", 0)],
                                int(n["pitch"]), int(n.get("velocity", 90)), True)
    api.RPR_MIDI_Sort(take)
    api.RPR_GetSetMediaItemTakeInfo_String(take, "P_NAME", name, True)
    return item


def item_name(settings, piece):
    bits = ["melodia", piece.get("mood") or settings["mood"]]
    if piece.get("key"):
        bits.append(piece["key"])
    bits.append("%d bars" % settings["bars"])
    if piece.get("seed") is not None:
        bits.append("seed %s" % piece["seed"])
    return " ".join(bits)


# ----------------------------------------------------------------------------- rewriting bars
def infill_target(api):
    """The selected MIDI item and the time selection over it, or None (then the script composes).

    Returns ``{"item", "take", "item_qn", "item_len_qn", "sel_qn": (start, end), "tempo", "meter"}``.
    """
    if not hasattr(api, "RPR_GetSelectedMediaItem"):
        return None
    item = api.RPR_GetSelectedMediaItem(0, 0)
    if is_null(item):
        return None
    take = api.RPR_GetActiveTake(item)
    if is_null(take) or not api.RPR_TakeIsMIDI(take):
        return None
    sel = api.RPR_GetSet_LoopTimeRange(False, False, 0.0, 0.0, False)
    sel_start, sel_end = float(sel[2]), float(sel[3])
    pos = float(api.RPR_GetMediaItemInfo_Value(item, "D_POSITION"))
    length = float(api.RPR_GetMediaItemInfo_Value(item, "D_LENGTH"))
    if sel_end <= sel_start or sel_end <= pos or sel_start >= pos + length:
        return None  # no time selection over the item
    _proj, _time, num, den, tempo = api.RPR_TimeMap_GetTimeSigAtTime(0, pos, 0, 0, 0)
    item_qn = float(api.RPR_TimeMap2_timeToQN(0, pos))
    return {"item": item, "take": take, "item_qn": item_qn,
            "item_len_qn": float(api.RPR_TimeMap2_timeToQN(0, pos + length)) - item_qn,
            "sel_qn": (float(api.RPR_TimeMap2_timeToQN(0, max(sel_start, pos))),
                       float(api.RPR_TimeMap2_timeToQN(0, min(sel_end, pos + length)))),
            "tempo": float(tempo), "meter": "%d/%d" % (int(num), int(den))}


def read_notes(api, take, item_qn):
    """The take's notes as the server's note dicts (beats from the item start; program = the
    channel, channel 10 = drums), with their REAPER indices."""
    counts = api.RPR_MIDI_CountEvts(take, 0, 0, 0)
    n_notes = int(counts[2]) if isinstance(counts, (tuple, list)) else int(counts)
    notes = []
    for i in range(n_notes):
        r = api.RPR_MIDI_GetNote(take, i, 0, 0, 0, 0, 0, 0, 0)
        start_ppq, end_ppq, chan, pitch, vel = float(r[5]), float(r[6]), int(r[7]), int(r[8]), int(r[9])
        on = float(api.RPR_MIDI_GetProjQNFromPPQPos(take, start_ppq)) - item_qn
        off = float(api.RPR_MIDI_GetProjQNFromPPQPos(take, end_ppq)) - item_qn
        if on < 0 or off <= on:
            continue  # before the item's start (a trimmed item) or empty
        notes.append({"index": i, "pitch": pitch, "start_beat": round(on, 6), "duration_beats": round(off - on, 6),
                      "velocity": max(1, vel), "program": -1 if chan == 9 else chan})
    return notes


def bar_span(target):
    """(first, last) bar, counted from 1 at the item's start, that the time selection touches."""
    num, den = (int(x) for x in target["meter"].split("/"))
    bar_qn = 4.0 * num / den
    a, b = target["sel_qn"]
    first = int((a - target["item_qn"]) // bar_qn + 1e-9) + 1
    last = max(first, int(-(-(b - target["item_qn"] - 1e-9) // bar_qn)))
    return first, last


def build_infill_request(settings, target, notes, span):
    """The POST /infill body: the item's notes, its tempo and meter, and the bars to rewrite."""
    body = {"prompt": [{k: n[k] for k in ("pitch", "start_beat", "duration_beats", "velocity", "program")}
                       for n in notes],
            "tempo": min(400.0, max(20.0, round(target["tempo"], 2))), "meter": target["meter"],
            "bars": [span[0], span[1]], "mood": settings["mood"], "n": 1, "include_midi": False}
    if settings.get("key"):
        body["key"] = settings["key"]
    if settings.get("seed") is not None:
        body["seed"] = settings["seed"]
    for name in ("chords", "style"):
        if settings.get(name):
            body[name] = settings[name]
    return body


def run_infill(api, settings, target, urlopen=urllib.request.urlopen):
    """Rewrite the bars under the time selection of the selected item. Returns the count of
    (removed, inserted) notes. Raises MelodiaScriptError."""
    take, item_qn = target["take"], target["item_qn"]
    notes = read_notes(api, take, item_qn)
    if not notes:
        raise MelodiaScriptError("The selected item has no notes to keep around the bars to rewrite.")
    span = bar_span(target)
    num, den = (int(x) for x in target["meter"].split("/"))
    bar_qn = 4.0 * num / den
    lo, hi = (span[0] - 1) * bar_qn, span[1] * bar_qn
    answer = http_json(settings["server"] + "/infill", build_infill_request(settings, target, notes, span),
                       urlopen=urlopen)
    pieces = answer.get("pieces") or []
    if not pieces:
        raise MelodiaScriptError("The melodia server sent nothing back.")
    new = [n for n in pieces[0].get("notes") or [] if lo - 1e-6 <= n["start_beat"] < hi - 1e-6]
    old = [n for n in notes if lo - 1e-6 <= n["start_beat"] < hi - 1e-6]

    def ppq(qn):
        return float(api.RPR_MIDI_GetPPQPosFromProjQN(take, qn))

    api.RPR_Undo_BeginBlock()
    try:
        for n in sorted(old, key=lambda n: -n["index"]):  # from the last: indices stay valid
            api.RPR_MIDI_DeleteNote(take, n["index"])
        for n in new:
            on = item_qn + float(n["start_beat"])
            off = on + float(n["duration_beats"])
            chan = 9 if n.get("program", 0) == -1 else min(15, max(0, int(n.get("program", 0))))
            api.RPR_MIDI_InsertNote(take, False, False, ppq(on), ppq(off), chan, int(n["pitch"]),
                                    int(n.get("velocity", 90)), True)
        api.RPR_MIDI_Sort(take)
    finally:
        api.RPR_Undo_EndBlock("melodia: rewrite bars %d-%d (%s)" % (span[0], span[1], settings["mood"]), -1)
        api.RPR_UpdateArrange()
    return len(old), len(new)


# ----------------------------------------------------------------------------- main
def run(api, settings, urlopen=urllib.request.urlopen):
    """Ask the server and insert the result; returns the new item. Raises MelodiaScriptError."""
    context = project_context(api)
    meters = http_json(settings["server"] + "/moods", timeout=10, urlopen=urlopen).get("meters")
    body = build_request(settings, context, meters)
    answer = http_json(settings["server"] + "/generate", body, urlopen=urlopen)
    pieces = answer.get("pieces") or []
    if not pieces or not pieces[0].get("notes"):
        raise MelodiaScriptError("The melodia server sent no notes.")
    piece = pieces[0]
    api.RPR_Undo_BeginBlock()
    try:
        item = insert_piece(api, piece, context, name=item_name(settings, piece))
    finally:
        api.RPR_Undo_EndBlock("melodia: insert %d bars (%s)" % (settings["bars"], settings["mood"]), -1)
        api.RPR_UpdateArrange()
    return item


def main(api=None, urlopen=urllib.request.urlopen):
    """The action: dialog, request, insert; problems go to a message box."""
    api = api if api is not None else reaper_api()
    if api is None:
        print("reaper_melodia.py is a REAPER script: load it with Actions > Load ReaScript... (see docs/daw.md)")
        return None
    try:
        target = infill_target(api)
        if target is not None:
            first, last = bar_span(target)
            settings = ask_settings(api, "melodia: rewrite bars %d-%d of the selected item" % (first, last))
            if settings is None:
                return None
            return run_infill(api, settings, target, urlopen=urlopen)
        settings = ask_settings(api)
        if settings is None:
            return None
        return run(api, settings, urlopen=urlopen)
    except MelodiaScriptError as e:
        api.RPR_ShowMessageBox(str(e), "melodia", 0)
        return None


if __name__ == "__main__" or "RPR_GetCursorPosition" in globals():
    main()
