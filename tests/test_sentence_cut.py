"""SentenceCut: a reply truncated by max_tokens ends at its last complete sentence."""

from __future__ import annotations

import pytest

from pipeline.sentence_cut import FINISH_REASON, SentenceCut, split_at_last_sentence_end


@pytest.mark.parametrize(
    ("text", "head", "tail"),
    [
        ("Paris is the capital. It is", "Paris is the capital.", " It is"),
        ("Hello! How are you?", "Hello! How are you?", ""),
        ("No sentence end yet", "", "No sentence end yet"),
        ('She said "yes." Then', 'She said "yes."', " Then"),
        ("Wait... what", "Wait...", " what"),
        ("Version 3.5 is out", "", "Version 3.5 is out"),  # a dot inside a number is no sentence end
        ("", "", ""),
    ],
)
def test_split_at_last_sentence_end(text, head, tail):
    assert split_at_last_sentence_end(text) == (head, tail)


def response(chunks: list[str], finish: str | None):
    from pipecat.frames.frames import (
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
    )

    end = LLMFullResponseEndFrame()
    if finish is not None:
        end.metadata[FINISH_REASON] = finish
    return [LLMFullResponseStartFrame(), *[LLMTextFrame(c) for c in chunks], end]


async def run(frames):
    from pipecat.frames.frames import LLMFullResponseEndFrame, LLMTextFrame
    from pipecat.tests.utils import run_test

    cut = SentenceCut()
    down, _ = await run_test(cut, frames_to_send=frames)
    texts = [f.text for f in down if isinstance(f, LLMTextFrame)]
    assert sum(isinstance(f, LLMFullResponseEndFrame) for f in down) == sum(
        isinstance(f, LLMFullResponseEndFrame) for f in frames)
    return texts, cut


async def test_truncated_reply_drops_the_unfinished_sentence():
    texts, cut = await run(response(["The capital", " is Paris.", " It has", " many"], "length"))
    assert "".join(texts) == "The capital is Paris."
    assert cut.dropped == [" It has many"]


async def test_a_sentence_passes_the_moment_its_punctuation_arrives():
    # No end of response yet: the finished sentence is through, the unfinished one is held.
    texts, _ = await run(response(["Hi", " there.", " How"], "stop")[:-1])
    assert texts == ["Hi", " there."]


async def test_the_llm_frames_themselves_pass_unchanged():
    """Observers count a frame's first push: the cut must not push text a second time."""
    from pipecat.frames.frames import LLMTextFrame
    from pipecat.tests.utils import run_test

    frames = response(["One", " two.", " Three", " four"], "length")
    sent = [f for f in frames if isinstance(f, LLMTextFrame)]
    down, _ = await run_test(SentenceCut(), frames_to_send=frames)
    got = [f for f in down if isinstance(f, LLMTextFrame)]
    assert [id(f) for f in got] == [id(f) for f in sent[:2]]
    assert [f.text for f in got] == ["One", " two."]


async def test_a_reply_that_ended_by_itself_keeps_its_last_words():
    texts, cut = await run(response(["Sure thing.", " See you soon"], "stop"))
    assert "".join(texts) == "Sure thing. See you soon" and cut.dropped == []


async def test_unknown_finish_reason_keeps_everything():
    texts, _ = await run(response(["One.", " Two"], None))
    assert "".join(texts) == "One. Two"


async def test_a_truncated_single_fragment_is_kept_rather_than_silence():
    texts, _ = await run(response(["A very long first sentence that never"], "length"))
    assert "".join(texts) == "A very long first sentence that never"


async def test_each_response_starts_fresh():
    frames = response(["First.", " cut"], "length") + response(["Second", " one."], "stop")
    texts, _ = await run(frames)
    assert "".join(texts) == "First.Second one."


async def test_an_interruption_discards_the_held_tail():
    """The interrupted response's end frame (Pipecat still sends one) must not flush the tail."""
    from pipecat.frames.frames import InterruptionFrame
    from pipecat.tests.utils import SleepFrame

    first = response(["Done.", " held"], None)
    frames = first[:-1] + [SleepFrame(0.05), InterruptionFrame(), SleepFrame(0.05), first[-1]]
    texts, _ = await run(frames)
    assert "held" not in "".join(texts)


async def run_with(frames, **kwargs):
    from pipecat.frames.frames import LLMTextFrame
    from pipecat.tests.utils import run_test

    cut = SentenceCut(**kwargs)
    down, _ = await run_test(cut, frames_to_send=frames)
    return "".join(f.text for f in down if isinstance(f, LLMTextFrame)), cut


FILLER = " I'm happy to help with that, just ask me anything!"


async def test_drop_repeats_skips_a_sentence_said_in_an_earlier_reply():
    frames = (response(["Paris is the capital.", FILLER], "stop")
              + response(["Seven days.", FILLER.replace("happy", "HAPPY"), " Anything else?"], "stop"))
    text, cut = await run_with(frames, drop_repeats=True)
    assert text == f"Paris is the capital.{FILLER}Seven days. Anything else?"
    assert [d.strip() for d in cut.dropped] == [FILLER.replace("happy", "HAPPY").strip()]


async def test_drop_repeats_keeps_a_repeated_opening_and_short_sentences():
    frames = (response([FILLER.strip(), " Yes."], "stop")
              + response([FILLER.strip(), " Yes."], "stop"))
    text, _ = await run_with(frames, drop_repeats=True)
    assert text == f"{FILLER.strip()} Yes.{FILLER.strip()} Yes."  # never an empty reply


async def test_repeats_are_kept_without_drop_repeats():
    frames = response(["One.", FILLER], "stop") + response(["Two.", FILLER], "stop")
    text, _ = await run_with(frames)
    assert text == f"One.{FILLER}Two.{FILLER}"


# --------------------------------------------------------------------------- the first clause


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ("Sure thing, here it is", len("Sure thing,")),
        ("Well; then", None),  # one word: too short to be spoken alone
        ("It costs 3,000 dollars, roughly", len("It costs 3,000 dollars,")),
        ("The answer: Paris", len("The answer:")),
        ("Done. Then, later", None),  # a sentence end first: the sentence goes whole
        ("No clause here", None),
        ("Sure thing,", len("Sure thing,")),
        ("It costs 3,", None),  # maybe 3,000: only a space after it tells
    ],
)
def test_first_clause_end(text, end):
    from pipeline.sentence_cut import first_clause_end

    assert first_clause_end(text) == end


async def test_the_first_clause_of_a_reply_goes_on_before_its_sentence_ends():
    texts, _ = await run(response(["Sure", " thing", ",", " here", " is", " a", " joke", ":",
                                   " why", " not", "?"], "stop")[:-1])
    # Up to the first clause at once; the rest of that sentence when it ends; no second clause.
    assert texts == ["Sure", " thing", ",", " here", " is", " a", " joke", ":", " why", " not",
                     "?"]
    held, _ = await run(response(["Sure", " thing", ",", " here", " is", ":", " why"],
                                 "stop")[:-1])
    assert held == ["Sure", " thing", ","]


async def test_only_the_first_clause_of_a_response_is_cut():
    texts, _ = await run(response(["Hi there.", " Also", " this", ",", " that"], "stop")[:-1])
    assert texts == ["Hi there."]  # after a sentence, clauses wait for their sentence
    texts, _ = await run(response(["Hi", " there", ",", " you."], "stop")
                         + response(["Again", " here", ",", " more"], "stop")[:-1])
    assert texts == ["Hi", " there", ",", " you.", "Again", " here", ","]


async def test_without_first_clause_the_sentence_is_whole():
    text, _ = await run_with(response(["Sure", " thing", ",", " here"], "stop")[:-1],
                             first_clause=False)
    assert text == ""


async def _aggregate(chunks: list[str]) -> list[str]:
    from pipecat.utils.text.base_text_aggregator import TextType

    from pipeline.sentence_cut import clause_text_aggregator

    agg = clause_text_aggregator(aggregation_type=TextType.SENTENCE)
    out = []
    for chunk in chunks:
        out += [a.text async for a in agg.aggregate(chunk)]
    rest = await agg.flush()
    if rest is not None and rest.text:
        out.append(rest.text)
    return out


async def test_the_tts_aggregator_ends_the_first_clause_then_whole_sentences():
    assert await _aggregate(["Sure thing, here is the answer, in short. ", "Then, more ",
                             "text. And the end"]) == [
        "Sure thing,", "here is the answer, in short.", "Then, more text.", "And the end"]
    # Each response (flush) starts fresh; a one-word clause is not cut.
    assert await _aggregate(["Well, it is. ", "Okay."]) == ["Well, it is.", "Okay."]
    assert await _aggregate(["No clause at all here. ", "Bye."]) == [
        "No clause at all here.", "Bye."]


async def test_the_tts_aggregator_is_fresh_after_an_interruption():
    from pipecat.utils.text.base_text_aggregator import TextType

    from pipeline.sentence_cut import clause_text_aggregator

    agg = clause_text_aggregator(aggregation_type=TextType.SENTENCE)
    assert [a.text async for a in agg.aggregate("One two, three four, five")] == ["One two,"]
    await agg.handle_interruption()
    assert [a.text async for a in agg.aggregate("Six seven, eight")] == ["Six seven,"]
