"""Benchmark: seconds of an `ask` against the seconds of the WRITE steps of the session it asks, on the
embedded default model and the shipped demo corpus (a short real run first, in a temporary data dir).

    python -m sala_report.app.ask_bench [--threads N]

Prints one table: each write step and each question, in seconds, with the machine's load before it ran.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

QUESTIONS = (
    "What happens to a heat pump's outdoor coil in frost?",
    "Which refrigerants are used?",
    "How do running costs compare with a gas boiler?",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    import torch

    from sala_report.app.demo import corpus_folder, questions
    from sala_report.app.runs import LocalServices, RunRequest
    from sala_report.app.settings import load_settings
    from sala_report.app.warp import WarpStore
    from sala_report.app.warp.ask import ask_session

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(overrides={"paths.data_dir": Path(home)}, env={})
        settings.search.web = False
        settings.warp.max_sections = 3
        settings.warp.max_expands = 0
        settings.warp.temperature = 0.0
        services = LocalServices(settings)
        try:
            engine = services.start(RunRequest(questions()[0], web=False, docs=corpus_folder()))
            session_id = engine.run().session_id
            writes = [s.seconds for s in WarpStore(services.store).steps(session_id) if s.kind == "write"]
            asks = [ask_session(services, session_id, q).seconds for q in QUESTIONS]
        finally:
            services.close()
    print(f"model {settings.model.source}, torch threads {torch.get_num_threads()}, load {load:.2f}")
    print(f"{'what':<10} {'count':>5} {'median s':>9} {'max s':>7}")
    for what, values in (("write", writes), ("ask", asks)):
        print(f"{what:<10} {len(values):>5} {statistics.median(values):>9.2f} {max(values):>7.2f}")


if __name__ == "__main__":
    main()
