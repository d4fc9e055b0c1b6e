"""Numeric command-line options: 0, negatives, nan and inf are refused by argparse with the option's name
and the accepted range (exit 2), never passed on to become a traceback or a silently wrong result."""
import argparse
import math

import pytest

from edgemon.cli import build_parser, event_types, main, number


def _numeric_actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_actions(sub, path + (name,))
        elif action.type is not None and action.option_strings:
            yield path, action


def test_no_option_takes_a_bare_int_or_float():
    bare = [(" ".join(path), a.option_strings[0]) for path, a in _numeric_actions(build_parser())
            if a.type in (int, float)]
    assert bare == [], f"use edgemon.cli.number(...) so bad values get a clear error: {bare}"


def test_every_numeric_option_refuses_nan_and_inf():
    checked = 0
    for path, action in _numeric_actions(build_parser()):
        if getattr(action.type, "__module__", "") != "edgemon.cli" or action.type is event_types:
            continue
        for text in ("nan", "inf", "-inf", "ten"):
            with pytest.raises(argparse.ArgumentTypeError, match="must be"):
                action.type(text)
        checked += 1
    assert checked >= 25   # every numeric option of every sub-command


@pytest.mark.parametrize("kw, good, bad", [
    (dict(cast=float, low=0, low_open=True), ["1e-3", "2.5"], ["0", "-1"]),
    (dict(cast=float, low=0, high=1), ["0", "1", "0.5"], ["1.01", "-0.1"]),
    (dict(cast=int, low=1, high=65535), ["1", "65535"], ["0", "65536", "1.5"]),
])
def test_number_bounds(kw, good, bad):
    parse = number(kw.pop("cast"), **kw)
    for text in good:
        assert math.isclose(parse(text), float(text))
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{text}'"):
            parse(text)


@pytest.mark.parametrize("argv, needle", [
    (["replay", "{nsr}", "--chunk-s", "0"], "argument --chunk-s: must be a number > 0, got '0'"),
    (["evaluate", "af", "--threshold", "2"], "argument --threshold: must be a number >= 0 and <= 1, got '2'"),
    (["demo", "{af}", "--port", "70000"], "argument --port: must be a whole number >= 0 and <= 65535"),
    (["bench", "--hours", "nan"], "argument --hours: must be a number > 0, got 'nan'"),
    (["replay", "{nsr}", "--events", "alerts"],
     "argument --events: unknown event type 'alerts'; choose from beat, quality, detection, alert"),
    (["replay", "{nsr}", "--events", ","], "argument --events: no event type given"),
    (["run", "-c", "x.toml", "--print-events", "beat,alerts"], "argument --print-events: unknown event type 'alerts'"),
])
def test_bad_value_is_one_clear_line(samples_dir, capsys, argv, needle):
    argv = [a.format(nsr=samples_dir / "nsr", af=samples_dir / "af") for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["bench", "--cpu", "4096", "--no-nk2", "--no-daemon"], "--cpu 4096: not one of the CPUs"),
    (["bench", "--hours", "0.001"], "--hours 0.001: the throughput runs need at least one minute"),
    (["bench", "--soak", "--soak-days", "0.05"], "--soak-days 0.05: the soak reports growth after the first hour"),
])
def test_bench_refuses_what_it_cannot_measure(capsys, argv, needle):
    if "--cpu" in argv and not hasattr(__import__("os"), "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["a/#/b", "edgemon/+", "edgemon//v1", "/edgemon"])
def test_hub_refuses_a_wildcard_or_empty_level_in_the_topic_prefix(capsys, prefix):
    # before: the hub connected, then its subscribe raised in the MQTT thread (a traceback, no alerts stored)
    for argv in (["hub", "--broker", "127.0.0.1:1", "--prefix", prefix, "--duration", "1"],
                 ["hub", "--broker", "127.0.0.1:1", "--prefix", prefix, "cmd", "--site", "s", "--device", "d", "ping"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--prefix {prefix!r} is not a valid topic prefix" in err and "Traceback" not in err
