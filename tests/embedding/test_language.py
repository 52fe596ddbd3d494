"""The English-encoder language check: Spanish CodiEsp warns once, English text and synthetic notes do not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedicd.embedding import EmbedConfig, embed_texts
from fedicd.embedding.language import ENGLISH_SHARE_MIN, check_language, word_shares
from fedicd.embedding.models import model_language
from fedicd.errors import ConfigError
from tests.embedding.fakes import ENGLISH, FakeEncoder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SPANISH = [
    "Paciente de 45 años que acude a urgencias por dolor torácico de dos horas de evolución, irradiado al brazo "
    f"izquierdo, sin fiebre ni disnea. En la exploración física se objetiva una tensión arterial de {120 + i}/80 "
    "mmHg y el electrocardiograma muestra una elevación del segmento ST en la cara inferior."
    for i in range(10)
]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _sample(folder: Path, n: int = 12) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))[:n]]


@pytest.mark.slow
def test_codiesp_spanish_warns_once_naming_encoder_and_statistic(codiesp_root: Path, caplog) -> None:
    info = check_language(_sample(codiesp_root / "train" / "text_files"), model_id=MINILM,
                          language="en", source="registry")

    assert info["status"] == "warning" and info["texts_not_english"] == info["texts_judged"] == 12
    assert info["median_english_share"] < ENGLISH_SHARE_MIN
    (warning,) = _warnings(caplog)
    assert MINILM in warning and "12 of 12 sampled texts have an English-word share below 0.08" in warning
    assert "median English share 0.00" in warning


@pytest.mark.slow
def test_codiesp_english_passes_silently(codiesp_root: Path, caplog) -> None:
    info = check_language(_sample(codiesp_root / "train" / "text_files_en"), model_id=MINILM,
                          language="en", source="registry")

    assert (info["status"], info["texts_not_english"]) == ("ok", 0)
    assert not _warnings(caplog)


def test_synthetic_notes_pass_silently(caplog) -> None:
    from fedicd.data.synthetic import generate_synthetic

    notes = generate_synthetic(n_notes=40, n_codes=20, seed=3).notes.texts
    caplog.clear()

    info = check_language(notes, model_id=MINILM, language="en", source="registry")

    assert (info["status"], info["texts_not_english"], info["texts_judged"]) == ("ok", 0, 40)
    assert not _warnings(caplog)


def test_spanish_through_embed_texts_is_recorded_in_the_result(fake_config: EmbedConfig, caplog) -> None:
    result = embed_texts(SPANISH + ENGLISH[:2], fake_config, progress=False, encoder=FakeEncoder(fake_config))

    check = result.summary()["language_check"]
    assert (check["status"], check["texts_not_english"], check["texts_judged"]) == ("warning", 10, 12)
    assert len([w for w in _warnings(caplog) if "another language" in w]) == 1


def test_mostly_english_corpus_with_a_few_foreign_notes_passes(caplog) -> None:
    info = check_language(ENGLISH + SPANISH[:2], model_id=MINILM, language="en", source="registry")

    assert (info["status"], info["texts_not_english"]) == ("ok", 2)  # 2 of 32 is under the 10 % line
    assert not _warnings(caplog)


def test_short_texts_are_not_judged() -> None:
    info = check_language(["fiebre", "dolor torácico"], model_id=MINILM, language="en", source="registry")

    assert info["status"] == "skipped" and "20 or more words" in info["reason"]


@pytest.mark.parametrize("model", ["intfloat/multilingual-e5-small", "sentence-transformers/LaBSE", "BAAI/bge-m3",
                                   "Qwen/Qwen3-Embedding-0.6B", "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
                                   "/models/Qwen3-Embedding-0.6B",
                                   "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"])
def test_multilingual_encoders_skip_the_check(model: str, caplog) -> None:
    language, source = model_language(EmbedConfig(model=model))

    info = check_language(SPANISH, model_id=model, language=language, source=source)

    assert (language, source, info["status"]) == ("multilingual", "name", "skipped")
    assert not _warnings(caplog)


def test_default_encoder_is_english_in_the_registry() -> None:
    assert model_language(EmbedConfig()) == ("en", "registry")


def test_model_card_language_is_read(tmp_path: Path) -> None:
    spanish, several = tmp_path / "roberta-es", tmp_path / "encoder"
    spanish.mkdir(), several.mkdir()
    (spanish / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: es\ntags:\n- x\n---\n# model\n")
    (several / "README.md").write_text("---\nlanguage:\n- en\n- es\nlicense: mit\n---\n")

    assert model_language(EmbedConfig(model=str(spanish))) == ("es", "model card")
    assert model_language(EmbedConfig(model=str(several))) == ("multilingual", "model card")
    info = check_language(SPANISH, model_id=str(spanish), language="es", source="model card")
    assert info["status"] == "skipped" and "'es'" in info["reason"]


def test_unknown_language_is_checked_as_english_and_says_so(tmp_path: Path, caplog) -> None:
    language, source = model_language(EmbedConfig(model=str(tmp_path)))

    check_language(SPANISH, model_id="my-encoder", language=language, source=source)

    assert (language, source) == ("unknown", "none")
    (warning,) = _warnings(caplog)
    assert "my-encoder (language unknown, assumed English)" in warning


def test_model_language_setting_overrides_and_is_checked() -> None:
    assert model_language(EmbedConfig(model_language="multilingual")) == ("multilingual", "config")
    with pytest.raises(ConfigError, match=r"model_language='Spanish' is not supported; allowed values: an ISO 639"):
        EmbedConfig(model_language="Spanish")


def test_word_shares_count_english_and_foreign_words() -> None:
    english, foreign, n_words = word_shares("The patient was seen in the clinic with fever 38.5 C")

    assert n_words == 10 and english == pytest.approx(5 / 10) and foreign == 0  # the, patient, was, the, with
    assert word_shares("Paciente de 45 años con dolor en el pecho")[:2] == pytest.approx((0.0, 3 / 8))
    assert word_shares("Пациент поступил с болью")[1] == 1.0  # a non-Latin script counts as foreign


def test_vitals_and_lab_lists_are_not_taken_for_another_language(caplog) -> None:
    vitals = [" ".join(f"BP {110 + i}/70 HR {60 + i} SpO2 98% Na 140 K 4.1 Cr 0.9 mg/dl WBC 7.2" for i in range(4))] * 5

    info = check_language(vitals, model_id=MINILM, language="en", source="registry")

    assert (info["status"], info["texts_not_english"], info["median_english_share"]) == ("ok", 0, 0.0)
    assert not _warnings(caplog)
