"""How the engine talks to a model: one `Generator` protocol, and the in-process implementation over model/.

The OpenAI-compatible HTTP implementation is in openai_http.py. Tests use a scripted fake that
implements the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from sala_report.app.errors import BackendUnavailable
from sala_report.app.warp.decoding import (
    Decoding,
    GrammarHook,
    RepeatBlocker,
    TokenClasses,
    TopicEcho,
    chain,
    ll_tokenizer,
)
from sala_report.app.warp.grammar import Constraint

OnDelta = Callable[[str], None]

# In-process models with fewer parameters than this get the compact prompts when warp.prompt_style is "auto".
SMALL_MODEL_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Speed:
    """What a model costs here: its size, and tokens per second measured at load."""

    parameters: int
    prefill_tps: float
    decode_tps: float

    def __post_init__(self):
        if self.parameters <= 0 or self.prefill_tps <= 0 or self.decode_tps <= 0:
            raise ValueError(f"expected positive parameters and speeds, got {self}")


@dataclass(frozen=True)
class GenRequest:
    system: str
    prompt: str
    constraint: Constraint | None
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 0.8
    repetition_penalty: float = 1.0
    closers: tuple[str, ...] = ()  # endings forced near the token limit, the first the grammar allows then
    seed: int | None = None
    decoding: Decoding = Decoding()  # how an in-process model samples beyond the grammar; servers ignore it


@dataclass(frozen=True)
class GenResult:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class Generator(Protocol):
    """A model behind the WARP loop. `generate` is called from the engine's thread only."""

    name: str

    def context_tokens(self) -> int:
        """How many tokens prompt plus answer may hold."""

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt (an estimate is fine if it errs high)."""

    def generate(
        self,
        request: GenRequest,
        *,
        on_delta: OnDelta | None = None,
        cancel: threading.Event | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> GenResult:
        """Run one single-turn chat; stream text deltas to `on_delta`; stop early when `cancel` is set.
        `on_restart` is called when a retry discards what was streamed so far. Raises
        BackendUnavailable when the model cannot be reached or loaded."""


class LocalGenerator:
    """The in-process model (model/): streaming, cancellable, constrained through the logits hook."""

    def __init__(self, lm, tok, *, name: str = "local", constrained: bool = True, draft_tokens: int | None = None):
        """`draft_tokens`: prompt-lookup drafts per verify pass where speculation stays exact (None: 8 on a GPU,
        where a pass of 9 tokens costs about one step, and none on a CPU, where it costs several)."""
        self.lm, self.tok, self.name = lm, tok, name
        self.constrained = constrained
        self._draft_tokens = draft_tokens
        self._runtime = None  # model.generate's RuntimeSlot: one runtime reused by every call
        self._ll_tokenizer = None
        self._token_classes: TokenClasses | None = None
        self._stop_tokens: frozenset[int] = frozenset()
        self.mask_seconds = 0.0  # time spent computing grammar masks, for measurements
        self.masks = 0
        self.drafted = self.accepted = 0  # speculation's drafts verified and kept, for measurements
        self.last = None  # the latest model.Generation, for measurements

    @classmethod
    def load(
        cls,
        source: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        progress=None,
        constrained: bool = True,
        quantize: str = "auto",
        draft_tokens: int | None = None,
    ) -> LocalGenerator:
        from sala_report.model import ModelError, load_model, load_tokenizer

        try:
            import torch

            torch_dtype = None if dtype == "auto" else getattr(torch, dtype)
            lm = load_model(
                source, None if device == "auto" else device, torch_dtype, progress=progress, quantize=quantize
            )
            tok = load_tokenizer(source)
        except ModelError as e:
            raise BackendUnavailable(e.message, hint=e.hint, title=e.title) from e
        except (AttributeError, OSError, RuntimeError) as e:
            raise BackendUnavailable(
                f"cannot load the model '{source}': {e}", hint="Check model.source, model.device and model.dtype."
            ) from e
        return cls(lm, tok, name=str(source), constrained=constrained, draft_tokens=draft_tokens)

    def context_tokens(self) -> int:
        return int(self.lm.config.max_position_embeddings)

    @cached_property
    def small_model(self) -> bool:
        """Too small to follow long instructions (SmolLM2-135M): such models get the compact prompts."""
        return self.parameters < SMALL_MODEL_PARAMETERS

    @cached_property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.lm.parameters())

    @cached_property
    def speed(self) -> Speed:
        """Tokens per second here, measured once (about a second for the 135M model on a CPU): a prompt
        of 64 tokens, then 6 tokens sampled one by one. On a CPU shared with other work, torch's threads
        wait on each other; a small model then runs faster on one, so both are tried and the faster kept."""
        import torch

        threads = torch.get_num_threads()
        best = self._measure()
        if threads > 1 and self.small_model and next(self.lm.parameters()).device.type == "cpu":
            torch.set_num_threads(1)
            single = self._measure()
            if single[1] > best[1]:
                best = single
            else:
                torch.set_num_threads(threads)
        return Speed(self.parameters, *best)

    def _measure(self) -> tuple[float, float]:
        """(prompt tokens/s, generated tokens/s)."""
        import torch

        from sala_report.model import GenerationConfig, generate

        ids = (self.tok.encode(" the report") * 64)[:64]
        with torch.inference_mode():
            config = GenerationConfig(max_new_tokens=6, temperature=0, stop_token_ids=())
            gen = generate(self.lm, self.tok, ids, config, runtime=self.runtime if self._on_gpu else None)
            for _ in gen:
                pass
        # until the first token is chosen the prompt is read (on a GPU the prefill may still run when it returns)
        decode = max(gen.seconds - gen.first_token_seconds, 1e-6) / max(1, gen.completion_tokens - 1)
        return len(ids) / max(gen.first_token_seconds, 1e-6), 1 / decode

    @property
    def _on_gpu(self) -> bool:
        return self.lm.lm_head.weight.device.type == "cuda"

    @property
    def draft_tokens(self) -> int:
        if self._draft_tokens is None:
            self._draft_tokens = 8 if self._on_gpu else 0
        return self._draft_tokens

    @property
    def runtime(self):
        """The runtime every generation on a GPU reuses (reset between calls; its CUDA graphs kept). A CPU runs plain
        forward calls on a state sized to each request instead (measured faster: one-token steps attend over the whole
        preallocated state, so a roomy runtime costs there), unless speculation needs the runtime's rollback."""
        if self._runtime is None:
            from sala_report.model.generate import RuntimeSlot

            self._runtime = RuntimeSlot(self.lm)
        return self._runtime

    def _classes(self) -> None:
        if self._token_classes is None:
            self._token_classes = TokenClasses.of([self.tok.decode([i]) for i in range(self.tok.vocab_size)])
            self._stop_tokens = self._token_classes.tags | frozenset(self.tok.eos_token_ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    def prompt_ids(self, request: GenRequest) -> list[int]:
        # No system turn when there is no system prompt (AgentCPM-Report's pipeline sends none): an empty
        # one is still a turn the model was never trained on.
        system = [{"role": "system", "content": request.system}] if request.system else []
        messages = [*system, {"role": "user", "content": request.prompt}]
        return self.tok.encode(
            self.tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
        )

    def generate(
        self,
        request: GenRequest,
        *,
        on_delta: OnDelta | None = None,
        cancel: threading.Event | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> GenResult:
        from sala_report.model import GenerationConfig, generate

        ids = self.prompt_ids(request)
        hook = None
        if request.decoding.no_repeat_ngram or request.decoding.close_early or request.decoding.echo_topics:
            self._classes()
        if request.constraint is not None and self.constrained:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = ll_tokenizer(
                    self.tok.hf, vocab_size=self.tok.vocab_size, eos_token_ids=self.tok.eos_token_ids
                )
            hook = GrammarHook(
                self._ll_tokenizer,
                request.constraint.lark,
                vocab_size=self.tok.vocab_size,
                max_new_tokens=request.max_tokens,
                closers=[self.tok.encode(c) for c in request.closers],
                stop_tokens=self._stop_tokens if request.decoding.close_early else frozenset(),
            )
        blocker = None
        if request.decoding.no_repeat_ngram:
            blocker = RepeatBlocker(
                request.decoding.no_repeat_ngram,
                self._token_classes,
                within=request.decoding.repeats,
                avoid=[self.tok.encode(text) for text in request.decoding.avoid],
            )
        echo = TopicEcho(self.tok.encode, self._token_classes) if request.decoding.echo_topics else None
        config = GenerationConfig(
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
            seed=request.seed,
        )
        forced = hook.fast_forward if hook is not None and request.decoding.fast_forward else None
        # the grammar alone is applied by the generation itself, on the model's device; the small-model aids read
        # the logits on the host, so with them the hooks run chained as before
        hooks = {"logits_hook": chain(hook, echo, blocker)} if echo or blocker else {"grammar": hook}
        gen = generate(
            self.lm,
            self.tok,
            ids,
            config,
            cancel=cancel,
            fast_forward=forced,
            runtime=self.runtime if self.draft_tokens or self._on_gpu else None,
            draft_tokens=self.draft_tokens,
            **hooks,
        )
        for delta in gen:
            if on_delta is not None:
                on_delta(delta)
        if hook is not None:
            self.mask_seconds += hook.mask_seconds
            self.masks += hook.masks
        self.drafted += gen.drafted
        self.last = gen
        self.accepted += gen.accepted
        return GenResult(gen.text, gen.finish_reason or "stop", gen.prompt_tokens, gen.completion_tokens, gen.seconds)
