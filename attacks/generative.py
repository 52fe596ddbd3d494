"""Generative inversion (GEIA-style): a decoder conditioned on the embedding writes the text back.

Threat model (:data:`attacks.threat.THREAT_MODELS` ``"generative_inversion"``):
the adversary holds the victims' vectors, the public encoder (model *and* its
tokenizer) and public auxiliary text. It cuts the auxiliary notes into spans of
at most ``max_tokens`` encoder tokens, embeds them with the public encoder, and
trains a decoder to write each span from its vector: the vector is mapped to
``prefix_len`` input vectors that the decoder reads before the first token (Li
et al., 2023, "Sentence Embedding Leaks More Information than You Expect").

Decoders
--------
``decoder = "scratch"`` (default): a small causal transformer trained here from
scratch on CPU, over the encoder's own sub-word vocabulary restricted to the
tokens that occur in the auxiliary text (a decoder trained from scratch cannot
write a token it never saw). Any other value is a local Hugging Face model
path: a causal LM (GPT-2, Llama, ...) reads the prefix through
``inputs_embeds``; a seq2seq model (T5, BART, ...) reads it as its encoder's
output. Such a model is fine-tuned end to end with the prefix map; use a GPU.

Correction (vec2text-style)
---------------------------
With ``corrector_steps > 0`` the adversary re-embeds its guesses with the public
encoder and keeps, per victim, the guess whose vector is closest (cosine) to
the target; each step samples ``candidates`` new guesses conditioned on the
target pushed away from the current best guess's vector,
``e + feedback * (e - embed(best))`` (rescaled to the target's norm). Unlike
vec2text no separate corrector model is trained: the decoder itself is steered,
and the public encoder is the judge.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.threat import AdversaryView

__all__ = ["GenerativeConfig", "GenerativeInverter", "token_spans", "invert_generative"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerativeConfig:
    decoder: str = "scratch"
    max_tokens: int = 32
    d_model: int = 192
    layers: int = 2
    heads: int = 4
    prefix_len: int = 4
    dropout: float = 0.1
    epochs: int = 8
    lr: float = 1e-3
    batch_size: int = 64
    candidates: int = 8
    corrector_steps: int = 0
    temperature: float = 0.7
    feedback: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("max_tokens", "d_model", "layers", "heads", "prefix_len", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GenerativeConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("candidates", "corrector_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"GenerativeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.corrector_steps and not self.candidates:
            raise ValueError("corrector_steps > 0 needs candidates > 0 (the guesses each step samples)")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def token_spans(texts: Sequence[str], tokenizer, max_tokens: int, *, stride: int | None = None,
                max_spans: int | None = None) -> list[str]:
    """Substrings of ``texts`` of at most ``max_tokens`` tokenizer tokens, cut at token boundaries.

    ``stride=None`` gives each text's prefix only (the victims' setting: the first
    ``max_tokens`` tokens, as in vec2text's 32-token MIMIC prefixes); otherwise a span
    starts every ``stride`` tokens. ``max_spans`` keeps the first spans of the list.
    The original characters are kept (no detokenisation).
    """
    spans = []
    for text in texts:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]
        if not offsets:
            continue
        starts = [0] if stride is None else range(0, max(1, len(offsets) - max_tokens // 2), stride)
        for s in starts:
            window = offsets[s:s + max_tokens]
            span = text[window[0][0]:window[-1][1]].strip()
            if span:
                spans.append(span)
    return spans[:max_spans] if max_spans is not None else spans


class _ScratchDecoder(nn.Module):
    """Causal transformer reading ``prefix_len`` vectors made from the embedding, then tokens."""

    def __init__(self, emb_dim: int, vocab: int, cfg: GenerativeConfig):
        super().__init__()
        d, p = cfg.d_model, cfg.prefix_len
        self.p, self.d = p, d
        self.prefix = nn.Sequential(nn.Linear(emb_dim, d * p), nn.Tanh(), nn.Linear(d * p, d * p))
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(p + cfg.max_tokens + 1, d)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        for table in (self.tok, self.pos):  # GPT-2's init: with tied output weights, N(0, 1) logits start ~sqrt(d)
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T+1, V]: position t predicts token t given the prefix and tokens < t."""
        x = torch.cat([self.prefix(emb).view(len(emb), self.p, self.d), self.tok(tokens)], dim=1)
        x = x + self.pos(torch.arange(x.shape[1], device=x.device))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        h = self.norm(self.body(x, mask=mask, is_causal=True))
        return h[:, self.p - 1:] @ self.tok.weight.T


class _HFDecoder(nn.Module):
    """A Hugging Face causal or seq2seq LM reading the embedding through a learned prefix."""

    def __init__(self, emb_dim: int, path: str, prefix_len: int):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        conf = AutoConfig.from_pretrained(path, local_files_only=True)
        self.seq2seq = bool(getattr(conf, "is_encoder_decoder", False))
        loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.lm = loader.from_pretrained(path, local_files_only=True)
        d = self.lm.get_input_embeddings().embedding_dim
        self.p, self.d = prefix_len, d
        self.prefix = nn.Sequential(nn.Linear(emb_dim, d * prefix_len), nn.Tanh(),
                                    nn.Linear(d * prefix_len, d * prefix_len))
        start = getattr(self.lm.config, "decoder_start_token_id", None)
        if self.seq2seq and start is None:
            raise ValueError(f"seq2seq model at {path} has no decoder_start_token_id in its config")
        self.start = start

    def forward(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        prefix = self.prefix(emb).view(len(emb), self.p, self.d)
        if self.seq2seq:
            from transformers.modeling_outputs import BaseModelOutput

            start = torch.full((len(emb), 1), self.start, dtype=tokens.dtype, device=tokens.device)
            return self.lm(encoder_outputs=BaseModelOutput(last_hidden_state=prefix),
                           decoder_input_ids=torch.cat([start, tokens], dim=1)).logits
        x = torch.cat([prefix, self.lm.get_input_embeddings()(tokens)], dim=1)
        return self.lm(inputs_embeds=x).logits[:, self.p - 1:]


class GenerativeInverter:
    """Embedding → text decoder trained on auxiliary (span, embedding) pairs.

    ``tokenizer`` is the public encoder's tokenizer for the scratch decoder, or the
    Hugging Face model's own tokenizer (loaded from ``config.decoder``) otherwise.
    """

    def __init__(self, config: GenerativeConfig = GenerativeConfig(), tokenizer=None):
        self.config = config
        if config.decoder != "scratch":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.decoder, local_files_only=True)
        if tokenizer is None:
            raise ValueError("the scratch decoder needs the public encoder's tokenizer")
        self.tokenizer = tokenizer
        self.model: nn.Module | None = None
        self.losses: list[float] = []

    # -- token ids --------------------------------------------------------------------------------------------
    def _raw_ids(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.config.max_tokens, verbose=False)
        return enc["input_ids"]

    def _build_vocab(self, raw: list[list[int]]) -> None:
        tok = self.tokenizer
        if self.config.decoder == "scratch":
            # compact ids: 0 = padding, 1 = end of text, then every token id seen in the auxiliary text
            seen = sorted({i for ids in raw for i in ids})
            self.to_model = {t: j + 2 for j, t in enumerate(seen)}
            self.from_model = np.array([-1, -1, *seen])
            self.pad, self.eos, self.vocab_size = 0, 1, len(seen) + 2
        else:
            eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
            if eos is None:
                raise ValueError(f"tokenizer of {self.config.decoder} has neither an eos nor a sep token")
            self.to_model = None
            self.from_model = None
            self.pad, self.eos, self.vocab_size = (tok.pad_token_id if tok.pad_token_id is not None else eos), eos, \
                len(tok)

    def _model_ids(self, raw: list[int]) -> list[int]:
        if self.to_model is None:
            return list(raw)
        return [self.to_model[i] for i in raw if i in self.to_model]

    def _text(self, ids: list[int]) -> str:
        if self.from_model is not None:
            ids = [int(self.from_model[i]) for i in ids if i >= 2]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # -- training ---------------------------------------------------------------------------------------------
    def fit(self, embeddings: np.ndarray, texts: Sequence[str]) -> GenerativeInverter:
        cfg = self.config
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(texts):
            raise ValueError(f"need one embedding row per text: {embeddings.shape} vs {len(texts)} texts")
        if len(texts) == 0:
            raise ValueError("no auxiliary spans to train the decoder on")
        raw = self._raw_ids(texts)
        self._build_vocab(raw)
        seqs = [self._model_ids(r) + [self.eos] for r in raw]
        length = max(map(len, seqs))
        y = torch.full((len(seqs), length), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            y[i, :len(s)] = torch.tensor(s)
        x_tok = y[:, :-1].clamp(min=0) if length > 1 else y[:, :0]
        x_tok = torch.where(y[:, :-1] >= 0, x_tok, torch.full_like(x_tok, self.pad))
        dev = torch.device(cfg.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = (_ScratchDecoder(embeddings.shape[1], self.vocab_size, cfg) if cfg.decoder == "scratch"
                     else _HFDecoder(embeddings.shape[1], cfg.decoder, cfg.prefix_len)).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
            steps = cfg.epochs * math.ceil(len(seqs) / cfg.batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.05)
            emb_t = torch.as_tensor(embeddings)
            gen = torch.Generator().manual_seed(cfg.seed)
            model.train()
            t0 = time.perf_counter()
            for epoch in range(cfg.epochs):
                total, count = 0.0, 0
                for idx in torch.randperm(len(seqs), generator=gen).split(cfg.batch_size):
                    opt.zero_grad()
                    logits = model(emb_t[idx].to(dev), x_tok[idx].to(dev))
                    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1).to(dev),
                                                       ignore_index=-100)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    total, count = total + float(loss.detach()) * len(idx), count + len(idx)
                self.losses.append(total / count)
                log.info("decoder epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, cfg.epochs, self.losses[-1],
                         time.perf_counter() - t0)
        self.model = model.eval()
        return self

    # -- decoding ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, embeddings: np.ndarray, *, sample: bool = False, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> list[str]:
        """Greedy (default) or temperature-sampled text for each embedding row."""
        if self.model is None:
            raise RuntimeError("GenerativeInverter: call fit() before generating")
        cfg = self.config
        dev = torch.device(cfg.device)
        out: list[str] = []
        emb_all = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        for emb in emb_all.split(batch_size):
            emb = emb.to(dev)
            toks = torch.zeros((len(emb), 0), dtype=torch.long, device=dev)
            done = torch.zeros(len(emb), dtype=torch.bool, device=dev)
            for _ in range(cfg.max_tokens):
                logits = self.model(emb, toks)[:, -1].float()
                if self.from_model is not None:
                    logits[:, self.pad] = -torch.inf
                if sample:
                    probs = torch.softmax(logits / cfg.temperature, dim=-1).cpu()
                    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(dev)
                else:
                    nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, self.eos), nxt)
                toks = torch.cat([toks, nxt[:, None]], dim=1)
                done |= nxt == self.eos
                if bool(done.all()):
                    break
            for row in toks.tolist():
                row = row[:row.index(self.eos)] if self.eos in row else row
                out.append(self._text(row))
        return out

    def invert(self, targets: np.ndarray, encoder: Callable[[Sequence[str]], np.ndarray] | None = None
               ) -> tuple[list[str], list[list[str]]]:
        """Final guesses and the best guess after each correction step (index 0 = greedy, no correction)."""
        cfg = self.config
        targets = np.asarray(targets, dtype=np.float32)
        best = self.generate(targets)
        trail = [list(best)]
        if not cfg.corrector_steps:
            return best, trail
        if encoder is None:
            raise ValueError("corrector steps re-embed the guesses: give the public encoder")
        best_vec = _embed_guesses(encoder, best, targets.shape[1])
        best_cos = _cosine(best_vec, targets)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        norms = np.linalg.norm(targets, axis=1, keepdims=True)
        for _ in range(cfg.corrector_steps):
            cond = targets + cfg.feedback * (targets - best_vec)
            cond = cond / np.maximum(np.linalg.norm(cond, axis=1, keepdims=True), 1e-12) * norms
            pools = [self.generate(cond)] + [self.generate(cond, sample=True, generator=gen)
                                             for _ in range(cfg.candidates)]
            for guesses in pools:
                vec = _embed_guesses(encoder, guesses, targets.shape[1])
                cos = _cosine(vec, targets)
                better = cos > best_cos
                for i in np.flatnonzero(better):
                    best[i] = guesses[i]
                best_vec[better], best_cos[better] = vec[better], cos[better]
            trail.append(list(best))
        return best, trail


def _embed_guesses(encoder, guesses: list[str], dim: int) -> np.ndarray:
    """The public encoder's vectors of the guesses (an empty guess gets the zero vector)."""
    out = np.zeros((len(guesses), dim), dtype=np.float32)
    keep = [i for i, g in enumerate(guesses) if g.strip()]
    if keep:
        out[keep] = np.asarray(encoder([guesses[i] for i in keep]), dtype=np.float32)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def invert_generative(view: AdversaryView, config: GenerativeConfig = GenerativeConfig(), tokenizer=None
                      ) -> tuple[list[str], list[list[str]], GenerativeInverter]:
    """Write each victim's text from the adversary's view only.

    The view's auxiliary texts are the training spans (already cut to ``max_tokens``
    tokens, e.g. with :func:`token_spans`) and ``view.aux_embeddings`` their vectors.
    """
    inverter = GenerativeInverter(config, tokenizer).fit(view.aux_embeddings, list(view.aux_texts))
    guesses, trail = inverter.invert(view.target_embeddings, view.encoder)
    return guesses, trail, inverter
