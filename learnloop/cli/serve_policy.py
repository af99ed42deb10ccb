"""``learnloop serve-policy``: the policy behind an OpenAI-compatible endpoint (extra ``lm``).

Serves ``/v1/chat/completions`` (plain and streaming) and ``/v1/models``; every
call made with an episode id (the ``X-Learnloop-Episode`` header, or the base URL
``http://HOST:PORT/episodes/<id>/v1``) is recorded as a step of that episode in
the store, with its prompt and completion token ids and log-probabilities.
``POST /episodes/<id>/complete`` with ``{"reward": 1.0}`` ends the episode.
Concurrent calls are generated in batches (``--max-batch``, ``--batch-window-ms``):
a group of attempts run at once costs little more than one.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve-policy",
        help="serve a language-model policy at an OpenAI-compatible endpoint, capturing calls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="smollm2",
        help="tiny, smollm2 or a local model folder (default: smollm2)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any)")
    parser.add_argument(
        "--store", default="sqlite:///policy-episodes.db", help="store URL for captured episodes"
    )
    parser.add_argument("--model-name", default=None, help="name /v1/models reports")
    parser.add_argument("--max-tokens", type=int, default=64, help="default completion cap")
    parser.add_argument("--num-threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="most concurrent calls generated together (default: 16; 1: one at a time)",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=20.0,
        help="how long a call after a quiet spell waits for concurrent ones to join its "
        "batch (default: 20; 0 for the lowest latency of a lone caller)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from learnloop.recorder import Recorder
    from learnloop.store import open_store
    from learnloop.train.lm import require_lm
    from learnloop.train.lm.config import LMConfig

    require_lm()
    import torch

    from learnloop.train.lm.endpoint import PolicyServer, PolicyService, check_batching
    from learnloop.train.lm.model import load_language_model

    check_batching(args.max_batch, args.batch_window_ms / 1000)  # before the model loads
    torch.set_num_threads(args.num_threads)
    lm = load_language_model(LMConfig(model=args.model, lora=False))
    store = open_store(args.store)
    recorder = Recorder(store)
    service = PolicyService(
        lm,
        recorder=recorder,
        model_name=args.model_name,
        default_max_tokens=args.max_tokens,
        max_batch=args.max_batch,
        batch_window_s=args.batch_window_ms / 1000,
    )
    server = PolicyServer(service, host=args.host, port=args.port)
    stopping = threading.Event()
    # SIGTERM (a service manager, `kill`) stops as Ctrl-C does: through the finally
    # below, so the calls captured for episodes still open are stored, as aborted.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        server.start()
        sys.stderr.write(
            f"serving {service.model_name} at {server.base_url} "
            f"(per-episode: http://{args.host}:{server.port}/episodes/<id>/v1); "
            "Ctrl-C or SIGTERM stops\n"
        )
        while not stopping.wait(1.0):  # a timed wait keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        kept = recorder.abort_open("policy server stopped")
        recorder.close()
        store.close()
        if kept:
            sys.stderr.write(f"stored {len(kept)} open episodes as aborted\n")
    return 0
