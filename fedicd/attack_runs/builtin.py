"""fedicd's attacks: bag-of-words and generative inversion (``invert``), attribute inference (``attribute``).

Each ``run`` builds the adversary's view from the defended vectors and hands it to
the report functions of :mod:`fedicd.attack_runs.reports` (imported on first run,
so listing the attacks imports no torch).
"""

from __future__ import annotations

from collections.abc import Callable

from fedicd.errors import ConfigError

from .registry import Attack, AttackOptions, register_attack

__all__ = ["run_bow", "run_generative", "run_attribute"]


def run_bow(d, defend: Callable, options: AttackOptions):
    from attacks import AdversaryView

    from .reports import bow_report

    view = AdversaryView(target_embeddings=defend(d.vectors["test"]), aux_texts=d.aux_texts,
                         aux_embeddings=defend(d.aux_vectors))
    return bow_report(view, d.texts["test"], identifiers=d.identifiers, seed=d.cfg.seed)


def run_generative(d, defend: Callable, options: AttackOptions):
    from .reports import generative_report

    return generative_report(d.texts["test"], d.aux_texts, d.cfg, d.identifiers, gen_cfg=options.gen_cfg,
                             max_spans=options.gen_spans, defend=defend, seed=d.cfg.seed)


def run_attribute(d, defend: Callable, options: AttackOptions):
    from attacks import AdversaryView

    from .reports import column_report

    view = AdversaryView(target_embeddings=defend(d.vectors["test"]), aux_texts=d.texts["train"],
                         aux_embeddings=defend(d.vectors["train"]))
    key, values = d.attribute
    return column_report(view, values["train"], values["test"], name=key, n_labelled=options.n_labelled,
                         seed=d.cfg.seed)


def _check_generative(options: AttackOptions) -> None:
    if options.gen_spans < 1:
        raise ConfigError(f"--gen-spans must be at least 1, got {options.gen_spans}")


def _check_attribute(options: AttackOptions) -> None:
    if not options.attribute.strip():
        raise ConfigError("--attribute is empty; give a built-in (mental_health, hiv, pregnancy, female, site) "
                          "or a column name")
    if options.n_labelled < 2:
        raise ConfigError(f"--n-labelled must be at least 2 (two classes need two labelled notes), got "
                          f"{options.n_labelled}")


def _attribute_metric(report) -> str:
    key = report.settings["attribute"]
    return f"{key}_auc" if f"{key}_auc" in report.metrics else f"{key}_top1_accuracy"


register_attack(Attack("bow", "invert", "bow_inversion", run_bow, leakage="word_f1"))
register_attack(Attack("generative", "invert", "generative_inversion", run_generative, leakage="token_f1",
                       check=_check_generative))
register_attack(Attack("attribute", "attribute", "attribute_inference", run_attribute, leakage=_attribute_metric,
                       check=_check_attribute, needs_attribute=True))
