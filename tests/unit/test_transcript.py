"""Unit tests for pipeline.outputs.transcript: times, word and sentence building, the Fun-ASR
document."""

from __future__ import annotations

import json

import pytest

from pipeline.outputs.transcript import (
    AudioProperties,
    RawWord,
    Sentence,
    Transcript,
    Word,
    from_result_document,
    join_texts,
    sentences_from_words,
    split_punctuation,
    to_result_document,
    words_from_raw,
)

PROPS = AudioProperties("mp3", (0, 1), 44_100, 61_234)


def sentence(begin: int, end: int, text: str, words: tuple[Word, ...] = (), **kw) -> Sentence:  # type: ignore[no-untyped-def]
    return Sentence(begin, end, text, words, **kw)


def test_shifted_moves_every_time_and_nothing_else() -> None:
    """Shifting a transcript adds the offset to sentence and word times, keeping texts."""
    words = (Word(0, 300, "Hi"), Word(350, 900, "there", "."))
    t = Transcript((sentence(0, 900, "Hi there.", words),), language="en", channel_id=1)
    s = t.shifted(2500)
    assert (s.language, s.channel_id, s.text) == ("en", 1, "Hi there.")
    assert (s.sentences[0].begin_ms, s.sentences[0].end_ms) == (2500, 3400)
    assert [(w.begin_ms, w.end_ms) for w in s.sentences[0].words] == [(2500, 2800), (2850, 3400)]
    assert t.shifted(0) is t


def test_concat_keeps_order_and_first_known_language() -> None:
    """Concat joins window sentences in order, takes the first language seen, sets the channel."""
    a = Transcript((sentence(0, 1000, "One."),), language=None)
    b = Transcript((sentence(1000, 2000, "Two."), sentence(2100, 2500, "Three.")), language="en")
    c = Transcript((), language="de")
    got = Transcript.concat([a, b, c], channel_id=2)
    assert [s.text for s in got.sentences] == ["One.", "Two.", "Three."]
    assert (got.language, got.channel_id, got.text) == ("en", 2, "One. Two. Three.")
    assert got.speech_ms == 1000 + 1000 + 400


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("planks.", ("planks", ".")),
        (' well,"', ("well", ',"')),
        ("Why?!", ("Why", "?!")),
        ("好。", ("好", "。")),
        ("...", ("...", "")),
        ("Mr", ("Mr", "")),
        ("'tis", ("'tis", "")),
    ],
)
def test_split_punctuation(token: str, expected: tuple[str, str]) -> None:
    """Trailing punctuation moves to its own field; punctuation-only tokens keep their text."""
    assert split_punctuation(token) == expected


def test_words_from_raw_times_are_ms_monotonic_and_non_negative() -> None:
    """Seconds become rounded ms; a word that starts before the last ended is pushed forward."""
    raw = [
        RawWord(-0.01, 0.4004, " The"),
        RawWord(0.35, 0.7, " birch"),
        RawWord(0.9, 0.85, " canoe."),
        RawWord(1.0, 1.2, "  "),
    ]
    assert words_from_raw(raw) == [
        Word(0, 400, "The"),
        Word(400, 700, "birch"),
        Word(900, 900, "canoe", "."),
    ]


def test_words_from_raw_joins_whisper_continuation_tokens() -> None:
    """A space-less token ("-hearted") continues the word before it, as Whisper's text does."""
    raw = [
        RawWord(0.0, 0.3, " rather"),
        RawWord(0.3, 0.6, " cold"),
        RawWord(0.6, 1.0, "-hearted"),
        RawWord(1.1, 1.4, " and"),
        RawWord(1.5, 1.7, " ill"),
        RawWord(1.7, 2.2, "-disposed."),
    ]
    words = words_from_raw(raw)
    assert [(w.text, w.punctuation) for w in words] == [
        ("rather", ""),
        ("cold-hearted", ""),
        ("and", ""),
        ("ill-disposed", "."),
    ]
    assert (words[1].begin_ms, words[1].end_ms) == (300, 1000)
    text = join_texts(w.text + w.punctuation for w in words)
    assert text == "rather cold-hearted and ill-disposed."


def test_words_from_raw_keeps_cjk_tokens_and_words_after_punctuation_apart() -> None:
    """CJK tokens (never space-separated) stay separate words, and so does a token after "x,"."""
    raw = [
        RawWord(0.0, 0.2, "他"),
        RawWord(0.2, 0.5, "不是"),
        RawWord(0.5, 0.6, "，"),
        RawWord(0.6, 0.8, " yes,"),
        RawWord(0.8, 1.0, "no"),
    ]
    texts = [w.text for w in words_from_raw(raw)]
    assert texts == ["他", "不是", "，", "yes", "no"]


def test_sentences_split_at_final_punctuation_long_pauses_and_the_cap() -> None:
    """Sentences end at . ? ! (even before a closing quote), at a >1.5 s pause, or at 60 words."""
    words = [
        Word(0, 200, "Hello", "."),
        Word(300, 500, "Is", ""),
        Word(600, 800, "it", '?"'),
        Word(900, 1000, "after", ""),
        Word(2501, 2800, "pause", ""),
        *[Word(5000 + i * 10, 5005 + i * 10, f"w{i}") for i in range(61)],
    ]
    got = sentences_from_words(words)
    assert [s.text for s in got[:3]] == ["Hello.", 'Is it?"', "after"]
    # "pause" sits between two gaps over 1.5 s; then 61 words: the cap of 60, then one.
    assert [s.text for s in got[3:4]] == ["pause"]
    assert [len(s.words) for s in got[4:]] == [60, 1]
    assert all(s.begin_ms == s.words[0].begin_ms and s.end_ms == s.words[-1].end_ms for s in got)


def test_sentence_cap_counts_words() -> None:
    """With max_words=3, seven unpunctuated words become sentences of 3, 3 and 1."""
    words = [Word(i * 100, i * 100 + 50, f"w{i}") for i in range(7)]
    assert [len(s.words) for s in sentences_from_words(words, max_words=3)] == [3, 3, 1]


def test_join_texts_spaces_latin_not_cjk() -> None:
    """Latin pieces get one space between them; CJK pieces none."""
    assert join_texts([" Hello ", "", "world.", "你好", "世界", "ok"]) == "Hello world. 你好世界 ok"


def stereo() -> list[Transcript]:
    w = (Word(1000, 1400, "Good", ""), Word(1450, 1900, "morning", "."))
    return [
        Transcript((sentence(1000, 1900, "Good morning.", w, speaker_id=0),), channel_id=0),
        Transcript(
            (
                sentence(
                    2000,
                    2600,
                    "早上好。",
                    (Word(2000, 2600, "早上好", "。"),),
                    language="zh",
                    emotion="happy",
                ),
            ),
            channel_id=1,
        ),
    ]


def test_result_document_schema() -> None:
    """The document has Fun-ASR's fields, 1-based sentence ids and integer ms times."""
    doc = to_result_document("https://x/a.mp3", PROPS, stereo())
    assert doc["file_url"] == "https://x/a.mp3"
    assert doc["properties"] == {
        "audio_format": "mp3",
        "channels": [0, 1],
        "original_sampling_rate": 44_100,
        "original_duration_in_milliseconds": 61_234,
    }
    ch0, ch1 = doc["transcripts"]
    assert (ch0["channel_id"], ch0["content_duration_in_milliseconds"], ch0["text"]) == (
        0,
        900,
        "Good morning.",
    )
    s = ch0["sentences"][0]
    assert s == {
        "begin_time": 1000,
        "end_time": 1900,
        "text": "Good morning.",
        "sentence_id": 1,
        "speaker_id": 0,
        "words": [
            {"begin_time": 1000, "end_time": 1400, "text": "Good", "punctuation": ""},
            {"begin_time": 1450, "end_time": 1900, "text": "morning", "punctuation": "."},
        ],
    }
    assert ch1["sentences"][0]["language"] == "zh" and ch1["sentences"][0]["emotion"] == "happy"
    json.dumps(doc, allow_nan=False)  # plain JSON types only


def test_result_document_round_trip() -> None:
    """Writing a document and parsing its JSON gives back the same sentences, words and channels."""
    doc = json.loads(json.dumps(to_result_document("/a.mp3", PROPS, stereo())))
    parsed = from_result_document(doc)
    assert parsed.file_url == "/a.mp3"
    assert parsed.properties["original_duration_in_milliseconds"] == 61_234
    assert [t.channel_id for t in parsed.transcripts] == [0, 1]
    assert [t.sentences for t in parsed.transcripts] == [t.sentences for t in stereo()]
    assert parsed.text == "Good morning.\n早上好。"


def test_from_result_document_tolerates_qwen_shape() -> None:
    """audio_info instead of properties, 0-based ids, no words and null punctuation all parse."""
    doc = {
        "file_url": "u",
        "audio_info": {"format": "wav"},
        "transcripts": [
            {
                "channel_id": None,
                "sentences": [
                    {"begin_time": 10, "end_time": 20, "text": " hi ", "sentence_id": 0},
                    {
                        "begin_time": 30,
                        "end_time": 40,
                        "text": "x",
                        "words": [
                            {"begin_time": 30, "end_time": 40, "text": "x", "punctuation": None}
                        ],
                    },
                ],
            }
        ],
    }
    parsed = from_result_document(doc)
    assert parsed.properties == {"format": "wav"}
    (t,) = parsed.transcripts
    assert t.channel_id == 0
    assert t.sentences == (Sentence(10, 20, "hi"), Sentence(30, 40, "x", (Word(30, 40, "x", ""),)))


def test_transcript_language_is_written_and_read_back() -> None:
    """A transcript's language is transcripts[].language; parsing gives it back, and a
    provider document with only per-sentence languages yields the first of them."""
    doc = to_result_document(
        "/a.wav", PROPS, [Transcript((sentence(0, 900, "Hallo."),), language="de")]
    )
    assert doc["transcripts"][0]["language"] == "de"
    assert list(doc["transcripts"][0]) == [
        "channel_id",
        "content_duration_in_milliseconds",
        "text",
        "language",
        "sentences",
    ]
    assert from_result_document(json.loads(json.dumps(doc))).transcripts[0].language == "de"
    assert "language" not in to_result_document("/a.wav", PROPS, [Transcript()])["transcripts"][0]
    qwen = from_result_document(stereo_doc := to_result_document("/a", PROPS, stereo()))
    assert [t.language for t in qwen.transcripts] == [None, "zh"], stereo_doc
