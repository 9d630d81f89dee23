# SPDX-License-Identifier: Apache-2.0
"""A tritonclient example for the `logquant-trt serve` models (and the `triton-repo` deployment).

    logquant-trt client "The capital of France is" --max-tokens 12
    logquant-trt client --stream --grpc-url 127.0.0.1:8001 "Once upon a time"
    python -m logquant_trt.serve.client --ids 504,3458,282 --temperature 0.8 --seed 7

`generate` sends one request over HTTP (or gRPC) and returns the whole generation; `stream` opens
a gRPC stream to the decoupled model and yields each piece as it is generated.
"""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from logquant_trt.serve.errors import error_message
from logquant_trt.serve.protocol import DEFAULT_MAX_TOKENS, MODEL_NAME, STREAM_MODEL_NAME, input_spec


@dataclasses.dataclass(frozen=True)
class Completion:
    """One response: the text and token ids it adds, and why generation ended ("" mid-stream)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str


@dataclasses.dataclass(frozen=True)
class Request:
    """A request's fields; None leaves an optional input out (the server's default applies)."""

    prompt: str | None = None
    input_ids: Sequence[int] | None = None
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: Sequence[int] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Input name -> array in the protocol's dtype and shape, for every field that is set."""
        values = {"text_input": None if self.prompt is None else [self.prompt.encode("utf-8")],
                  "input_ids": self.input_ids, "max_tokens": self.max_tokens, "temperature": self.temperature,
                  "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed, "ignore_eos": self.ignore_eos,
                  "stop_token_ids": self.stop_token_ids}
        arrays = {}
        for name, value in values.items():
            if value is None:
                continue
            spec = input_spec(name)
            dtype = np.object_ if spec.triton_dtype == "BYTES" else spec.numpy_dtype
            arrays[name] = np.asarray(value if np.ndim(value) else [value], dtype=dtype).reshape(-1)
        return arrays


def infer_inputs(module: Any, arrays: dict[str, np.ndarray], dtypes: dict[str, str] | None = None) -> list[Any]:
    """tritonclient InferInputs (module: tritonclient.http or tritonclient.grpc); `dtypes` overrides wire types."""
    inputs = []
    for name, array in arrays.items():
        wire = (dtypes or {}).get(name) or input_spec(name).triton_dtype
        tensor = module.InferInput(name, list(array.shape), wire)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def completion(result: Any) -> Completion:
    """A tritonclient result (HTTP or gRPC) as a Completion."""
    text = result.as_numpy("text_output")
    reason = result.as_numpy("finish_reason")
    ids = result.as_numpy("output_ids")
    return Completion(text=bytes(text.reshape(-1)[0]).decode("utf-8"),
                      token_ids=tuple(int(t) for t in ids.reshape(-1)) if ids is not None else (),
                      finish_reason=bytes(reason.reshape(-1)[0]).decode("utf-8"))


def generate(url: str, request: Request, protocol: str = "http", model: str = MODEL_NAME,
             timeout_s: float = 120.0) -> Completion:
    """One request, one response. Raises tritonclient.utils.InferenceServerException for a refused request."""
    if protocol == "http":
        import tritonclient.http as module

        with module.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s) as client:
            return completion(client.infer(model, infer_inputs(module, request.arrays())))
    if protocol == "grpc":
        import tritonclient.grpc as module

        with module.InferenceServerClient(url) as client:
            return completion(client.infer(model, infer_inputs(module, request.arrays()), client_timeout=timeout_s))
    raise ValueError(f"protocol={protocol!r} is invalid: must be http or grpc")


def stream(grpc_url: str, request: Request, model: str = STREAM_MODEL_NAME,
           timeout_s: float = 120.0) -> Iterator[Completion]:
    """Each piece of one generation as it arrives, the last with its finish_reason (gRPC streaming)."""
    import tritonclient.grpc as module
    from tritonclient.utils import InferenceServerException

    events: queue.Queue = queue.Queue()
    with module.InferenceServerClient(grpc_url) as client:
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        try:
            # The empty final response marks the end of the stream, however many pieces came before it.
            client.async_stream_infer(model, infer_inputs(module, request.arrays()),
                                      enable_empty_final_response=True)
            while True:
                try:
                    result, error = events.get(timeout=timeout_s)
                except queue.Empty:
                    raise TimeoutError(f"no response from {model} at {grpc_url} within {timeout_s} s") from None
                if error is not None:
                    raise error if isinstance(error, InferenceServerException) else RuntimeError(str(error))
                response = result.get_response()
                if response.outputs:
                    yield completion(result)
                if response.parameters["triton_final_response"].bool_param:
                    return
        finally:
            client.stop_stream(cancel_requests=True)


# -- command line -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=None, help="prompt text (or give --ids)")
    parser.add_argument("--ids", default=None, help="prompt token ids, comma-separated, instead of text")
    parser.add_argument("--url", default="127.0.0.1:8000", help="HTTP address of the server")
    parser.add_argument("--grpc-url", default="127.0.0.1:8001", help="gRPC address (used by --stream, --grpc)")
    parser.add_argument("--grpc", action="store_true", help="send the one-response request over gRPC")
    parser.add_argument("--stream", action="store_true", help="print tokens as they come (gRPC streaming)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (server default)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--model", default=None,
                        help=f"model name (default {MODEL_NAME}, or {STREAM_MODEL_NAME} with --stream)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")


def run(args: argparse.Namespace) -> int:
    """The client command: prints the generation; exit 1 with the server's message when it refuses."""
    from tritonclient.utils import InferenceServerException

    if (args.prompt is None) == (args.ids is None):
        print("logquant-trt client: give a prompt or --ids, not both or neither", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"logquant-trt client: --timeout={args.timeout} is invalid: must be > 0 seconds", file=sys.stderr)
        return 2
    try:
        ids = None if args.ids is None else [int(t) for t in args.ids.split(",") if t.strip()]
    except ValueError:
        print(f"logquant-trt client: --ids={args.ids!r} is invalid: must be comma-separated ints", file=sys.stderr)
        return 2
    request = Request(prompt=args.prompt, input_ids=ids, max_tokens=args.max_tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed, ignore_eos=args.ignore_eos or None)
    try:
        if args.stream:
            reason = ""
            for piece in stream(args.grpc_url, request, args.model or STREAM_MODEL_NAME, args.timeout):
                print(piece.text, end="", flush=True)
                reason = piece.finish_reason or reason
            print(f"\n[finish_reason: {reason}]")
        else:
            protocol, url = ("grpc", args.grpc_url) if args.grpc else ("http", args.url)
            result = generate(url, request, protocol, args.model or MODEL_NAME, args.timeout)
            print(result.text)
            print(f"[{len(result.token_ids)} tokens, finish_reason: {result.finish_reason}]")
    except InferenceServerException as error:
        print(f"logquant-trt client: the server refused the request: {error_message(error.message())}",
              file=sys.stderr)
        return 1
    except ConnectionError as error:
        print(f"logquant-trt client: cannot reach the server: {error}", file=sys.stderr)
        return 1
    except TimeoutError as error:  # stream(): no response within --timeout
        print(f"logquant-trt client: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logquant_trt.serve.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
